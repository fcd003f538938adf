"""Cross-context splits: hold out whole contexts (cell lines) instead of perturbations.

Two settings, as the reference's ``cell-load`` configuration defines them (``[zeroshot]`` and
``[fewshot]`` of its TOML):

- ``zeroshot``: every row of the held-out context is a test row; training sees only the other
  contexts (one split per held-out context, reported as fold 0).
- ``fewshot``: the held-out context's perturbations of one fold are the test rows; its other
  perturbations join the other contexts in training (one split per held-out context and fold; the
  task's folds over perturbations, shared across contexts, pick the test perturbations).

A perturbation seen in a training context is allowed (cross-context is "seen perturbation, unseen
cell line"); a test row's own context contributes to training only in few-shot, and never its test rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pertstore.errors import InvalidInputError

SETTINGS = ("zeroshot", "fewshot")


@dataclass(frozen=True)
class CrossSplit:
    """One cross-context split over a task's rows (boolean masks aligned with the rows)."""

    context: str
    """The held-out context."""
    fold: int
    train: np.ndarray
    test: np.ndarray


def cross_context_splits(
    contexts: Sequence[str],
    folds: Sequence[int],
    setting: str,
    *,
    held_out: Sequence[str] | None = None,
    only_folds: Sequence[int] | None = None,
) -> Iterator[CrossSplit]:
    """The splits of ``setting`` for each held-out context (default: every context, sorted).

    ``folds`` are the task's perturbation folds (-1 = in no fold, never tested); ``only_folds``
    restricts the few-shot folds. Raises :class:`InvalidInputError` for an unknown setting or
    context, or a task with a single context (nothing to train on).
    """
    if setting not in SETTINGS:
        raise InvalidInputError(f"cross-context setting must be one of {', '.join(SETTINGS)}, not {setting!r}")
    ctx = np.asarray(contexts, dtype=str)
    fold = np.asarray(folds)
    names = sorted(set(ctx.tolist()))
    if len(names) < 2:
        raise InvalidInputError(f"a cross-context split needs at least two contexts; the task has {names}")
    targets = list(held_out) if held_out else names
    unknown = sorted(set(targets) - set(names))
    if unknown:
        raise InvalidInputError(f"unknown context(s) {unknown}; the task has {names}")
    for context in targets:
        inside = ctx == context
        if setting == "zeroshot":
            yield CrossSplit(context, 0, ~inside, inside.copy())
            continue
        wanted = sorted(set(fold[inside].tolist()) - {-1}) if only_folds is None else list(only_folds)
        for f in wanted:
            test = inside & (fold == f)
            if test.any():
                yield CrossSplit(context, int(f), ~inside | (inside & (fold != f) & (fold != -1)), test)
