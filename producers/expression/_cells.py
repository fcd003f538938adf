"""Control cells of one context in an h5ad file, streamed as log-normalised row blocks.

The file is opened backed (``anndata.read_h5ad(path, backed="r")``): only ``obs`` and ``var`` are
read into memory, the matrix is read block by block. The scale of the matrix is detected from the
control cells: whole numbers are **counts** (normalised to ``target_sum`` per cell, then ``log1p``,
as ``scanpy.pp.normalize_total`` + ``scanpy.pp.log1p``); non-negative values with fractions are
taken as already **log1p-normalised** and used as they are; negative values (scaled data) are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from pertstore.errors import InvalidInputError

log = logging.getLogger(__name__)

Scale = Literal["counts", "log1p"]
MAX_LOG1P = 15.0
"""log1p-normalised values above this (e^15 ~ 3e6 per 1e4) mean the matrix is not log1p data."""
_SCALE_PROBE_CELLS = 2000


@dataclass
class CellSelection:
    """Which cells of an h5ad are the control cells of a context."""

    control_column: str | None = "condition"
    """obs column that marks controls (None: every cell is a control cell)."""
    control_value: str = "control"
    """Value of ``control_column`` for control cells, compared as text (a boolean column: ``True``)."""
    context_column: str | None = None
    """obs column holding the context (cell line); None: the whole file is one context."""
    context_value: str | None = None
    """Value of ``context_column`` for this context."""
    layer: str | None = None
    """Matrix to read: None for ``X``, ``raw`` for ``raw.X``, else a name in ``layers``."""
    gene_column: str | None = None
    """var column with gene ids (symbols or Ensembl ids); None: the var index."""


@dataclass
class ControlCells:
    """The control cells of a context: positions in the file, genes, detected scale."""

    path: Path
    selection: CellSelection
    positions: np.ndarray
    genes: list[str]
    scale: Scale
    target_sum: float = 1e4
    _adata: object = field(default=None, repr=False)

    @property
    def n_cells(self) -> int:
        return len(self.positions)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def matrix(self):
        """The backed matrix (rows: every cell of the file)."""
        a = self._adata
        layer = self.selection.layer
        if layer is None:
            return a.X
        if layer == "raw":
            return a.raw.X
        return a.layers[layer]

    def raw_blocks(self, block_cells: int) -> Iterator[sp.csr_matrix]:
        """Control-cell rows as they are stored, ``block_cells`` at a time (CSR).

        A block whose cells lie close together in the file is read as one slice and then
        subset (h5py reads a list of rows one row at a time).
        """
        mat = self.matrix()
        for start in range(0, self.n_cells, block_cells):
            wanted = self.positions[start : start + block_cells]
            first, last = int(wanted[0]), int(wanted[-1]) + 1
            if last - first <= 4 * len(wanted):
                rows = sp.csr_matrix(mat[first:last], dtype=np.float64)
                yield rows if last - first == len(wanted) else rows[wanted - first]
            else:
                yield sp.csr_matrix(mat[wanted], dtype=np.float64)

    def blocks(self, block_cells: int) -> Iterator[sp.csr_matrix]:
        """Log-normalised control-cell rows ``[cells, genes]`` (CSR float64), a block at a time."""
        for rows in self.raw_blocks(block_cells):
            yield normalise(rows, self.scale, self.target_sum)

    def close(self) -> None:
        if self._adata is not None and getattr(self._adata, "file", None) is not None:
            self._adata.file.close()


def normalise(rows: sp.csr_matrix, scale: Scale, target_sum: float = 1e4) -> sp.csr_matrix:
    """``log1p(counts / total * target_sum)`` for counts; log1p data unchanged."""
    if scale == "log1p":
        return rows
    totals = np.asarray(rows.sum(axis=1)).ravel()
    factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = rows.copy()
    out.data *= np.repeat(factor, np.diff(out.indptr))
    np.log1p(out.data, out=out.data)
    return out


def open_control_cells(path: str | Path, selection: CellSelection, *, target_sum: float = 1e4) -> ControlCells:
    """Find the control cells of a context in ``path`` and detect the matrix scale.

    Raises :class:`InvalidInputError` naming the file and column when a column, value or layer is
    missing, and when the matrix holds negative (scaled) values.
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such h5ad file")
    try:
        adata = ad.read_h5ad(path, backed="r")
    except Exception as e:  # h5py and anndata raise many types for a bad file
        raise InvalidInputError(f"{path}: not a readable h5ad file: {e}") from e
    try:
        cells = _select(adata, path, selection)
        genes = _genes(adata, path, selection)
        found = ControlCells(path, selection, cells, genes, "counts", target_sum, adata)
        found.scale = detect_scale(found)
    except BaseException:
        adata.file.close()
        raise
    log.info(
        "%s: %d control cells x %d genes; matrix holds %s",
        path.name,
        found.n_cells,
        found.n_genes,
        f"raw counts (normalised to {target_sum:g} + log1p here)"
        if found.scale == "counts"
        else "log1p-normalised values (used as they are)",
    )
    return found


