"""STRING scoring rule and the fast spectral embedding against scikit-learn, on the real STRING data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pertstore.producers.graph._string import CHANNELS, combine_scores, read_string
from pertstore.producers.graph.spectral import adjacency, largest_component, spectral_embedding
from scipy.linalg import subspace_angles
from sklearn.manifold import SpectralEmbedding


def test_combined_score_rule_reproduces_string_detailed_file(data_dir):
    table = pd.read_csv(data_dir / "network" / "string_v11_links_detailed_sample.tsv.gz", sep=r"\s+")
    channels = ["neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database", "textmining"]
    got = combine_scores(table[channels].to_numpy())
    # STRING rounds to integers and corrects homology-related channels: the bulk agrees within rounding
    close = np.abs(got - table.combined_score.to_numpy()) <= 2
    assert close.mean() > 0.9


def test_v12_table_recombined_without_textmining(data_dir):
    path = data_dir / "network" / "string_v12_human_notextmining.tsv.gz"
    all_channels = read_string(path, tuple(c for c in CHANNELS if c != "textmining"), threshold=0)
    table = pd.read_csv(path, sep="\t")
    assert len(all_channels) == len(table)
    assert np.abs(all_channels.score.to_numpy() - table.combined_score.to_numpy()).mean() < 15
    three = read_string(path)  # experiments + coexpression + database > 400
    assert 100_000 < len(three) < len(table)


def _subgraph(data_dir, n_top=800):
    edges = read_string(data_dir / "network" / "string_v12_human_notextmining.tsv.gz")
    top = pd.concat([edges.a, edges.b]).value_counts().index[:n_top]
    edges = edges[edges.a.isin(top) & edges.b.isin(top)]
    nodes = sorted(set(edges.a) | set(edges.b))
    index = {n: i for i, n in enumerate(nodes)}
    adj = adjacency(
        len(nodes), edges.a.map(index).to_numpy(), edges.b.map(index).to_numpy(), edges.score.to_numpy() / 1000
    )
    keep = largest_component(adj)
    return adj[keep][:, keep]


def test_fast_spectral_embedding_spans_sklearns_subspace(data_dir):
    adj = _subgraph(data_dir)
    ours = spectral_embedding(adj, 16)
    ref = SpectralEmbedding(16, affinity="precomputed", random_state=0).fit_transform(adj)
    cosines = np.cos(subspace_angles(ours, ref))
    assert cosines.min() >= 0.999


def test_string_spectral_set_carries_the_graph(store, data_dir):
    path = data_dir / "network" / "string_v12_human_notextmining.tsv.gz"
    card = store.produce(
        "string-spectral",
        source="string-spectral",
        params={"dims": 32},
        inputs={"network": str(path)},
        max_failed_fraction=0.2,
    )
    assert card.dim == 32 and card.n_rows > 14_000
    edges = read_string(path, threshold=700).sample(2000, random_state=0)
    x = store.get("string-spectral", list(edges.a) + list(edges.b))
    a, b = np.split(x.values, 2)
    ok = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    linked = (unit(a[ok]) * unit(b[ok])).sum(1)
    rng = np.random.default_rng(0)
    random_pairs = (unit(a[ok]) * unit(b[ok][rng.permutation(ok.sum())])).sum(1)
    auc = (linked[:, None] > random_pairs[None, :]).mean()
    assert auc > 0.8, auc
