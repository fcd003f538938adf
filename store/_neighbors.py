"""Exact nearest-neighbour search over one embedding set: chunked matrix products with torch, then top-k.

Cosine scores are similarities (higher is nearer); Euclidean scores are distances (lower is nearer).
A set's prepared matrix (float32, rows unit-normalised for cosine) is kept by :class:`ExactIndex`,
so repeated queries on one set pay only for the products.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from pertstore.errors import InvalidInputError

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")
BLOCK_ELEMENTS = 2**24
"""Query-by-candidate scores computed at once (64 MiB of float32): bounds memory for any set size."""


def check_search(k: int, metric: str) -> None:
    """Fail early, naming the value, on a ``k`` below 1 or an unknown metric."""
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a whole number of at least 1 (got {k!r})")


class ExactIndex:
    """All rows of one set, prepared for exact search under ``metric``."""

    def __init__(self, values: np.ndarray, metric: Metric = "cosine") -> None:
        check_search(1, metric)
        x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise InvalidInputError("the set holds NaN or infinite values; neighbours are undefined")
        self.metric = metric
        self.sq_norms = (x * x).sum(dim=1)
        self.matrix = _unit(x) if metric == "cosine" else x

    @property
    def n_rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def nbytes(self) -> int:
        return self.matrix.element_size() * self.matrix.nelement()

    def search(self, queries: np.ndarray, k: int, *, candidates: np.ndarray | None = None,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows to each query row: ``(positions [q, k], scores [q, k])``, nearest first.

        ``candidates``: row positions to search among (default: all); ``exclude``: for each query,
        one row position never returned (the query's own row; -1 for none). Fewer than ``k``
        candidates give position -1 and a NaN score in the missing places.
        """
        check_search(k, self.metric)
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.matrix.shape[1]:
            raise InvalidInputError(f"queries have shape {tuple(q.shape)}; the set has dim {self.matrix.shape[1]}")
        pool = torch.arange(self.n_rows) if candidates is None else torch.as_tensor(candidates, dtype=torch.long)
        x = self.matrix if candidates is None else self.matrix[pool]
        x_sq = self.sq_norms if candidates is None else self.sq_norms[pool]
        cosine = self.metric == "cosine"
        if cosine:
            q = _unit(q)
        skip = None if exclude is None else torch.from_numpy(self._columns(exclude, pool.numpy()))
        kk = min(k, len(pool))
        out_pos = np.full((len(q), k), -1, dtype=np.int64)
        out_score = np.full((len(q), k), np.nan, dtype=np.float32)
        step = max(1, BLOCK_ELEMENTS // max(1, len(pool)))
        with torch.inference_mode():
            for start in range(0, len(q), step):
                block = q[start:start + step]
                scores = block @ x.T
                if not cosine:  # squared distance, negated so that larger is nearer for topk
                    scores = 2 * scores - x_sq[None, :] - (block * block).sum(dim=1, keepdim=True)
                if skip is not None:
                    rows = torch.nonzero(skip[start:start + step] >= 0).flatten()
                    scores[rows, skip[start + rows]] = -torch.inf
                top, where = torch.topk(scores, kk, dim=1)
                found = pool[where]
                found[torch.isinf(top)] = -1
                if not cosine:
                    top = torch.sqrt(torch.clamp(-top, min=0))
                top[found < 0] = torch.nan
                out_pos[start:start + len(block), :kk] = found.numpy()
                out_score[start:start + len(block), :kk] = top.numpy()
        return out_pos, out_score


    def _columns(self, rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Each of ``rows`` (set positions, -1 for none) as a column of the candidate ``pool`` (-1: not in it)."""
        column = np.full(self.n_rows + 1, -1, dtype=np.int64)  # last slot: what -1 maps to
        column[pool] = np.arange(len(pool))
        rows = np.asarray(rows, dtype=np.int64)
        return column[np.where(rows >= 0, rows, self.n_rows)]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero: cosine 0 to everything)."""
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=torch.finfo(x.dtype).tiny)


def top_k_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the fraction of ``a``'s neighbours (positions, -1 for none) also among ``b``'s."""
    out = np.zeros(len(a))
    for i, (ra, rb) in enumerate(zip(a, b)):
        mine = set(ra[ra >= 0].tolist())
        out[i] = len(mine & set(rb[rb >= 0].tolist())) / max(1, len(mine))
    return out
