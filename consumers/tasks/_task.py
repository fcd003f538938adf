"""The :class:`Task` container: export to AnnData, Zarr v3 round trip (made by `_build` and `_import`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import zarr
from pertstore.store import TASK_ENCODING_TYPE

from pertstore.errors import InvalidInputError

from ._bootstrap import ExperimentalError

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
