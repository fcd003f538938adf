"""A stored task's fusion inputs, its per-context control features and the fusion configuration of a plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.consumers.fusion._model import FusionConfig
from pertstore.consumers.fusion._train import FusionInputs, inputs_from_store
from pertstore.consumers.fusion._tune import stored_best

from pertstore.errors import InvalidInputError, NotFoundError

#: Keys of a plan's ``fusion:`` mapping that are not :class:`FusionConfig` fields.
PLAN_KEYS = ("variant", "tuned", "control_source", "control_means")


@dataclass
class TaskInputs:
    """Rows of a task (in the chosen contexts) with the fusion inputs of the covered ones.

    ``x`` holds the rows ``kept`` (those with at least one source); ``position[r]`` is row ``r``'s
    index into ``x`` (-1: no source); ``groups`` are the perturbed entities (the validation split key).
    """

    rows: np.ndarray
    x: FusionInputs
    kept: np.ndarray
    position: np.ndarray
    y: np.ndarray
    ctx: np.ndarray
    folds: np.ndarray
    groups: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return self.position >= 0


def task_inputs(
    store,
    task,
    sets: list[str],
    contexts: list[str],
    *,
    tag=None,
    control_source: str | None = None,
    control_means: str | Path | None = None,
) -> TaskInputs:
    """The fusion inputs of ``task`` over ``sets``; with a control source, per-context control features."""
    rows = np.flatnonzero(np.isin(np.asarray(task.contexts), contexts))
    ctx = np.asarray(task.contexts)[rows]
    entities = [task.entity_ids[r] for r in rows]
    x, kept = inputs_from_store(store, sets, entities, list(ctx), tag=tag, drop_empty=True)
    if control_source is not None and control_means is not None:
        raise InvalidInputError("give control_source or control_means, not both")
    if control_source is not None:
        x.context_features = control_features_from_set(store, control_source, task.gene_ids, x.contexts, tag=tag)
    elif control_means is not None:
        x.context_features = control_features_from_table(control_means, task.gene_ids, x.contexts)
    position = np.full(len(rows), -1)
    position[kept] = np.arange(len(kept))
    groups = np.array([e or p for e, p in zip(entities, np.asarray(task.pert_ids)[rows])], dtype=object)
    return TaskInputs(rows, x, kept, position, task.targets[rows], ctx, task.folds[rows], groups)


def control_features_from_set(store, source: str, genes: list[str], contexts: list[str], *, tag=None) -> np.ndarray:
    """``[contexts, genes]``: the L2 norm of each read-out gene's embedding in ``source``'s set of each
    context (a ``control-pca`` set: the spread of the gene over that context's control cells), on
    the genes every context's set covers."""
    blocks, covered = [], np.ones(len(genes), dtype=bool)
    for context in contexts:
        try:
            ds = store.align([source], list(genes), context=context, tag=tag)
        except NotFoundError:
            raise InvalidInputError(f"control source {source!r} has no set for context {context!r}") from None
        blocks.append(np.linalg.norm(np.nan_to_num(ds[source].values.astype(np.float64)), axis=1))
        covered &= ds["covered"].values[:, 0].astype(bool)
    if not covered.any():
        raise InvalidInputError(f"control source {source!r} covers none of the task's read-out genes in every context")
    return np.stack(blocks)[:, covered].astype(np.float32)


def control_features_from_table(path: str | Path, genes: list[str], contexts: list[str]) -> np.ndarray:
    """``[contexts, genes]`` from a CSV/TSV of mean control expression: first column the context,
    one column per gene; the task's read-out genes the table has, in the task's order."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"control means table {path} does not exist")
    table = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".txt") else ",", index_col=0)
    table.index = table.index.astype(str)
    missing = [c for c in contexts if c not in table.index]
    if missing:
        raise InvalidInputError(f"control means table {path} has no row for context(s) {missing}")
    cols = [g for g in genes if g in table.columns]
    if not cols:
        raise InvalidInputError(f"control means table {path} has none of the task's read-out genes as columns")
    values = table.loc[contexts, cols].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"control means table {path} holds NaN or inf")
    return values


def study_name(task: str, sets: list[str], variant: str) -> str:
    """The Optuna study of a (task, sets, variant)."""
    return f"{task}|{variant}|{','.join(sets)}"


def study_storage(store) -> Path:
    """The SQLite file of the store's fusion studies (beside its catalog)."""
    return Path(store.catalog_path).parent / "fusion-studies.db"


def plan_config(store, task_name: str, kind: str, sets: list[str], fusion: dict) -> tuple[FusionConfig, dict]:
    """The :class:`FusionConfig` of a plan's ``fusion:`` mapping and what it came from.

    ``variant`` (simple, full) picks the reference preset for the task's kind; ``tuned: true`` starts
    from the best configuration of the stored study of (task, sets, variant); other keys override.
    """
    options = dict(fusion)
    variant = options.pop("variant", "simple")
    tuned = options.pop("tuned", False)
    for key in ("control_source", "control_means"):
        options.pop(key, None)
    unknown = sorted(set(options) - set(FusionConfig.model_fields))
    if unknown:
        raise InvalidInputError(
            f"unknown fusion setting(s) {unknown}; known: {sorted(FusionConfig.model_fields)} and {list(PLAN_KEYS)}"
        )
    if tuned:
        best, origin = stored_best(study_storage(store), study_name(task_name, sets, variant))
        config = FusionConfig(**{**best.model_dump(), **options, "task": kind})
        return config, {"variant": variant, "tuned": origin}
    return FusionConfig.preset(variant, kind, **options), {"variant": variant}
