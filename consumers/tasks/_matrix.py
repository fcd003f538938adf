"""Row access to a cells x genes matrix held in memory or backed by an h5ad / AnnData-zarr file."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from pertstore.errors import InvalidInputError

TARGET_SUM = 1e4
"""Total counts per cell after normalisation (design section 5)."""


class CellMatrix:
    """Rows of ``X`` (or a layer) as float64 CSR blocks, normalised on the fly.

    Parameters
    ----------
    elem
        An in-memory matrix (scipy sparse or numpy) or a backed one
        (``anndata.io.sparse_dataset`` or an h5py / zarr array).
    is_counts
        Whether the values are raw counts; if so rows are normalised to
        :data:`TARGET_SUM` counts and log1p-transformed, and every value must
        be a non-negative integer.
    obs_names, var_names
        Used to name the cell and gene in error messages.
    """

    def __init__(self, elem: Any, *, is_counts: bool, obs_names: np.ndarray, var_names: np.ndarray) -> None:
        if isinstance(elem, sp.spmatrix | sp.sparray) and not isinstance(elem, sp.csr_matrix):
            elem = sp.csr_matrix(elem)
        self.elem = elem
        self.is_counts = is_counts
        self.obs_names = obs_names
        self.var_names = var_names
        self.shape: tuple[int, int] = tuple(elem.shape)

    def raw_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as stored (validated, not normalised)."""
        block = self.elem[start:stop]
        return self._csr(block, start + np.arange(stop - start))

    def take(self, rows: np.ndarray) -> sp.csr_matrix:
        """Normalised rows ``rows`` (any order, no duplicates needed), in that order."""
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        block = self._csr(self.elem[sorted_rows], sorted_rows)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return self.normalise(block[inverse])

    def _csr(self, block: Any, rows: np.ndarray) -> sp.csr_matrix:
        block = sp.csr_matrix(block, dtype=np.float64)
        block.sum_duplicates()
        data = block.data
        bad = ~np.isfinite(data) | (data < 0)
        if self.is_counts:
            bad |= data != np.round(data)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(block.indptr, pos, side="right") - 1)
            cell, gene, value = self.obs_names[rows[row]], self.var_names[block.indices[pos]], data[pos]
            hint = ""
            if not np.isfinite(value):
                what = "a non-finite value"
            elif value < 0:
                what = "a negative value"
            else:
                what = "a non-integer value"
                hint = " where raw counts are required (pass input='log1p' if X is log-normalised)"
            raise InvalidInputError(f"X holds {what} {float(value)!r} at cell {cell!r}, gene {gene!r}{hint}")
        return block

    def normalise(self, block: sp.csr_matrix) -> sp.csr_matrix:
        """Counts -> log1p(counts / total * 1e4) per row (as scanpy's normalize_total + log1p); else as is."""
        if self.is_counts:
            totals = np.asarray(block.sum(axis=1)).ravel()
            totals[totals == 0] = 1.0
            block.data *= np.repeat(TARGET_SUM / totals, np.diff(block.indptr))
            np.log1p(block.data, out=block.data)
        return block


BLOCK_ROWS = 10_000
"""Cells read and normalised at a time."""


def group_sums(matrix: CellMatrix, *, rows: np.ndarray, group: np.ndarray, weight: np.ndarray, n_groups: int,
               squares: bool = False, block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted sums ``sum_i weight_i * x_i`` per group in one streaming pass.

    Parameters
    ----------
    matrix
        The cells.
    rows, group, weight
        For each contributing cell: its row in ``matrix``, its group (0 ..
        ``n_groups - 1``) and its weight.
    squares
        Also return the weighted sums of squared values.

    Returns
    -------
    ``[n_groups, genes]`` sums (and sums of squares, or None), float64.
    """
    n_obs, n_genes = matrix.shape
    g_of = np.full(n_obs, -1, dtype=np.int64)
    w_of = np.zeros(n_obs)
    g_of[rows] = group
    w_of[rows] = weight
    out = np.zeros((n_groups, n_genes))
    out2 = np.zeros((n_groups, n_genes)) if squares else None
    for start in range(0, n_obs, block_rows):
        stop = min(start + block_rows, n_obs)
        local = np.flatnonzero(g_of[start:stop] >= 0)
        if not local.size:
            continue
        block = matrix.normalise(matrix.raw_rows(start, stop))
        w = sp.csr_matrix((w_of[start + local], (g_of[start + local], local)), shape=(n_groups, stop - start))
        out += (w @ block).toarray()
        if out2 is not None:
            block.data **= 2
            out2 += (w @ block).toarray()
    return out, out2