def _select(adata, path: Path, sel: CellSelection) -> np.ndarray:
    obs = adata.obs
    mask = np.ones(adata.n_obs, dtype=bool)
    for column, value, what in [
        (sel.control_column, sel.control_value, "control"),
        (sel.context_column, sel.context_value, "context"),
    ]:
        if column is None:
            continue
        if column not in obs.columns:
            raise InvalidInputError(f"{path}: obs has no {what} column {column!r} (columns: {list(obs.columns)})")
        if value is None:
            raise InvalidInputError(f"{path}: a {what} column {column!r} needs a {what} value")
        labels = obs[column].astype(str)
        hit = (labels == str(value)).to_numpy()
        if not hit.any():
            shown = sorted(labels.unique())[:20]
            raise InvalidInputError(f"{path}: no cell has {column} == {value!r} (values: {shown})")
        mask &= hit
    return np.flatnonzero(mask)


def _genes(adata, path: Path, sel: CellSelection) -> list[str]:
    if sel.layer == "raw":
        if adata.raw is None:
            raise InvalidInputError(f"{path}: layer 'raw' asked for but the file has no raw matrix")
        var = adata.raw.var
    else:
        if sel.layer is not None and sel.layer not in adata.layers:
            raise InvalidInputError(
                f"{path}: no layer {sel.layer!r} (layers: {list(adata.layers)}; or 'raw' for raw.X, or none for X)"
            )
        var = adata.var
    if sel.gene_column is None:
        return var.index.astype(str).tolist()
    if sel.gene_column not in var.columns:
        raise InvalidInputError(f"{path}: var has no gene column {sel.gene_column!r} (columns: {list(var.columns)})")
    return var[sel.gene_column].astype(str).tolist()


def detect_scale(cells: ControlCells) -> Scale:
    """``counts`` when the first control cells hold whole numbers, ``log1p`` when they hold fractions."""
    probe = next(cells.raw_blocks(_SCALE_PROBE_CELLS), None)
    where = f"{cells.path}" + (f" (layer {cells.selection.layer})" if cells.selection.layer else "")
    if probe is None or probe.nnz == 0:
        raise InvalidInputError(f"{where}: the selected control cells hold no non-zero value")
    data = probe.data
    if data.min() < 0:
        raise InvalidInputError(
            f"{where}: the matrix has negative values (scaled data?); give a layer with counts "
            "or log1p-normalised values (e.g. layer: raw)"
        )
    if np.all(data == np.round(data)):
        return "counts"
    if data.max() > MAX_LOG1P:
        raise InvalidInputError(
            f"{where}: values are neither whole counts nor log1p-normalised "
            f"(max {data.max():.3g} > {MAX_LOG1P}); give counts or log1p data"
        )
    return "log1p"
