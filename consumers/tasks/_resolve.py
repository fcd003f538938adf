"""Perturbation labels to canonical entity ids: the resolver protocol and combinations resolved part by part."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import pandas as pd

from ._obs import DOSE_SEP


class Resolution(Protocol):
    """What a resolver returns (``Store.resolve`` fits)."""

    ids: list[str | None]
    unresolved: list[str]
    ambiguous: dict[str, list[str]]


Resolver = Callable[[list[str]], Resolution]


def _resolve(
    perts: pd.DataFrame, resolve: Resolver | None, sep: str, fallbacks: dict[str, list[str]] | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    mapping, unresolved, ambiguous = resolve_labels(perts["label"].unique(), resolve, sep, fallbacks)
    perts["entity_id"] = perts["label"].map(mapping) if resolve is not None else None
    return unresolved, ambiguous


def resolve_labels(
    labels: Sequence[str],
    resolve: Resolver | None,
    sep: str = "+",
    fallbacks: dict[str, list[str]] | None = None,
) -> tuple[dict[str, str | None], list[str], dict[str, list[str]]]:
    """Canonical entity ids of perturbation labels, combinations resolved part by part.

    A label's dose suffix (``drug@5``) is not resolved. ``fallbacks`` gives, per
    label, other ids of the same perturbation (e.g. a Broad id, a SMILES) tried in
    order when the label itself does not resolve.

    Returns
    -------
    ``(mapping, unresolved, ambiguous)``: ``label -> entity id`` (parts joined by
    ``sep``; None when a part does not resolve), the sorted unresolved labels and
    ``alias -> candidate ids`` of the parts that resolved ambiguously. Without a
    resolver every label maps to None and nothing is reported.
    """
    labels = sorted(set(map(str, labels)))
    if resolve is None:
        return dict.fromkeys(labels), [], {}
    fallbacks = fallbacks or {}
    parts = {p for lab in labels for p in lab.split(DOSE_SEP)[0].split(sep)}
    parts |= {a for lab in labels for a in fallbacks.get(lab, [])}
    parts = sorted(parts)
    res = resolve(parts)
    ids = dict(zip(parts, res.ids, strict=True))
    mapping: dict[str, str | None] = {}
    for lab in labels:
        got = [ids[p] for p in lab.split(DOSE_SEP)[0].split(sep)]
        mapping[lab] = None if any(g is None for g in got) else sep.join(got)
        if mapping[lab] is None:
            mapping[lab] = next((ids[a] for a in fallbacks.get(lab, []) if ids[a] is not None), None)
    unresolved = sorted(lab for lab, v in mapping.items() if v is None)
    ambiguous = {k: list(v) for k, v in res.ambiguous.items()}
    return mapping, unresolved, ambiguous
