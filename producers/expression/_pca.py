"""PCA of genes over cells, out of core: genes are the samples, cells the features.

Let ``X`` be the log-normalised ``[cells, genes]`` matrix. The PCA of ``X.T`` (what
``sklearn.decomposition.PCA().fit_transform(X.T)`` computes) centres each *cell* over genes,
``M = X.T - mean_over_genes``, and returns the gene scores ``U S`` of the SVD ``M = U S V^T``.
``U`` and ``S^2`` are the eigenvectors and eigenvalues of the ``[genes, genes]`` matrix
``M M^T = sum over cells of m_c m_c^T``, a sum over cell blocks. So the cells are streamed:

- ``exact``: accumulate ``M M^T`` block by block (``genes^2`` floats) and take its top
  eigenpairs. Exact; memory ``8 genes^2`` bytes; work ``cells x genes^2``.
- ``randomized``: subspace iteration on ``M M^T`` without forming it: each pass over the cells
  computes ``M M^T Q = sum_blocks B^T (B Q)`` for an orthonormal ``[genes, dims + oversample]``
  ``Q``; after ``n_iter`` passes a Rayleigh-Ritz step gives the eigenpairs (Halko et al. 2011,
  the algorithm of sklearn's ``svd_solver="randomized"``). Memory ``genes x (dims + 10)``.
- ``auto``: exact up to 4,096 genes, randomized above.

Sparse blocks are never made dense: with ``S`` a CSR block and ``m`` its per-cell means,
``M = S - m 1^T``, so ``M Q = S Q - m (1^T Q)`` and ``M^T Y = S^T Y - 1 (m^T Y)``; the work per
pass is ``nnz x (dims + 10)`` instead of ``cells x genes x (dims + 10)``. The sparse products run
in float32 (twice as fast; scanpy's PCA also works on float32 data), sums stay float64.

Signs are fixed so the largest-magnitude entry of each component is positive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh

from pertstore.errors import InvalidInputError

Method = Literal["auto", "exact", "randomized"]
EXACT_MAX_GENES = 4096


@dataclass
class GenePCA:
    """Gene scores ``[genes, dims]`` and the variance each component explains."""

    scores: np.ndarray
    explained_variance: np.ndarray
    method: str
    n_cells: int


def gene_pca(
    blocks: Callable[[], Iterable[np.ndarray | sp.spmatrix]],
    n_genes: int,
    dims: int,
    *,
    method: Method = "auto",
    n_iter: int = 8,
    oversample: int = 10,
    seed: int = 0,
    cache_bytes: int = 0,
    progress: Callable[[Iterable, str], Iterable] | None = None,
) -> GenePCA:
    """PCA of the genes of the cell blocks that ``blocks()`` yields (called once per pass).

    Parameters
    ----------
    blocks
        Returns a fresh iterator of ``[cells, genes]`` blocks (log-normalised values), dense arrays
        or scipy sparse matrices.
    n_genes
        Number of genes (columns of every block).
    dims
        Components to keep; at most ``min(genes, cells)``.
    method
        ``exact``, ``randomized`` or ``auto`` (see the module docstring).
    cache_bytes
        Sparse blocks whose float32 copies fit in this many bytes in all are read once and kept
        in memory for the later passes; larger inputs are read again on every pass.
    progress
        Optional wrapper ``progress(iterable, description)`` used to show progress per pass.
    """
    wrap = progress or (lambda it, _desc: it)
    if method == "auto":
        method = "exact" if n_genes <= EXACT_MAX_GENES else "randomized"
    if method == "exact":
        gram, n_cells = _gram(wrap(blocks(), "PCA: M M^T"), n_genes)
        _check_rank(dims, n_genes, n_cells)
        values, vectors = eigh(gram, subset_by_index=[n_genes - dims, n_genes - 1])
    elif method == "randomized":
        values, vectors, n_cells = _subspace_iteration(
            _BlockCache(blocks, cache_bytes), n_genes, dims, n_iter, oversample, seed, wrap
        )
    else:
        raise InvalidInputError(f"unknown PCA method {method!r} (auto, exact, randomized)")
    order = np.argsort(values)[::-1][:dims]
    values = np.clip(values[order], 0.0, None)
    vectors = _fix_signs(vectors[:, order])
    return GenePCA(vectors * np.sqrt(values), values / max(n_genes - 1, 1), method, n_cells)


class _BlockCache:
    """Replays the first pass's sparse blocks from memory (float32) when they fit in ``budget`` bytes."""

    def __init__(self, blocks: Callable[[], Iterable], budget: int) -> None:
        self.blocks, self.budget, self.kept = blocks, budget, None

    def __call__(self) -> Iterable:
        return iter(self.kept) if self.kept is not None else self._first_pass()

    def _first_pass(self) -> Iterable:
        kept, used = [], 0
        for block in self.blocks():
            yield block
            if kept is not None and sp.issparse(block):
                small = sp.csr_matrix(block, dtype=np.float32)
                used += small.data.nbytes + small.indices.nbytes + small.indptr.nbytes
                if used <= self.budget:
                    kept.append(small)
                else:
                    kept = None
            else:
                kept = None
        if kept is not None:
            self.kept = kept


def _cell_means(block) -> np.ndarray:
    return np.asarray(block.mean(axis=1)).ravel()


def _centred_gram(block) -> np.ndarray:
    """``M^T M`` of the block centred per cell, ``M = block - m 1^T``."""
    m = _cell_means(block)
    if not sp.issparse(block):
        b = block - m[:, None]
        return b.T @ b
    s_m = np.asarray(block.T @ m).ravel()
    gram = (block.T @ block).toarray()
    return gram - s_m[:, None] - s_m[None, :] + m @ m


def _centred_product(block, q: np.ndarray) -> np.ndarray:
    """``M^T (M q)`` of the block centred per cell, without forming ``M`` for sparse blocks."""
    m = _cell_means(block)
    if not sp.issparse(block):
        b = block - m[:, None]
        return b.T @ (b @ q)
    single = block.astype(np.float32, copy=False)  # float32 products (as scanpy's PCA on float32 data), float64 sums
    mq = (single @ q.astype(np.float32)).astype(np.float64) - np.outer(m, q.sum(axis=0))
    return np.asarray(single.T @ mq.astype(np.float32), dtype=np.float64) - (m @ mq)[None, :]


def _gram(blocks: Iterable, n_genes: int) -> tuple[np.ndarray, int]:
    gram = np.zeros((n_genes, n_genes))
    n_cells = 0
    for block in blocks:
        gram += _centred_gram(block)
        n_cells += block.shape[0]
    return gram, n_cells


def _subspace_iteration(blocks, n_genes: int, dims: int, n_iter: int, oversample: int, seed: int, wrap):
    width = min(dims + oversample, n_genes)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_genes, width)))
    n_cells = 0
    for it in range(max(n_iter, 1)):
        y = np.zeros_like(q)
        n_cells = 0
        for block in wrap(blocks(), f"PCA: pass {it + 1}/{max(n_iter, 1)}"):
            y += _centred_product(block, q)
            n_cells += block.shape[0]
        if it == 0:
            _check_rank(dims, n_genes, n_cells)
        if it < max(n_iter, 1) - 1:
            q, _ = np.linalg.qr(y)
    small = q.T @ y
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    return values, q @ vectors, n_cells


def _check_rank(dims: int, n_genes: int, n_cells: int) -> None:
    if dims > min(n_genes, n_cells):
        raise InvalidInputError(
            f"PCA with dims={dims} needs at least {dims} genes and {dims} control cells; "
            f"got {n_genes} genes and {n_cells} cells"
        )


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs
