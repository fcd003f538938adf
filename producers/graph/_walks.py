"""Weighted, p/q-biased second-order random walks (node2vec) on a CSR graph, vectorised over walkers.

node2vec's transition from ``v`` (having come from ``t``) to a neighbour ``x`` has probability
proportional to ``w(v, x) * alpha(t, x)`` with ``alpha = 1/p`` if ``x == t``, ``1`` if ``x`` is a
neighbour of ``t`` and ``1/q`` otherwise (Grover & Leskovec 2016). It is sampled by rejection, as
pyg-lib and torch-cluster do: propose ``x`` with probability ``w(v, x) / sum_y w(v, y)`` (inverse
CDF within ``v``'s CSR row), accept with probability ``alpha(t, x) / max(1/p, 1, 1/q)``. The first
step is the plain weighted step. Every walker advances together; only rejected walkers redraw. A
walker on a node without edges stays there, as in torch-cluster.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class WalkGraph:
    """A symmetric weighted graph prepared for walks: CSR arrays, per-row cumulative weights, edge keys."""

    def __init__(self, adj: sp.csr_matrix) -> None:
        adj = sp.csr_matrix(adj)
        adj.sort_indices()
        self.n = adj.shape[0]
        self.indptr = adj.indptr.astype(np.int64)
        self.indices = adj.indices.astype(np.int64)
        weights = adj.data.astype(np.float64)
        if (weights <= 0).any():
            raise ValueError("walk graph weights must be positive")
        self.cum = np.cumsum(weights)
        start = np.concatenate([[0.0], self.cum])[self.indptr[:-1]]
        self.row_start = start
        self.row_total = self.cum[self.indptr[1:] - 1] - start
        self.isolated = np.diff(self.indptr) == 0
        rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
        self.keys = rows * self.n + self.indices  # sorted: rows ascending, columns sorted within rows

    def step(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One first-order weighted step from each node of ``v`` (a node without edges stays put)."""
        u = self.row_start[v] + rng.random(len(v)) * self.row_total[v]
        pos = np.searchsorted(self.cum, u, side="right")
        nxt = self.indices[np.clip(pos, self.indptr[v], np.maximum(self.indptr[v + 1] - 1, 0))]
        return np.where(self.isolated[v], v, nxt)

    def has_edge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = a * self.n + b
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys


def random_walks(
    graph: WalkGraph, starts: np.ndarray, length: int, p: float, q: float, rng: np.random.Generator
) -> np.ndarray:
    """Walks ``[len(starts), length + 1]`` (the start node first) of node2vec's biased walk."""
    walks = np.empty((len(starts), length + 1), dtype=np.int64)
    walks[:, 0] = starts
    if length == 0:
        return walks
    walks[:, 1] = graph.step(walks[:, 0], rng)
    bound = max(1.0 / p, 1.0, 1.0 / q)
    for k in range(2, length + 1):
        prev, cur = walks[:, k - 2], walks[:, k - 1]
        nxt = np.empty_like(cur)
        todo = np.arange(len(cur))
        while len(todo):
            x = graph.step(cur[todo], rng)
            t = prev[todo]
            alpha = np.where(x == t, 1.0 / p, np.where(graph.has_edge(t, x), 1.0, 1.0 / q))
            ok = (rng.random(len(todo)) * bound < alpha) | graph.isolated[cur[todo]]
            nxt[todo[ok]] = x[ok]
            todo = todo[~ok]
        walks[:, k] = nxt
    return walks
