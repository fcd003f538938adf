"""Nearest-neighbour search over one embedding set.

:class:`ExactIndex`: chunked matrix products with torch, then top-k; a set's prepared matrix (float32,
rows unit-normalised for cosine) is kept, so repeated queries pay only for the products.
:class:`GraphIndex`: an approximate HNSW graph (usearch), for sets above :data:`EXACT_MAX_ROWS`; built
once per set version and metric and kept in the store beside the set (``indexes/...``).

Cosine scores are similarities (higher is nearer); Euclidean scores are distances (lower is nearer).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from pertstore.errors import InvalidInputError

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")
EXACT_MAX_ROWS = 100_000
"""Sets up to this many rows are searched exactly; larger ones through a :class:`GraphIndex`."""
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

    def search(
        self, queries: np.ndarray, k: int, *, candidates: np.ndarray | None = None, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
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
                block = q[start : start + step]
                scores = block @ x.T
                if not cosine:  # squared distance, negated so that larger is nearer for topk
                    scores = 2 * scores - x_sq[None, :] - (block * block).sum(dim=1, keepdim=True)
                if skip is not None:
                    rows = torch.nonzero(skip[start : start + step] >= 0).flatten()
                    scores[rows, skip[start + rows]] = -torch.inf
                top, where = torch.topk(scores, kk, dim=1)
                found = pool[where]
                found[torch.isinf(top)] = -1
                if not cosine:
                    top = torch.sqrt(torch.clamp(-top, min=0))
                top[found < 0] = torch.nan
                out_pos[start : start + len(block), :kk] = found.numpy()
                out_score[start : start + len(block), :kk] = top.numpy()
        return out_pos, out_score

    def _columns(self, rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Each of ``rows`` (set positions, -1 for none) as a column of the candidate ``pool`` (-1: not in it)."""
        column = np.full(self.n_rows + 1, -1, dtype=np.int64)  # last slot: what -1 maps to
        column[pool] = np.arange(len(pool))
        rows = np.asarray(rows, dtype=np.int64)
        return column[np.where(rows >= 0, rows, self.n_rows)]


class GraphIndex:
    """An approximate HNSW index of one set's rows (usearch, vectors kept as float16).

    A search asks the graph for ``2 k`` candidates (``expansion`` of them explored), then scores them
    exactly on the set's float32 rows and keeps the best ``k``: scores are exact, only the candidate
    list is approximate. Defaults measured in ``benchmarks/bench_neighbors.py``.
    """

    def __init__(self, index, values: np.ndarray, metric: Metric, expansion: int = 32) -> None:
        self.index, self.metric, self.expansion = index, metric, expansion
        self.values = np.ascontiguousarray(values, dtype=np.float32)

    @classmethod
    def build(
        cls,
        values: np.ndarray,
        metric: Metric = "cosine",
        *,
        connectivity: int = 8,
        expansion_add: int = 64,
        threads: int = 1,
    ) -> GraphIndex:
        """Index every row of ``values`` (keys: row positions); one thread by default, so the graph,
        and so every answer, is the same on every build."""
        from usearch.index import Index

        check_search(1, metric)
        x = np.ascontiguousarray(values, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InvalidInputError("the set holds NaN or infinite values; neighbours are undefined")
        index = Index(
            ndim=x.shape[1],
            metric="cos" if metric == "cosine" else "l2sq",
            dtype="f16",
            connectivity=connectivity,
            expansion_add=expansion_add,
        )
        index.add(np.arange(len(x)), x, threads=threads)
        return cls(index, x, metric)

    @classmethod
    def restore(cls, raw: bytes, values: np.ndarray, metric: Metric) -> GraphIndex:
        """An index saved by :meth:`to_bytes`, over the same ``values``."""
        from usearch.index import Index

        index = Index.restore(bytearray(raw))
        if index is None or len(index) != len(values) or index.ndim != values.shape[1]:
            raise InvalidInputError("the kept neighbour index does not match its set; delete it to rebuild")
        return cls(index, values, metric)

    def to_bytes(self) -> bytes:
        return bytes(self.index.save())

    @property
    def n_rows(self) -> int:
        return len(self.index)

    def search(
        self, queries: np.ndarray, k: int, *, exclude: np.ndarray | None = None, threads: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ExactIndex.search` (without ``candidates``), with an approximate candidate list."""
        check_search(k, self.metric)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        out_pos = np.full((len(q), k), -1, dtype=np.int64)
        out_score = np.full((len(q), k), np.nan, dtype=np.float32)
        if not len(q):
            return out_pos, out_score
        count = min(2 * k + 1, self.n_rows)
        self.index.expansion_search = max(self.expansion, count)
        found = self.index.search(q, count, threads=threads)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(q), -1)
        # one query gives usearch's Matches (no counts), several its BatchMatches
        counts = np.asarray(found.counts).reshape(-1) if hasattr(found, "counts") else np.array([keys.shape[1]])
        cosine = self.metric == "cosine"
        for i in range(len(q)):
            cand = keys[i, : counts[i]]
            if exclude is not None and exclude[i] >= 0:
                cand = cand[cand != exclude[i]]
            rows = self.values[cand]
            if cosine:
                norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(q[i])
                score = rows @ q[i] / np.maximum(norms, np.finfo(np.float32).tiny)
                order = np.argsort(-score, kind="stable")[:k]
            else:
                score = np.sqrt(np.maximum(((rows - q[i]) ** 2).sum(axis=1), 0))
                order = np.argsort(score, kind="stable")[:k]
            out_pos[i, : len(order)] = cand[order]
            out_score[i, : len(order)] = score[order]
        return out_pos, out_score


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
