"""Row access to a cells x genes matrix held in memory or backed by an h5ad / AnnData-zarr file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from pertstore.errors import InvalidInputError

from . import _kernels

TARGET_SUM = 1e4
"""Total counts per cell after normalisation (design section 5)."""


class Block(NamedTuple):
    """Rows of the matrix as CSR arrays (float64 ``data``; ``indptr`` starts at 0)."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    n_genes: int

    def to_csr(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.indptr.size - 1, self.n_genes))


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
    source
        ``(file, element)`` the matrix was read from (e.g. ``("cells.h5ad", "X")``),
        so that Dask workers can open it themselves.
    allow_negative
        Accept negative values (differential input such as z-scores).
    genes, normalise_kept
        Keep only these columns (sorted positions; None: all). Counts are
        normalised over every gene of the file first (``normalise_kept=False``,
        as the reference does for Tahoe and sci-Plex LFC) or over the kept
        genes only (``True``: a renormalisation after the gene filter).
    """

    def __init__(
        self,
        elem: Any,
        *,
        is_counts: bool,
        obs_names: np.ndarray,
        var_names: np.ndarray,
        source: tuple[str, str] | None = None,
        genes: np.ndarray | None = None,
        normalise_kept: bool = False,
        allow_negative: bool = False,
    ) -> None:
        if isinstance(elem, sp.spmatrix | sp.sparray) and not isinstance(elem, sp.csr_matrix):
            elem = sp.csr_matrix(elem)
        if isinstance(elem, sp.csr_matrix):
            elem.sum_duplicates()  # once, so that row blocks can be views
        self.elem = elem
        self.is_counts = is_counts
        self.obs_names = obs_names
        self.var_names = var_names
        self.source = source
        self.genes = None if genes is None else np.asarray(genes, dtype=np.int64)
        self.normalise_kept = normalise_kept
        self.allow_negative = allow_negative
        self._column = None
        if self.genes is not None:
            self._column = np.full(elem.shape[1], -1, dtype=np.int64)
            self._column[self.genes] = np.arange(self.genes.size)
        self.shape: tuple[int, int] = (elem.shape[0], elem.shape[1] if genes is None else int(self.genes.size))
        self._stored = StoredCSR.of(elem)

    @property
    def backed(self) -> bool:
        return not isinstance(self.elem, sp.csr_matrix | np.ndarray)

    def block(self, start: int, stop: int) -> Block:
        """Normalised rows ``start:stop``, validated, as float64 CSR arrays."""
        data, indices, indptr = self._raw(start, stop)
        data, indices, indptr = self._prepare(data.astype(np.float64), indices, indptr)
        return Block(data, indices, indptr, self.shape[1])

    def add_rows(
        self, out: np.ndarray, out2: np.ndarray | None, start: int, stop: int, group: np.ndarray, weight: np.ndarray
    ) -> None:
        """``out[group[i]] += weight[i] * x_i`` (``out2``: of ``x_i ** 2``) for the normalised rows ``x_i`` of
        ``start:stop`` with ``group[i] >= 0``: :meth:`block` and the sums in one compiled pass over the
        non-zeros (no float64 copy of the block, no per-non-zero temporaries)."""
        data, indices, indptr = self._raw(start, stop)
        if data.dtype == bool:
            data = data.astype(np.float32)
        column = self._column if self._column is not None else np.arange(self.elem.shape[1], dtype=np.int64)
        _kernels.add_rows(
            out,
            out if out2 is None else out2,
            out2 is not None,
            data,
            indices,
            indptr.astype(np.int64),
            np.asarray(group, dtype=np.int64),
            np.asarray(weight, dtype=np.float64),
            column,
            self.is_counts,
            self._column is not None and self.normalise_kept,
            TARGET_SUM,
        )

    def _raw(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``start:stop`` as they are stored (CSR arrays, ``indptr`` from 0), validated."""
        e = self.elem
        if isinstance(e, sp.csr_matrix):  # no copy of indices and indptr, data is copied by the cast
            lo, hi = e.indptr[start], e.indptr[stop]
            data, indices, indptr = e.data[lo:hi], e.indices[lo:hi], e.indptr[start : stop + 1] - lo
        elif self._stored is not None:
            data, indices, indptr = self._stored.rows(start, stop)
        else:
            rows = e[start:stop]
            rows = rows if isinstance(rows, sp.csr_matrix) else sp.csr_matrix(rows)
            rows.sum_duplicates()
            data, indices, indptr = rows.data, rows.indices, rows.indptr
        self._check(data, indices, indptr, start + np.arange(stop - start))
        return data, indices, np.asarray(indptr)

    def _prepare(
        self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalise rows in place and keep the chosen genes (in the order normalisation requires)."""
        if self._column is None:
            self._normalise(data, indptr)
            return data, indices, indptr
        if not self.normalise_kept:
            self._normalise(data, indptr)
        column = self._column[indices]
        kept = column >= 0
        n_rows = indptr.size - 1
        row_of = np.repeat(np.arange(n_rows), np.diff(indptr))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of[kept], minlength=n_rows))])
        data, indices = data[kept], column[kept].astype(indices.dtype)
        if self.normalise_kept:
            self._normalise(data, indptr)
        return data, indices, indptr

    def take(self, rows: np.ndarray) -> sp.csr_matrix:
        """Normalised rows ``rows`` (any order, no duplicates needed), in that order."""
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        block = sp.csr_matrix(self.elem[sorted_rows])
        block.sum_duplicates()
        self._check(block.data, block.indices, block.indptr, sorted_rows)
        data, indices, indptr = self._prepare(block.data.astype(np.float64), block.indices, block.indptr)
        block = sp.csr_matrix((data, indices, indptr), shape=(block.shape[0], self.shape[1]))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return block[inverse]

    def _check(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, rows: np.ndarray) -> None:
        """Raise naming the cell and gene of the first negative, non-finite or (counts) non-integer value."""
        if data.dtype.kind == "u" or data.dtype == bool:
            return
        pos = _kernels.first_invalid(data, self.allow_negative, self.is_counts and data.dtype.kind == "f")
        if pos < 0:
            return
        row = int(np.searchsorted(indptr, pos, side="right") - 1)
        cell, gene, value = self.obs_names[rows[row]], self.var_names[indices[pos]], data[pos]
        hint = ""
        if not np.isfinite(value):
            what = "a non-finite value"
        elif value < 0:
            what = "a negative value"
        else:
            what = "a non-integer value"
            hint = " where raw counts are required (pass input='log1p' if X is log-normalised)"
        raise InvalidInputError(f"X holds {what} {float(value)!r} at cell {cell!r}, gene {gene!r}{hint}")

    def _normalise(self, data: np.ndarray, indptr: np.ndarray) -> None:
        """In place: counts -> log1p(counts / total * 1e4) per row (scanpy's normalize_total + log1p).

        ``log1p`` is computed as ``log(1 + x)`` (vectorised; within 1e-15 of
        ``numpy.log1p`` for the values that arise). Log-normalised input is left as is.
        """
        if not self.is_counts or not data.size:
            return
        per_row = np.diff(indptr)
        nonempty = per_row > 0
        totals = np.ones(per_row.size)
        if nonempty.any():  # sums from each non-empty row's start to the next one's (empty rows add nothing)
            totals[nonempty] = np.add.reduceat(data, indptr[:-1][nonempty])
        totals[totals == 0] = 1.0
        data *= np.repeat(TARGET_SUM / totals, per_row)
        data += 1.0
        np.log(data, out=data)


class StoredCSR:
    """The arrays of a CSR matrix in an h5ad / AnnData-zarr file, read by row range without anndata's
    per-slice overhead (about 10 ms a slice in version checks): each read takes only its rows' slice of
    ``indptr``, so a Dask worker summing one range of a million cells reads no more of it than it needs."""

    def __init__(self, group: Any, n_cols: int) -> None:
        self.data, self.indices, self.indptr = group["data"], group["indices"], group["indptr"]
        self.n_cols = n_cols

    @classmethod
    def of(cls, elem: Any) -> StoredCSR | None:
        """For anndata's backed CSR dataset; None for anything else."""
        if getattr(elem, "format", None) != "csr" or not hasattr(elem, "group"):
            return None
        return cls(elem.group, elem.shape[1])

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``start:stop`` as stored, duplicates summed (``indptr`` from 0)."""
        indptr = np.asarray(self.indptr[start : stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        rows = sp.csr_matrix((self.data[lo:hi], self.indices[lo:hi], indptr - lo), shape=(stop - start, self.n_cols))
        if not rows.has_canonical_format:
            rows.sum_duplicates()
        return rows.data, rows.indices, rows.indptr


def head_values(elem: Any, n: int) -> np.ndarray:
    """The stored values of the first ``n`` rows (a sparse matrix's non-zeros), to tell counts from log1p."""
    if isinstance(elem, sp.csr_matrix | sp.csr_array):
        return elem.data[: elem.indptr[n]]  # a view: no copy of the sampled rows
    stored = StoredCSR.of(elem)
    if stored is not None:
        return stored.data[: int(stored.indptr[n])]  # one entry of indptr read
    sample = elem[:n]
    return np.asarray(sample.data if hasattr(sample, "data") and not isinstance(sample, np.ndarray) else sample)


def value_range(values: np.ndarray) -> tuple[float, float, bool]:
    """``(min, max, all integers)`` of the finite values (``(0, 0, True)`` for none), in one pass."""
    if values.dtype == bool:
        values = values.view(np.uint8)
    low, top, integers = _kernels.value_range(np.ravel(values))
    return float(low), float(top), bool(integers)


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as long work advances."""

BLOCK_ROWS = 10_000
"""Cells read and normalised at a time."""


def group_sums(
    matrix: CellMatrix,
    *,
    rows: np.ndarray,
    group: np.ndarray,
    weight: np.ndarray,
    n_groups: int,
    squares: bool = False,
    block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
    client: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted sums ``sum_i weight_i * x_i`` per group in one streaming pass.

    Each block of rows is normalised, then its non-zeros are added to their
    (group, gene) cell with ``numpy.bincount`` (one pass over the non-zeros, no
    sparse product); only the groups present in the block are touched.

    Parameters
    ----------
    matrix
        The cells.
    rows, group, weight
        For each contributing cell: its row in ``matrix``, its group (0 ..
        ``n_groups - 1``) and its weight.
    squares
        Also return the weighted sums of squared values.
    progress
        Called as ``progress("cells", rows done, rows total)`` after each block.
    client
        A ``distributed.Client``: row ranges of :data:`DASK_ROWS` cells are
        summed by its workers, each opening the file itself (the matrix must
        come from a file), and the partial sums are added up as they arrive.

    Returns
    -------
    ``[n_groups, genes]`` sums (and sums of squares, or None), float64.
    """
    n_obs, n_genes = matrix.shape
    g_of = np.full(n_obs, -1, dtype=np.int64)
    w_of = np.zeros(n_obs)
    g_of[rows] = group
    w_of[rows] = weight
    if client is not None:
        return _dask_sums(client, matrix, g_of, w_of, n_groups, squares, block_rows, progress)
    return _sums(matrix, 0, n_obs, g_of, w_of, n_groups, squares, block_rows, progress)


DASK_ROWS = 50_000
"""Cells per Dask task."""


def _sums(
    matrix: CellMatrix,
    start: int,
    stop: int,
    g_of: np.ndarray,
    w_of: np.ndarray,
    n_groups: int,
    squares: bool,
    block_rows: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Group sums of rows ``start:stop``; ``g_of`` and ``w_of`` are indexed from ``start``."""
    n_genes = matrix.shape[1]
    out = np.zeros((n_groups, n_genes))
    out2 = np.zeros((n_groups, n_genes)) if squares else None
    for lo in range(start, stop, block_rows):
        hi = min(lo + block_rows, stop)
        g = g_of[lo - start : hi - start]
        used = g >= 0
        if used.any():
            matrix.add_rows(out, out2, lo, hi, g, w_of[lo - start : hi - start])
        if progress is not None:
            progress("cells", hi, stop)
    return out, out2


def _dask_sums(
    client: Any,
    matrix: CellMatrix,
    g_of: np.ndarray,
    w_of: np.ndarray,
    n_groups: int,
    squares: bool,
    block_rows: int,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    from distributed import as_completed

    if matrix.source is None:
        raise InvalidInputError("summing on Dask needs cells read from a file (read_perturbation_data(path))")
    n_obs, n_genes = matrix.shape
    futures = {}
    for start in range(0, n_obs, DASK_ROWS):
        stop = min(start + DASK_ROWS, n_obs)
        if (g_of[start:stop] >= 0).any():
            fut = client.submit(
                _file_sums,
                matrix.source,
                matrix.is_counts,
                start,
                stop,
                g_of[start:stop],
                w_of[start:stop],
                matrix.obs_names[start:stop],
                matrix.var_names,
                n_groups,
                squares,
                block_rows,
                matrix.genes,
                matrix.normalise_kept,
                matrix.allow_negative,
                pure=False,
            )
            futures[fut] = stop - start
    out = np.zeros((n_groups, n_genes))
    out2 = np.zeros((n_groups, n_genes)) if squares else None
    done = 0
    for fut in as_completed(list(futures)):
        s1, s2 = fut.result()
        out += s1
        if out2 is not None:
            out2 += s2
        done += futures.pop(fut)
        fut.release()
        if progress is not None:
            progress("cells", done, n_obs)
    return out, out2


def _file_sums(
    source: tuple[str, str],
    is_counts: bool,
    start: int,
    stop: int,
    g_of: np.ndarray,
    w_of: np.ndarray,
    obs_names: np.ndarray,
    var_names: np.ndarray,
    n_groups: int,
    squares: bool,
    block_rows: int,
    genes: np.ndarray | None = None,
    normalise_kept: bool = False,
    allow_negative: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """On a worker: open the file backed and sum rows ``start:stop``."""
    import h5py
    import zarr
    from anndata.io import sparse_dataset

    path, key = source
    is_zarr = Path(path).is_dir() or path.endswith(".zarr")
    root = zarr.open_group(path, mode="r") if is_zarr else h5py.File(path, "r")
    try:
        elem = root[key]
        if isinstance(elem, h5py.Group | zarr.Group):
            elem = sparse_dataset(elem)
        names = np.empty(stop, dtype=object)
        names[start:] = obs_names
        matrix = CellMatrix(
            elem,
            is_counts=is_counts,
            obs_names=names,
            var_names=var_names,
            genes=genes,
            normalise_kept=normalise_kept,
            allow_negative=allow_negative,
        )
        return _sums(matrix, start, stop, g_of, w_of, n_groups, squares, block_rows)
    finally:
        if not is_zarr:
            root.close()
