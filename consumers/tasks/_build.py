"""Tasks computed from single-cell data: one context per cell line (:func:`build_task`) or per dose."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

from ._bootstrap import INNER, SEED, concat_errors, experimental_error
from ._deg import ALPHA, MIN_CELLS, deg
from ._folds import N_FOLDS, make_folds
from ._groups import LARGE_BATCH_CELLS, Variant, cell_counts, layout
from ._ingest import PerturbationData, read_perturbation_data
from ._lfc import lfc
from ._matrix import BLOCK_ROWS, TARGET_SUM, Progress
from ._obs import DOSE_SEP
from ._task import Kind, Task


def build_task(
    data: PerturbationData,
    *,
    kind: Kind = "lfc",
    variant: Variant = "auto",
    large_batch_cells: int = LARGE_BATCH_CELLS,
    min_cells: int = MIN_CELLS,
    alpha: float = ALPHA,
    trials: int = 100,
    seed: int = 0,
    error_seed: int = SEED,
    inner: int = INNER,
    n_folds: int = N_FOLDS,
    folds_per_context: bool = False,
    block_rows: int = BLOCK_ROWS,
    name: str = "",
    progress: Progress | None = None,
    client: Any = None,
    preset: dict[str, Any] | None = None,
) -> Task:
    """Compute a task from single-cell data: targets, folds and (``trials > 0``) experimental error.

    Parameters
    ----------
    data
        From :func:`read_perturbation_data`.
    kind
        ``lfc`` (:func:`lfc`) or ``deg`` (:func:`deg`; uses ``min_cells`` and ``alpha``).
    variant, large_batch_cells
        See :func:`lfc`.
    trials, inner, error_seed
        Bootstrap trials of the experimental error (0: none; LFC: ``trials //
        inner`` outer draws x ``inner``), its seed (the reference's 5050).
    seed
        The seed of the folds.
    n_folds, folds_per_context
        Folds over perturbations, shared across contexts (the same perturbation
        in the same fold in every context, as the reference) or drawn per context.
    name
        The name to store the task under (see :func:`save_task`).
    progress, client
        ``progress(stage, done, total)`` for stages ``cells`` and ``bootstrap``;
        a ``distributed.Client`` for the streaming pass over the cells.
    preset
        The preset's settings (see :mod:`~pertstore.consumers.tasks._presets`),
        recorded in the recipe and the report.
    """
    if kind == "lfc":
        targets = lfc(
            data,
            variant=variant,
            large_batch_cells=large_batch_cells,
            block_rows=block_rows,
            progress=progress,
            client=client,
        )
    elif kind == "deg":
        targets = deg(
            data,
            variant=variant,
            large_batch_cells=large_batch_cells,
            min_cells=min_cells,
            alpha=alpha,
            block_rows=block_rows,
            progress=progress,
            client=client,
        )
    else:
        raise InvalidInputError(f"kind must be 'lfc' or 'deg', not {kind!r}")
    perts = data.perturbations.iloc[targets.perts]
    contexts = perts["context"].tolist()
    labels = perts["label"].tolist()
    folds = make_folds(contexts, labels=None if folds_per_context else labels, n_folds=n_folds, seed=seed)
    error = (
        experimental_error(
            data,
            targets,
            folds=folds,
            trials=trials,
            inner=inner,
            seed=error_seed,
            block_rows=block_rows,
            progress=progress,
        )
        if trials
        else None
    )
    recipe = {
        "producer": "pertstore.consumers.tasks",
        "producer_version": version("pertstore"),
        "kind": kind,
        "input": {"file": Path(data.path).name, "sha256": data.sha256, "type": data.input},
        "columns": data.columns,
        "params": {
            **targets.params,
            "target_sum": TARGET_SUM if data.input == "counts" else None,
            "trials": trials,
            "inner": inner,
            "error_seed": error_seed,
            "seed": seed,
            "n_folds": n_folds,
            "folds": "per_context" if folds_per_context else "shared",
            "excluded_combinatorial": data.excluded,
        },
        "libraries": {lib: version(lib) for lib in ("numpy", "scipy", "anndata")},
    }
    notes = list(data.notes)
    if "auto" in targets.params:
        guess = targets.params["auto"]
        notes.append(
            f"variant 'auto' chose {targets.variant!r}: median {guess['median_cells_per_pair']:g} cells per "
            f"(perturbation, batch) pair, threshold {guess['threshold']} (a preset fixes the variant)"
        )
    if preset:
        recipe["preset"] = preset
        notes.insert(
            0, f"preset {preset['name']!r}: " + ", ".join(f"{k}={v}" for k, v in preset.items() if k != "name")
        )
    report = {
        "dropped": targets.dropped.to_dict("list"),
        "discarded_pairs": targets.discarded_pairs.astype({"n_cells": int}).to_dict("list"),
        "unresolved": data.unresolved,
        "excluded": data.excluded,
        "notes": notes,
        "ambiguous": {"label": list(data.ambiguous), "candidates": [";".join(v) for v in data.ambiguous.values()]},
    }
    return Task(
        kind=kind,
        pert_ids=labels,
        entity_ids=perts["entity_id"].tolist(),
        contexts=contexts,
        gene_ids=data.genes.index.astype(str).tolist(),
        targets=targets.values,
        folds=folds,
        cell_counts=cell_counts(data, layout(data)),
        recipe=recipe,
        report=report,
        error=error,
        name=name,
    )


def build_per_dose(
    path: str | Path,
    read_options: dict[str, Any],
    *,
    resolve: Any,
    kind: Kind = "lfc",
    name: str = "",
    preset: dict[str, Any] | None = None,
    n_folds: int = N_FOLDS,
    seed: int = 0,
    folds_per_context: bool = False,
    **build_options: Any,
) -> Task:
    """One task whose contexts are (context, dose) pairs: ``A375_dose0.04``, ``A375_dose10``, ...

    Each dose is built on its own (its perturbed cells or samples against all
    controls, :func:`build_task`); the rows are then stacked and the folds drawn
    over the perturbation labels, so a drug falls in the same fold at every
    dose (a model per dose, scored on the same held-out drugs). The recipe
    maps each context to its dose (``recipe["dose_contexts"]``).
    """
    dose_col = read_options.get("dose_col")
    if not dose_col or read_options.get("dose") is not None:
        raise InvalidInputError("dose as context needs a dose column (dose_col) and no single dose")
    probe = read_perturbation_data(path, **read_options)
    doses = sorted({float(label.rsplit(DOSE_SEP, 1)[1]) for label in probe.perturbations["label"]})
    parts = []
    for dose in doses:
        data = read_perturbation_data(path, resolve=resolve, **{**read_options, "dose": dose})
        parts.append(
            (dose, build_task(data, kind=kind, name=name, preset=preset, n_folds=n_folds, seed=seed, **build_options))
        )
    first = parts[0][1]
    if any(t.gene_ids != first.gene_ids for _, t in parts):
        raise InvalidInputError(f"{path}: the doses of {dose_col!r} do not share their genes")
    renamed = [{c: f"{c}_dose{dose:g}" for c in set(t.contexts)} for dose, t in parts]
    contexts = [names[c] for names, (_, t) in zip(renamed, parts) for c in t.contexts]
    pert_ids = [p for _, t in parts for p in t.pert_ids]
    counts = pd.concat(
        [t.cell_counts.assign(context=t.cell_counts["context"].map(names)) for names, (_, t) in zip(renamed, parts)],
        ignore_index=True,
    )
    recipe = dict(first.recipe)
    recipe["columns"] = {**recipe["columns"], "dose": "each dose as a context"}
    recipe["params"] = {**recipe["params"], "folds": "per_context" if folds_per_context else "shared"}
    recipe["dose_contexts"] = {names[c]: dose for names, (dose, t) in zip(renamed, parts) for c in set(t.contexts)}
    report = {
        "dropped": _stack([t.report["dropped"] for _, t in parts]),
        "discarded_pairs": _stack([t.report["discarded_pairs"] for _, t in parts]),
        "unresolved": sorted({u for _, t in parts for u in t.report["unresolved"]}),
        "excluded": first.report["excluded"],
        "notes": [
            f"doses of {dose_col!r} as contexts: {', '.join(f'{d:g}' for d in doses)}",
            *[n for n in first.report["notes"] if not n.startswith("kept perturbed cells at dose")],
        ],
        "ambiguous": first.report["ambiguous"],
    }
    error = concat_errors([t.error for _, t in parts])
    if error is None and any(t.error is not None for _, t in parts):
        report["notes"].append(
            "no experimental error: a DEG error is scored per fold, and the stacked task's "
            "folds are not those of each dose"
        )
    return Task(
        kind=kind,
        pert_ids=pert_ids,
        entity_ids=[e for _, t in parts for e in t.entity_ids],
        contexts=contexts,
        gene_ids=first.gene_ids,
        targets=np.vstack([t.targets for _, t in parts]),
        folds=make_folds(contexts, labels=None if folds_per_context else pert_ids, n_folds=n_folds, seed=seed),
        cell_counts=counts,
        recipe=recipe,
        report=report,
        error=error,
        name=name,
    )


def _stack(frames: list[dict[str, list]]) -> dict[str, list]:
    return pd.concat([pd.DataFrame(f) for f in frames], ignore_index=True).to_dict("list")
