"""Read a single-cell perturbation dataset (h5ad or AnnData-zarr) into :class:`PerturbationData`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset
from pertstore.store import file_digest

from pertstore.errors import InvalidInputError

from ._matrix import CellMatrix, head_values, value_range
from ._obs import _barcode_batches, _cells, _check_controls, _fallback_ids, _gene_universe, _pick_columns, _select
from ._resolve import Resolver, _resolve

log = logging.getLogger(__name__)

SAMPLE_ROWS = 20_000
"""Rows inspected to tell raw counts from log-normalised values."""


@dataclass
class PerturbationData:
    """A perturbation dataset ready for task computation.

    Attributes
    ----------
    matrix
        Row access to the expression values (normalised block by block).
    cells
        One row per cell kept: ``row`` (position in the file), ``label``,
        ``is_control``, ``batch`` and ``context`` (categoricals).
    genes
        The file's ``var`` (index = gene ids).
    perturbations
        One row per (context, label): ``context``, ``label``, ``entity_id``,
        ``combinatorial``, ``n_cells``.
    notes
        Human-readable decisions (detected input type, defaults used, labels
        excluded or unresolved).
    """

    path: str
    matrix: CellMatrix
    cells: pd.DataFrame
    genes: pd.DataFrame
    perturbations: pd.DataFrame
    columns: dict[str, Any]
    input: Literal["counts", "log1p", "log", "differential"]
    unresolved: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def contexts(self) -> list[str]:
        return list(self.cells["context"].cat.categories)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the input file, or of an in-memory AnnData's matrix and names (computed on first use)."""
        if self.path:
            return file_digest(self.path)
        h = hashlib.sha256()
        m = sp.csr_matrix(self.matrix.elem)
        for part in (m.data, m.indices, m.indptr, self.matrix.obs_names.astype(str), self.matrix.var_names.astype(str)):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()


