"""The STRING graph rules (channels, score, threshold, keep-at-least-k) against the reference's rules written
directly in pandas, on the data directory's STRING ``protein.links.detailed`` sample."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
from pertstore.producers.graph._string import read_string

from pertstore.errors import InvalidInputError

SAMPLE = ("network", "string_v11_links_detailed_sample.tsv.gz")


@pytest.fixture(scope="module")
def sample(data_dir):
    return data_dir.joinpath(*SAMPLE)


def reference_adaptive(df: pd.DataFrame, threshold: float, k: int) -> pd.DataFrame:
    """``train_gnn/filter_by_score_adaptive.py`` as written (score column ``combined_score``)."""
    original = Counter(df.protein1) + Counter(df.protein2)
    above, below = df[df.combined_score >= threshold], df[df.combined_score < threshold]
    current = Counter(above.protein1) + Counter(above.protein2)
    by_node, index = defaultdict(list), {}
    for idx, row in zip(below.index, below.itertuples(index=False)):
        by_node[row.protein1].append((row.protein2, row.combined_score, idx))
        by_node[row.protein2].append((row.protein1, row.combined_score, idx))
        index[(row.protein1, row.protein2)] = idx
    for node in by_node:
        by_node[node].sort(key=lambda x: x[1], reverse=True)
    rescued = set()
    for node in set(df.protein1) | set(df.protein2):
        target = min(k, original[node])
        if current.get(node, 0) < target:
            for neighbour, _, idx in by_node.get(node, [])[: target - current.get(node, 0)]:
                rescued.add(idx)
                if (neighbour, node) in index:
                    rescued.add(index[(neighbour, node)])
    return pd.concat([above, below.loc[sorted(rescued)]])


def string_rule(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """STRING's combination of channel scores (von Mering 2005), prior 0.041, written out per channel."""
    combined = np.zeros(len(table))
    for c in columns:
        s = np.clip((table[c].to_numpy() / 1000 - 0.041) / (1 - 0.041), 0, None)
        combined = 1 - (1 - combined) * (1 - s)
    return 1000 * (combined + 0.041 * (1 - combined))


def undirected(a, b, score) -> dict:
    """``{sorted pair: best score}`` of an edge list (the graph every producer builds from it)."""
    edges: dict = {}
    for x, y, s in zip(a, b, score):
        key = (min(x, y), max(x, y))
        edges[key] = max(edges.get(key, -1), s)
    return edges


def test_sample_carries_every_channel(sample):
    table = pd.read_csv(sample, sep=" ")
    assert {"textmining", "experimental", "combined_score"} <= set(table.columns) and len(table) == 10_000


@pytest.mark.parametrize("threshold,k", [(900, 0), (900, 1), (700, 2), (900, 20), (0, 20)])
def test_combined_score_with_keep_at_least_k_equals_the_reference_filter(sample, threshold, k):
    table = pd.read_csv(sample, sep=" ")
    ref = reference_adaptive(table, threshold, k) if k else table[table.combined_score >= threshold]
    got = read_string(sample, score="combined", threshold=threshold, keep=k)
    expected = undirected(ref.protein1.str[5:], ref.protein2.str[5:], ref.combined_score)  # without "9606."
    assert undirected(got.a, got.b, got.score) == expected
    if k == 1:  # the rescue matters here: more than the threshold alone, fewer than every row
        assert (table.combined_score >= threshold).sum() < len(got) < len(table)
    if k == 20:  # each protein has fewer than 20 rows in the sample: the rescue keeps them all
        assert len(got) == len(table)


@pytest.mark.parametrize(
    "channels",
    [
        ["experiments", "coexpression", "database"],
        ["experiments", "coexpression", "database", "textmining"],
        ["neighborhood", "fusion", "cooccurence", "coexpression", "experiments", "database", "textmining"],
    ],
)
def test_recombined_channels_above_threshold_equal_strings_rule(sample, channels):
    table = pd.read_csv(sample, sep=" ")
    columns = ["experimental" if c == "experiments" else c for c in channels]
    score = string_rule(table, columns)
    keep = score >= 400
    got = read_string(sample, tuple(channels), threshold=400)
    assert got.a.tolist() == table.protein1[keep].str[5:].tolist()
    np.testing.assert_allclose(got.score.to_numpy(), score[keep], rtol=1e-12)
    assert 0 < len(got) < len(table)


def test_text_mining_is_refused_where_the_file_has_none(data_dir):
    with pytest.raises(InvalidInputError, match="textmining"):
        read_string(data_dir / "network" / "string_v12_human_notextmining.tsv.gz", ("textmining",))


def test_spectral_set_is_built_on_the_recipes_rules(store, string_small_file):
    from pertstore.producers.graph._common import GeneGraph
    from scipy.sparse.csgraph import connected_components

    rules = {"score": "combined", "threshold": 900, "keep_at_least": 3}
    card = store.produce(
        "string-spectral",
        source="spectral-rules",
        params={"dims": 8, **rules},
        inputs={"network": str(string_small_file)},
        max_failed_fraction=0.5,
    )
    edges = read_string(string_small_file, threshold=900, score="combined", keep=3)
    assert len(edges) > (pd.read_csv(string_small_file, sep="\t").combined_score >= 900).sum()  # the rescue added
    graph = GeneGraph.from_edges(edges)
    _, labels = connected_components(graph.adjacency(), directed=False)
    assert card.dim == 8 and card.n_rows == np.bincount(labels).max()
    with pytest.raises(InvalidInputError, match="textmining"):
        store.produce(
            "string-spectral",
            source="spectral-text",
            params={"channels": ["textmining"]},
            inputs={"network": str(string_small_file)},
        )
