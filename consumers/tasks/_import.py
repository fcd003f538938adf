"""Tasks from precomputed targets: the paper's published files (:func:`import_task`) and DEG tables."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pertstore.store import file_digest

from pertstore.errors import InvalidInputError

from ._folds import N_FOLDS, make_folds
from ._resolve import Resolver, resolve_labels
from ._task import Kind, Task

PERT_ID_COLS = ("pert_id", "gene_id")
CONTEXT_COLS = ("cell_line", "context")
_FOLD_COL = re.compile(r"^fold_(\d+)$")


def import_task(
    path: str | Path,
    *,
    kind: Kind | None = None,
    context: str = "",
    n_folds: int = N_FOLDS,
    seed: int = 0,
    name: str = "",
    resolve: Resolver | None = None,
    combo_sep: str = "+",
    entity: str = "gene",
) -> Task:
    """Read a precomputed task (the paper's published layout, or a parquet/csv matrix).

    Parameters
    ----------
    path
        ``.h5ad`` with ``X`` = targets and ``obs`` holding ``pert_id`` or
        ``gene_id`` (else ``obs_names``), ``cell_line`` (else ``context``) and
        folds as ``test_split`` (fold numbers) or ``fold_0 .. fold_k`` (a row is
        in fold k where ``fold_k`` is True or ``"test"``); or ``.parquet`` /
        ``.csv`` with one row per perturbation, the same optional metadata
        columns and one numeric column per gene (csv: first column = index
        when no ``pert_id``/``gene_id`` column).
    kind
        ``lfc`` or ``deg``; default ``deg`` when every value is -1, 0 or 1.
    context
        Context of every row when the file has no context column.
    n_folds, seed
        Folds made (and noted) when the file has none.
    name
        The name to store the task under.
    resolve, combo_sep, entity
        ``labels -> Resolution`` (e.g. ``lambda ids: store.resolve(ids, kind="gene")``)
        giving each perturbation its canonical entity id, exactly as built tasks
        do (combinations joined by ``combo_sep`` resolved part by part);
        ``entity`` (the kind resolved) is recorded in the recipe. Unresolved
        and ambiguous labels are listed in the report. Without a resolver no
        embedding set can cover the task's perturbations.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        a = ad.read_h5ad(path)
        obs, values, genes = a.obs, a.X, a.var_names.astype(str).tolist()
        values = values.toarray() if sp.issparse(values) else np.asarray(values)
        obs_names = a.obs_names.astype(str)
    elif suffix in (".parquet", ".csv"):
        df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        meta = [
            c
            for c in df.columns
            if c in (*PERT_ID_COLS, *CONTEXT_COLS, "fold", "test_split") or _FOLD_COL.match(str(c))
        ]
        if suffix == ".csv" and not any(c in df.columns for c in PERT_ID_COLS) and df[df.columns[0]].dtype == object:
            df = df.set_index(df.columns[0])
        obs = df[meta]
        gene_df = df.drop(columns=meta)
        bad = [c for c in gene_df.columns if not pd.api.types.is_numeric_dtype(gene_df[c])]
        if bad:
            raise InvalidInputError(f"{path}: non-numeric column(s) {bad[:5]} (expected one column per gene)")
        values, genes = gene_df.to_numpy(np.float64), [str(c) for c in gene_df.columns]
        obs_names = obs.index.astype(str)
    else:
        raise InvalidInputError(f"{path}: unsupported task file (use .h5ad, .parquet or .csv)")
    notes: list[str] = []
    pert_col = next((c for c in PERT_ID_COLS if c in obs.columns), None)
    pert_ids = obs[pert_col].astype(str).tolist() if pert_col else list(obs_names)
    ctx_col = next((c for c in CONTEXT_COLS if c in obs.columns), None)
    contexts = obs[ctx_col].astype(str).tolist() if ctx_col else [context] * len(pert_ids)
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        r, c = np.argwhere(np.isnan(values))[0]
        raise InvalidInputError(f"{path}: target is NaN for perturbation {pert_ids[r]!r}, gene {genes[c]!r}")
    is_labels = bool(np.isin(values, (-1, 0, 1)).all())
    kind = kind or ("deg" if is_labels else "lfc")
    if kind == "deg":
        if not is_labels:
            raise InvalidInputError(f"{path}: kind 'deg' needs values in {{-1, 0, 1}}")
        values = values.astype(np.int8)
    folds = _folds(obs, path, notes)
    params: dict[str, Any] = {}
    if folds is None:
        folds = make_folds(contexts, labels=pert_ids, n_folds=n_folds, seed=seed)
        params = {"n_folds": n_folds, "seed": seed, "folds": "shared"}
        notes.append(f"no folds in the file: {n_folds} folds made with seed {seed}, shared across contexts")
    mapping, unresolved, ambiguous = resolve_labels(pert_ids, resolve, combo_sep)
    if resolve is None:
        notes.append("perturbations not resolved to entities (no resolver given): no embedding set can cover them")
    else:
        params.update({"entity": entity, "combo_sep": combo_sep})
        if unresolved:
            notes.append(f"{len(unresolved)} perturbation label(s) did not resolve to an entity: {unresolved[:10]}")
        if ambiguous:
            notes.append(f"{len(ambiguous)} perturbation label(s) resolved ambiguously: {sorted(ambiguous)[:10]}")
    recipe = {
        "producer": "pertstore.consumers.tasks.import",
        "producer_version": version("pertstore"),
        "kind": kind,
        "input": {"file": path.name, "sha256": file_digest(path)},
        "params": params if ctx_col else {**params, "context": context},
    }
    counts, report = NO_CELLS.copy(), _resolution_report(unresolved, ambiguous, notes)
    return Task(
        kind=kind,
        pert_ids=pert_ids,
        entity_ids=[mapping[p] for p in pert_ids],
        contexts=contexts,
        gene_ids=genes,
        targets=values,
        folds=folds,
        cell_counts=counts,
        recipe=recipe,
        report=report,
        name=name,
    )


def deg_table_task(
    path: str | Path,
    *,
    resolve: Resolver | None = None,
    pert_col: str = "perturbagen",
    gene_col: str = "entrez_gene_id",
    direction_col: str = "direction",
    status_col: str | None = "status",
    status: str | None = "measured",
    min_genes: int = 5,
    min_perts: int = 1,
    context: str = "",
    entity: str = "gene",
    n_folds: int = N_FOLDS,
    seed: int = 0,
    name: str = "",
) -> Task:
    """A DEG task from a long table of significant genes: one row per (perturbation, gene, direction).

    The gene universe is stated by rule: the genes listed (with ``status`` in
    ``status_col``, e.g. measured L1000 landmarks) for at least ``min_perts`` of
    the perturbations kept, which are those with at least ``min_genes`` such
    genes. A listed gene is +1 (``up``) or -1 (``down``), every other gene of the
    universe 0 (not significant). Perturbations are resolved through
    ``resolve``; unresolved ones are listed, not dropped. Folds are drawn over
    the perturbations (seeded); a table has no replicates, so no experimental
    error.
    """
    path = Path(path)
    name_lower = path.name.lower()
    if name_lower.endswith(".parquet"):
        table = pd.read_parquet(path)
    elif name_lower.endswith((".csv", ".csv.gz")):
        table = pd.read_csv(path, dtype=str)
    elif name_lower.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        table = pd.read_csv(path, sep="\t", dtype=str)
    else:
        raise InvalidInputError(f"{path}: a table of significant genes must be .tsv(.gz), .csv(.gz) or .parquet")
    needed = [pert_col, gene_col, direction_col] + ([status_col] if status is not None and status_col else [])
    if missing := [c for c in needed if c not in table.columns]:
        raise InvalidInputError(f"{path}: no column(s) {missing}; columns are {list(table.columns)}")
    table = table.astype({c: str for c in needed})
    notes = []
    if status is not None and status_col:
        kept = table[status_col] == status
        notes.append(f"rows with {status_col} == {status!r}: {int(kept.sum()):,} of {len(table):,}")
        table = table[kept]
    direction = table[direction_col].str.lower().map({"up": 1, "down": -1, "1": 1, "-1": -1, "+1": 1})
    if direction.isna().any():
        row = table.index[direction.isna().to_numpy()][0]
        raise InvalidInputError(f"{path}: row {row}: direction {table.loc[row, direction_col]!r} is not up or down")
    table = table.assign(label=direction.astype(np.int8))
    if table.duplicated([pert_col, gene_col]).any():
        row = table.index[table.duplicated([pert_col, gene_col]).to_numpy()][0]
        raise InvalidInputError(
            f"{path}: row {row}: gene {table.loc[row, gene_col]!r} is listed twice for "
            f"perturbation {table.loc[row, pert_col]!r}"
        )
    per_pert = table.groupby(pert_col).size()
    perts = sorted(per_pert.index[per_pert >= min_genes])
    table = table[table[pert_col].isin(perts)]
    per_gene = table.groupby(gene_col)[pert_col].nunique()
    genes = sorted(per_gene.index[per_gene >= min_perts], key=_natural)
    table = table[table[gene_col].isin(genes)]
    notes.append(
        f"{len(perts):,} of {len(per_pert):,} perturbations have >= {min_genes} listed gene(s); gene "
        f"universe: the {len(genes):,} genes listed for >= {min_perts} of them; unlisted genes are 0"
    )
    if not perts or not genes:
        raise InvalidInputError(f"{path}: no perturbation has >= {min_genes} listed genes")
    perts = sorted(perts, key=_natural)
    targets = np.zeros((len(perts), len(genes)), dtype=np.int8)
    targets[pd.Index(perts).get_indexer(table[pert_col]), pd.Index(genes).get_indexer(table[gene_col])] = table["label"]
    mapping, unresolved, ambiguous = resolve_labels(perts, resolve)
    if unresolved:
        notes.append(f"{len(unresolved)} perturbation(s) did not resolve to an entity: {unresolved[:10]}")
    notes.append("no experimental error: the table has no replicates")
    contexts = [context] * len(perts)
    recipe = {
        "producer": "pertstore.consumers.tasks.table",
        "producer_version": version("pertstore"),
        "kind": "deg",
        "input": {"file": path.name, "sha256": file_digest(path)},
        "params": {
            "pert_col": pert_col,
            "gene_col": gene_col,
            "direction_col": direction_col,
            "status_col": status_col,
            "status": status,
            "min_genes": min_genes,
            "min_perts": min_perts,
            "context": context,
            "entity": entity,
            "n_folds": n_folds,
            "seed": seed,
            "folds": "shared",
        },
    }
    counts, report = NO_CELLS.copy(), _resolution_report(unresolved, ambiguous, notes)
    return Task(
        kind="deg",
        pert_ids=list(perts),
        entity_ids=[mapping[p] for p in perts],
        contexts=contexts,
        gene_ids=list(genes),
        targets=targets,
        folds=make_folds(contexts, labels=perts, n_folds=n_folds, seed=seed),
        cell_counts=counts,
        recipe=recipe,
        report=report,
        name=name,
    )


NO_CELLS = pd.DataFrame(
    {
        "context": pd.Series(dtype=str),
        "pert_id": pd.Series(dtype=str),
        "batch": pd.Series(dtype=str),
        "n_cells": pd.Series(dtype=np.int64),
    }
)
"""The cell counts of a task built from precomputed targets: none."""


def _resolution_report(unresolved: list[str], ambiguous: dict[str, list[str]], notes: list[str]) -> dict:
    """The report of a task whose perturbations were resolved but no cells read."""
    return {
        "unresolved": unresolved,
        "notes": notes,
        "ambiguous": {"label": list(ambiguous), "candidates": [";".join(v) for v in ambiguous.values()]},
    }


def _natural(value: str) -> tuple:
    """Numbers in numeric order (Entrez ids), then other names."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _folds(obs: pd.DataFrame, path: Path, notes: list[str]) -> np.ndarray | None:
    if "fold" in obs.columns or "test_split" in obs.columns:
        col = "fold" if "fold" in obs.columns else "test_split"
        v = pd.to_numeric(obs[col], errors="coerce")
        if v.isna().any() or (v != np.round(v)).any():
            raise InvalidInputError(f"{path}: column {col!r} must hold fold numbers, e.g. not {obs[col].iloc[0]!r}")
        return v.to_numpy(np.int8)
    cols = sorted((int(m.group(1)), c) for c in obs.columns if (m := _FOLD_COL.match(str(c))))
    if not cols:
        return None
    test = np.stack([_is_test(obs[c]) for _, c in cols], axis=1)
    several = np.flatnonzero(test.sum(axis=1) > 1)
    if several.size:
        raise InvalidInputError(f"{path}: row {obs.index[several[0]]!r} is a test row in several fold_k columns")
    folds = np.where(test.any(axis=1), np.array([k for k, _ in cols])[test.argmax(axis=1)], -1).astype(np.int8)
    if (folds < 0).any():
        notes.append(f"{int((folds < 0).sum())} row(s) are test rows in no fold (fold -1)")
    return folds


def _is_test(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    return col.astype(str).str.lower().isin(("test", "true", "1")).to_numpy()
