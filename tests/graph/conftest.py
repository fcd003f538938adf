"""Shared inputs of the graph tests: a dense, fast subgraph of the real STRING v12 network."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.graph._common import GeneGraph
from pertstore.producers.graph._string import read_string

STRING = ("network", "string_v12_human_notextmining.tsv.gz")


@pytest.fixture(scope="session")
def string_top(data_dir) -> GeneGraph:
    """STRING (experiments + coexpression + database > 400) among its 800 best-connected genes."""
    edges = read_string(data_dir.joinpath(*STRING))
    top = pd.concat([edges.a, edges.b]).value_counts().index[:800]
    return GeneGraph.from_edges(edges[edges.a.isin(top) & edges.b.isin(top)])


@pytest.fixture(scope="session")
def string_small_file(data_dir, tmp_path_factory):
    """The rows of the real v12 table among its 300 best-connected genes, as a file for producers."""
    table = pd.read_csv(data_dir.joinpath(*STRING), sep="\t")
    top = pd.concat([table.entrez_a, table.entrez_b]).value_counts().index[:300]
    path = tmp_path_factory.mktemp("string") / "string_small.tsv.gz"
    table[table.entrez_a.isin(top) & table.entrez_b.isin(top)].to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="session")
def neighbour_gap():
    """:func:`shared_neighbour_gap` as a fixture (test modules here are not importable packages)."""
    return shared_neighbour_gap


def shared_neighbour_gap(emb: np.ndarray, graph: GeneGraph, min_shared: int = 20, seed: int = 0) -> tuple[float, float]:
    """Mean cosine of gene pairs sharing at least ``min_shared`` interaction partners, and of random pairs."""
    adj = (graph.adjacency() > 0).astype(np.float32)
    shared = (adj @ adj).tocoo()
    keep = (shared.data >= min_shared) & (shared.row < shared.col)
    a, b = shared.row[keep], shared.col[keep]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    ra, rb = rng.integers(0, graph.n, len(a)), rng.integers(0, graph.n, len(a))
    return float((unit[a] * unit[b]).sum(1).mean()), float((unit[ra] * unit[rb]).sum(1).mean())