def read_perturbation_data(
    path: str | Path | ad.AnnData,
    *,
    pert_col: str | None = None,
    control_col: str | None = None,
    control_label: str | None = None,
    batch_col: str | None = None,
    context_col: str | None = None,
    context: str = "",
    layer: str | None = None,
    input: Literal["auto", "counts", "log1p", "log", "differential"] = "auto",
    combinatorial: bool = False,
    combo_sep: str = "+",
    perturbations: Sequence[str] | None = None,
    resolve: Resolver | None = None,
    backed: bool = False,
    dose_col: str | None = None,
    dose: float | None = None,
    obs_filter: dict[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
    exclude_contexts: Sequence[str] = (),
    batch_from_barcode: bool = False,
    genes: Literal["all", "coding"] | Sequence[str] = "all",
    normalise_kept: bool = False,
    alias_cols: Sequence[str] = (),
) -> PerturbationData:
    """Read cells, their perturbation, control status, batch and context.

    Parameters
    ----------
    path
        An ``.h5ad`` file or an AnnData-zarr directory, or an AnnData object
        (opened with ``backed='r'``, its ``X`` is read in row blocks).
    pert_col
        obs column with perturbation labels; default: the first of
        ``perturbation, target, gene, condition, pert_id, gene_id`` present.
    control_col, control_label
        A boolean obs column marking control cells, or the label of control
        cells in ``pert_col``. Default: a boolean ``is_control``/``control``
        column, else the one label among ``control, non-targeting, ctrl, NT,
        DMSO, vehicle`` present.
    batch_col
        obs column with batches; default ``batch, gem_group, plate, replicate``;
        without one every cell of a context is one batch (noted).
    context_col
        obs column with the context (cell line); default ``cell_line, cell_type,
        context``; without one all cells belong to the context ``context``.
    layer
        Read ``layers[layer]`` instead of ``X``.
    input
        ``counts`` (non-negative integers, normalised to 1e4 and log1p),
        ``log1p`` or ``log`` (already on a log scale, e.g. log1p of normalised
        counts or log2 bulk expression: used as is), ``differential`` (values
        that are already differences, e.g. per-well L1000 z-scores: replicates
        averaged, no control subtracted, negative values allowed) or ``auto``
        (decided from the first 20,000 cells and ``uns['log1p']``). A sample
        (well) of a bulk file stands for a cell: batches are plates.
    combinatorial
        Keep labels joined by ``combo_sep`` (``A+B``) as their own
        perturbations; by default they are excluded and listed in ``excluded``.
    perturbations
        Keep only these labels (controls are always kept); a label without
        cells raises.
    resolve
        ``labels -> Resolution`` (e.g. ``lambda ids: store.resolve(ids, kind="gene")``);
        parts of combinatorial labels are resolved one by one and joined with
        ``combo_sep``. Unresolved labels are reported, not fatal.
    backed
        Leave ``X`` on disk and read it in row blocks.
    dose_col, dose
        obs column with each cell's dose (numbers, or the reference's
        ``"[('drug', 5.0, 'uM')]"`` strings). With ``dose``, only perturbed
        cells at that dose are kept (controls at any dose); without, each
        label carries its dose (``drug@5``), resolved without it.
    obs_filter
        Keep only cells whose obs column holds one of the values, e.g.
        ``{"pass_filter": ["full"]}`` (Tahoe's QC) or ``{"dataset": ["norman19"]}``.
    exclude, exclude_contexts
        Perturbation labels and contexts left out (listed in the notes).
    alias_cols
        obs columns with other ids of each perturbation (e.g. ``pert_id`` Broad
        ids, ``smiles``), tried in order when the label does not resolve.
    batch_from_barcode
        Take the batch from the 10x gem-group suffix of the cell barcode
        (``ACGT...-3`` -> ``3``), for files without a gem-group column.
    genes, normalise_kept
        The gene universe: ``all`` the file's genes, ``coding`` (protein-coding
        genes of the bundled human gene table, matched by symbol or Ensembl id)
        or a list of gene names; counts are normalised over every gene of the
        file first, or over the kept genes (``normalise_kept``).

    Returns
    -------
    The dataset; ``notes`` records every default that was applied.
    """
    notes: list[str] = []
    x_path = f"layers/{layer}" if layer else "X"
    if isinstance(path, ad.AnnData):
        path, obs, var, uns_log1p, elem = _from_anndata(path, layer)
    else:
        path, obs, var, uns_log1p, elem = _from_file(str(path), x_path, backed)

    obs_names = np.asarray(obs.index.astype(str))
    var_names = np.asarray(var.index.astype(str))
    if batch_from_barcode:
        if batch_col is not None:
            raise InvalidInputError("pass batch_col or batch_from_barcode, not both")
        obs = obs.assign(_barcode_batch=_barcode_batches(obs.index))
        batch_col = "_barcode_batch"
        notes.append("batch: the gem-group suffix of each cell barcode")
    cols = _pick_columns(obs, pert_col, control_col, control_label, batch_col, context_col, notes)
    if cols["context_col"] is None:
        cols["context"] = context  # the name given to the one context: part of the recipe
    cells = _cells(obs, cols, context)
    cells = _select(
        cells,
        obs,
        cols,
        dose_col=dose_col,
        dose=dose,
        obs_filter=obs_filter or {},
        exclude=exclude,
        exclude_contexts=exclude_contexts,
        notes=notes,
    )
    if batch_from_barcode and (cells["batch"] == "").any():
        raise InvalidInputError(
            f"{path}: cell {str(cells.index[(cells['batch'] == '').to_numpy()][0])!r} has no "
            "gem-group suffix (expected a barcode like ACGT...-3); pass batch_col instead"
        )
    kind = _detect_input(elem, input, uns_log1p, notes)
    kept_genes = _gene_universe(var_names, genes, notes)
    if kept_genes is not None:
        var = var.iloc[kept_genes]
        cols["genes"] = (
            genes
            if isinstance(genes, str)
            else {"n": len(genes), "sha256": hashlib.sha256("\n".join(sorted(map(str, genes))).encode()).hexdigest()}
        )
        cols["normalise_kept"] = bool(normalise_kept)
        if kind == "counts":
            notes.append(
                "counts normalised over the kept genes"
                if normalise_kept
                else "counts normalised over every gene of the file, then the kept genes taken"
            )
    matrix = CellMatrix(
        elem,
        is_counts=kind == "counts",
        obs_names=obs_names,
        var_names=var_names,
        source=(path, x_path) if path else None,
        genes=kept_genes,
        normalise_kept=normalise_kept,
        allow_negative=kind == "differential",
    )

    codes, labels = pd.factorize(cells["label"])  # each distinct label tested once
    is_combo = pd.Series(labels).str.contains(combo_sep, regex=False).to_numpy()[codes] & ~cells["is_control"]
    excluded: list[str] = []
    if is_combo.any() and not combinatorial:
        excluded = sorted(cells.loc[is_combo, "label"].unique())
        notes.append(
            f"{len(excluded)} combinatorial labels (joined by {combo_sep!r}) excluded; "
            "pass combinatorial=True to keep them"
        )
        cells = cells[~is_combo]
    if perturbations is not None:
        wanted = set(map(str, perturbations))
        present = set(cells.loc[~cells["is_control"], "label"])
        missing = sorted(wanted - present)
        if missing:
            raise InvalidInputError(
                f"{path}: perturbation(s) {missing[:10]} in column {cols['pert_col']!r} have no cells after filtering"
            )
        cells = cells[cells["is_control"] | cells["label"].isin(wanted)]
    for c in ("label", "batch", "context"):
        cells[c] = cells[c].astype(str).astype("category")
    _check_controls(cells, cols, path)

    perts = (
        cells[~cells["is_control"]].groupby(["context", "label"], observed=True).size().rename("n_cells").reset_index()
    )
    perts["context"] = perts["context"].astype(str)
    perts["label"] = perts["label"].astype(str)
    perts["combinatorial"] = perts["label"].str.contains(combo_sep, regex=False)
    if alias_cols:
        cols["alias_cols"] = list(alias_cols)
    unresolved, ambiguous = _resolve(perts, resolve, combo_sep, _fallback_ids(obs, cells, alias_cols))
    if unresolved:
        notes.append(f"{len(unresolved)} perturbation label(s) did not resolve to an entity: {unresolved[:10]}")
    if ambiguous:
        notes.append(f"{len(ambiguous)} perturbation label(s) resolved ambiguously: {sorted(ambiguous)[:10]}")
    for n in notes:
        log.info("%s: %s", path, n)
    return PerturbationData(
        path=path,
        matrix=matrix,
        cells=cells,
        genes=var,
        perturbations=perts,
        columns=cols,
        input=kind,
        unresolved=unresolved,
        ambiguous=ambiguous,
        excluded=excluded,
        notes=notes,
    )


def _from_file(path: str, x_path: str, backed: bool) -> tuple[str, pd.DataFrame, pd.DataFrame, bool, Any]:
    root, closer = _open(path)
    try:
        obs = read_elem(root["obs"])
        var = read_elem(root["var"])
        uns_log1p = "uns" in root and "log1p" in root["uns"]
        if x_path not in root:
            raise InvalidInputError(f"{path}: no matrix {x_path!r} in the file")
        elem = root[x_path]
        if isinstance(elem, h5py.Group | zarr.Group):
            elem = sparse_dataset(elem)
        if not backed:
            elem = elem.to_memory() if hasattr(elem, "to_memory") else np.asarray(elem[...])
            closer()
    except Exception:
        closer()
        raise
    return path, obs, var, uns_log1p, elem


def _from_anndata(adata: ad.AnnData, layer: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame, bool, Any]:
    """An AnnData object, in memory or opened with ``backed='r'`` (then ``X`` stays on disk)."""
    if layer is not None and layer not in adata.layers:
        raise InvalidInputError(f"AnnData has no layer {layer!r}; layers are {list(adata.layers)}")
    elem = adata.layers[layer] if layer else adata.X
    path = str(adata.filename) if adata.isbacked else ""
    return path, adata.obs, adata.var, "log1p" in adata.uns, elem


def _open(path: str) -> tuple[Any, Callable[[], None]]:
    if not Path(path).exists():
        raise InvalidInputError(f"{path}: no such file or directory")
    if Path(path).is_dir() or path.endswith(".zarr"):
        return zarr.open_group(path, mode="r"), lambda: None
    f = h5py.File(path, "r")
    return f, f.close


def _detect_input(elem: Any, input: str, uns_log1p: bool, notes: list[str]) -> str:
    if input == "differential":
        notes.append(
            "input: differential values per sample (e.g. z-scores): averaged over replicates and batches, "
            "no control subtracted"
        )
        return input
    if input in ("counts", "log1p", "log"):
        return input
    if input != "auto":
        raise InvalidInputError(f"input must be 'auto', 'counts', 'log1p', 'log' or 'differential', not {input!r}")
    low, top, integers = value_range(head_values(elem, min(SAMPLE_ROWS, elem.shape[0])))
    if low < 0:
        raise InvalidInputError(
            f"X holds negative values (min {low!r}): neither counts nor log-scale "
            "expression (pass input='differential' for z-scores or fold changes)"
        )
    if not uns_log1p and integers:
        notes.append("input: raw counts (non-negative integers); normalised to 1e4 counts per cell, then log1p")
        return "counts"
    if not uns_log1p and top > 50:
        raise InvalidInputError(
            f"X holds non-integer values up to {top:.4g}: neither raw counts nor log1p; "
            "pass input='counts' or input='log1p'"
        )
    why = "uns['log1p'] present" if uns_log1p else f"non-integer values, max {top:.4g}"
    notes.append(f"input: already log-normalised ({why}); used as is, not renormalised")
    return "log1p"
