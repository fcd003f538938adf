"""The :class:`Task` container: build, import, export to AnnData, Zarr v3 round trip."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from pertstore.store import TASK_ENCODING_TYPE, file_digest

from pertstore.errors import InvalidInputError

from ._bootstrap import INNER, SEED, ExperimentalError, concat_errors, experimental_error
from ._deg import ALPHA, MIN_CELLS, deg
from ._folds import N_FOLDS, make_folds
from ._groups import LARGE_BATCH_CELLS, Variant, cell_counts, layout
from ._ingest import DOSE_SEP, PerturbationData, Resolver, read_perturbation_data, resolve_labels
from ._lfc import lfc
from ._matrix import BLOCK_ROWS, TARGET_SUM, Progress

ENCODING_TYPE = TASK_ENCODING_TYPE
ENCODING_VERSION = "0.2.0"
"""0.2.0: the experimental error as the reference computes it (per metric, per fold); 0.1.0 tasks are refused."""
Kind = Literal["lfc", "deg"]


@dataclass
class Task:
    """Learning targets of a perturbation dataset, one row per (context, perturbation).

    Attributes
    ----------
    kind
        ``lfc`` (float64 targets) or ``deg`` (int8 labels in {-1, 0, +1}).
    pert_ids, entity_ids, contexts
        Per row: the perturbation label, its canonical entity id (None when
        unresolved or not resolved) and its context.
    gene_ids
        Columns of ``targets``.
    folds
        Fold of each row (-1: in no fold).
    cell_counts
        Long table ``context, pert_id, batch, n_cells`` (controls as ``<control>``).
    recipe
        What made the task: producer, input file and its sha256, parameters.
    report
        Perturbations dropped and why, (perturbation, batch) pairs discarded,
        unresolved and excluded labels, notes.
    error
        The bootstrap experimental error, or None; its limit per (context,
        fold, metric) is ``error.fold_limits(folds, contexts)``.
    name
        The name it is stored under (``tasks/<name>/<version>``), "" when unnamed.
    """

    kind: Kind
    pert_ids: list[str]
    entity_ids: list[str | None]
    contexts: list[str]
    gene_ids: list[str]
    targets: np.ndarray
    folds: np.ndarray
    cell_counts: pd.DataFrame
    recipe: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    error: ExperimentalError | None = None
    name: str = ""

    @property
    def n_cells(self) -> np.ndarray:
        """Cells per row (0 when unknown, e.g. imported tasks)."""
        cc = self.cell_counts.groupby(["context", "pert_id"])["n_cells"].sum()
        idx = pd.MultiIndex.from_arrays([self.contexts, self.pert_ids])
        return cc.reindex(idx).fillna(0).to_numpy(np.int64)

    def to_anndata(self) -> ad.AnnData:
        """The task as AnnData.

        Returns
        -------
        ``X`` = targets; ``obs`` (index ``pert_id``, or ``context:pert_id`` when
        labels repeat across contexts) with ``pert_id, entity_id, context,
        fold, n_cells`` (and, LFC, ``error_<metric>``: the 0.9 quantile per
        perturbation); ``var`` = genes; ``uns['recipe']``, ``uns['report']``,
        ``uns['cell_counts']``, ``uns['error']`` (settings and the limit per
        fold: ``context, fold, metric, value``); LFC ``obsm['error_trials_<metric>']``
        = per-trial values.
        """
        names = pd.Index(self.pert_ids)
        if not names.is_unique:
            names = pd.Index([f"{c}:{p}" for c, p in zip(self.contexts, self.pert_ids, strict=True)])
        obs = pd.DataFrame(
            {
                "pert_id": self.pert_ids,
                "entity_id": [e or "" for e in self.entity_ids],
                "context": pd.Categorical(self.contexts),
                "fold": self.folds.astype(np.int64),
                "n_cells": self.n_cells,
            },
            index=names,
        )
        uns: dict[str, Any] = {
            "recipe": _no_none(self.recipe),
            "report": _no_none(self.report),
            "cell_counts": self.cell_counts.astype({"n_cells": np.int64}),
        }
        obsm = {}
        if self.error is not None:
            e = self.error
            if e.kind == "lfc":
                for m, name in enumerate(e.metrics):
                    obs[f"error_{name}"] = e.per_pert[:, m]
                    obsm[f"error_trials_{name}"] = e.trials[:, :, m]
            limits = e.fold_limits(self.folds, self.contexts)
            uns["error"] = _no_none({**_error_attrs(e), "limits": {c: limits[c].tolist() for c in limits.columns}})
        return ad.AnnData(X=self.targets, obs=obs, var=pd.DataFrame(index=pd.Index(self.gene_ids)), uns=uns, obsm=obsm)

    def write_zarr(self, store: Any) -> zarr.Group:
        """Write the task as a Zarr v3 group (``encoding-type: pertstore-task``, version 0.1.0).

        Layout: arrays ``targets [pert, gene]``, ``pert_id``, ``entity_id``
        ("" = none), ``context``, ``fold``, ``gene_id``; group ``cell_counts``
        (``context, pert_id, batch, n_cells``); group ``error`` when
        estimated: LFC ``trials [pert, trial, metric]`` and ``per_pert [pert,
        metric]``; DEG ``folds [pert]`` and a group ``fold_trials`` (``context,
        fold, metric, trial, value``). Group attrs hold ``kind``, ``recipe``, ``report`` and the
        error summary.
        """
        g = zarr.open_group(store, mode="w", zarr_format=3)
        g.attrs.update(
            {
                "encoding-type": ENCODING_TYPE,
                "encoding-version": ENCODING_VERSION,
                "kind": self.kind,
                "name": self.name,
                "recipe": self.recipe,
                "report": self.report,
            }
        )
        row_chunk = max(1, min(len(self.pert_ids), (2 << 20) // max(1, self.targets.shape[1] * 8)))
        g.create_array(
            "targets",
            data=np.ascontiguousarray(self.targets),
            chunks=(row_chunk, max(1, self.targets.shape[1])),
            dimension_names=("pert", "gene"),
        )
        _strings(g, "pert_id", self.pert_ids)
        _strings(g, "entity_id", [e or "" for e in self.entity_ids])
        _strings(g, "context", self.contexts)
        _strings(g, "gene_id", self.gene_ids)
        g.create_array("fold", data=self.folds.astype(np.int8), dimension_names=("pert",))
        cc = g.create_group("cell_counts")
        for col in ("context", "pert_id", "batch"):
            _strings(cc, col, self.cell_counts[col].astype(str).tolist())
        cc.create_array("n_cells", data=self.cell_counts["n_cells"].to_numpy(np.int64))
        if self.error is not None:
            e = g.create_group("error")
            e.attrs.update(_error_attrs(self.error))
            if self.error.kind == "lfc":
                e.create_array("trials", data=self.error.trials, dimension_names=("pert", "trial", "metric"))
                e.create_array("per_pert", data=self.error.per_pert, dimension_names=("pert", "metric"))
            else:
                e.create_array("folds", data=np.asarray(self.error.folds, dtype=np.int8), dimension_names=("pert",))
                ft, frame = e.create_group("fold_trials"), self.error.fold_trials
                for col in ("context", "metric"):
                    _strings(ft, col, frame[col].astype(str).tolist())
                ft.create_array("fold", data=frame["fold"].to_numpy(np.int64))
                ft.create_array("trial", data=frame["trial"].to_numpy(np.int64))
                ft.create_array("value", data=frame["value"].to_numpy(np.float64))
        return g

    @classmethod
    def read_zarr(cls, store: Any) -> Task:
        """Read a task written by :meth:`write_zarr`; refuses other encodings or versions."""
        g = zarr.open_group(store, mode="r")
        etype, ever = g.attrs.get("encoding-type"), g.attrs.get("encoding-version")
        if etype == ENCODING_TYPE and ever == "0.1.0":
            raise InvalidInputError(
                f"{store}: a task of encoding version 0.1.0, whose experimental error is not the "
                f"reference's (one quantile per context); rebuild it (pertstore tasks build) or "
                f"import it again to get version {ENCODING_VERSION}"
            )
        if etype != ENCODING_TYPE or ever != ENCODING_VERSION:
            raise InvalidInputError(
                f"{store}: not a pertstore task of version {ENCODING_VERSION} "
                f"(encoding-type {etype!r}, encoding-version {ever!r})"
            )
        cc = g["cell_counts"]
        counts = pd.DataFrame({c: _read_strings(cc[c]) for c in ("context", "pert_id", "batch")})
        counts["n_cells"] = cc["n_cells"][...]
        error = None
        if "error" in g:
            e = g["error"]
            attrs = dict(e.attrs)
            common = {
                "kind": attrs["kind"],
                "quantile": attrs["quantile"],
                "metrics": list(attrs["metrics"]),
                "params": dict(attrs["params"]),
            }
            if attrs["kind"] == "lfc":
                error = ExperimentalError(**common, trials=e["trials"][...], per_pert=e["per_pert"][...])
            else:
                ft = e["fold_trials"]
                frame = pd.DataFrame(
                    {
                        "context": _read_strings(ft["context"]),
                        "fold": ft["fold"][...],
                        "metric": _read_strings(ft["metric"]),
                        "trial": ft["trial"][...],
                        "value": ft["value"][...],
                    }
                )
                error = ExperimentalError(**common, fold_trials=frame, folds=e["folds"][...].astype(np.int8))
        return cls(
            kind=g.attrs["kind"],
            pert_ids=_read_strings(g["pert_id"]),
            entity_ids=[e or None for e in _read_strings(g["entity_id"])],
            contexts=_read_strings(g["context"]),
            gene_ids=_read_strings(g["gene_id"]),
            targets=g["targets"][...],
            folds=g["fold"][...],
            cell_counts=counts,
            recipe=dict(g.attrs["recipe"]),
            report=dict(g.attrs["report"]),
            error=error,
            name=str(g.attrs.get("name", "")),
        )


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


def _strings(g: zarr.Group, name: str, values: list[str]) -> None:
    g.create_array(name, shape=(len(values),), dtype=str, chunks=(max(1, len(values)),))
    if values:
        g[name][:] = np.asarray(values, dtype=str)


def _read_strings(a: zarr.Array) -> list[str]:
    return [str(v) for v in a[...]] if a.shape[0] else []


def _error_attrs(e: ExperimentalError) -> dict[str, Any]:
    return {"kind": e.kind, "quantile": e.quantile, "metrics": list(e.metrics), "params": e.params}


def _no_none(x: Any) -> Any:
    """AnnData cannot write None: drop such entries (recursively)."""
    if isinstance(x, dict):
        return {str(k): _no_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list | tuple):
        return [_no_none(v) for v in x if v is not None]
    return x
