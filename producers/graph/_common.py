"""What the STRING graph producers share: the channel/threshold parameters and the gene graph they load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pertstore.producers._base import ProducerContext
from pertstore.producers.graph._string import gene_graph, read_string
from pydantic import BaseModel, ConfigDict, Field


class GraphParams(BaseModel):
    """The STRING graph rules (:func:`read_string`); edge weights are the score / 1000."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(default_factory=lambda: ["experiments", "coexpression", "database"])
    """Evidence channels recombined with STRING's rule when ``score`` is ``channels`` (textmining where the
    file has it)."""
    score: Literal["channels", "combined"] = "channels"
    """``channels``: the channels recombined; ``combined``: the file's ``combined_score`` (all of STRING's channels)."""
    threshold: float = Field(400.0, ge=0, lt=1000)
    """Keep edges whose score is at least this (STRING's 0-1000 scale)."""
    keep_at_least: int = Field(0, ge=0)
    """Rescue each protein to this many rows by its best edges below the threshold (reference's adaptive filter)."""
    seed: int = 0


@dataclass
class GeneGraph:
    """Canonical gene ids and the undirected weighted edges between them (weights 0-1, each edge once)."""

    nodes: list[str]
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    @property
    def n(self) -> int:
        return len(self.nodes)

    @classmethod
    def from_edges(cls, edges: pd.DataFrame) -> GeneGraph:
        """A graph of an edge table ``a, b, score`` (0-1000) as it is, without the registry (tests, benchmarks)."""
        nodes, rows, cols, weights, _ = gene_graph(edges, lambda ids: _Identity(ids))
        return cls(
            nodes,
            np.asarray(rows, dtype=np.int64),
            np.asarray(cols, dtype=np.int64),
            np.asarray(weights, dtype=np.float64),
        )

    def adjacency(self) -> sp.csr_matrix:
        a = sp.coo_matrix((self.weights, (self.rows, self.cols)), shape=(self.n, self.n))
        return (a + a.T).tocsr()


@dataclass
class _Identity:
    """A resolution that maps every id to itself."""

    ids: list[str]


def load_gene_graph(ctx: ProducerContext, params: GraphParams) -> GeneGraph:
    """The recipe's STRING file (input ``network``) as a gene graph."""
    return read_gene_graph(ctx.path("network"), lambda ids: ctx.resolve(ids, "gene"), params)


def read_gene_graph(path, resolve, params: GraphParams) -> GeneGraph:
    """A STRING file as a gene graph by the graph rules of ``params``; ``resolve(ids)`` gives canonical genes."""
    edges = read_string(path, tuple(params.channels), params.threshold, params.score, params.keep_at_least)
    nodes, rows, cols, weights, _ = gene_graph(edges, resolve)
    return GeneGraph(
        nodes, np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), np.asarray(weights, dtype=np.float64)
    )
