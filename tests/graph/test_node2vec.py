"""node2vec: the weighted p/q walk sampler against node2vec's transition rule, determinism, and
link prediction on held-out edges of the real STRING network."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pertstore.producers.graph._linkpred import link_auc, split_edges
from pertstore.producers.graph._walks import WalkGraph, random_walks
from pertstore.producers.graph.node2vec import Node2VecParams, WeightedNode2Vec, train_node2vec
from torch_geometric.nn import Node2Vec


def _toy() -> sp.csr_matrix:
    # 0-1, 0-2, 0-3, 1-2, 3-4 with distinct weights
    rows, cols, w = [0, 0, 0, 1, 3], [1, 2, 3, 2, 4], [1.0, 2.0, 3.0, 0.5, 1.5]
    a = sp.coo_matrix((w, (rows, cols)), shape=(5, 5))
    return (a + a.T).tocsr()


def test_first_step_is_proportional_to_weights():
    g = WalkGraph(_toy())
    walks = random_walks(g, np.zeros(200_000, dtype=np.int64), 1, 1.0, 1.0, np.random.default_rng(0))
    freq = np.bincount(walks[:, 1], minlength=5)[1:4] / len(walks)
    np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6], atol=0.005)


@pytest.mark.parametrize("p,q", [(0.5, 4.0), (0.3, 0.7)])  # the second: SPACE's, the recipe default
def test_second_step_follows_node2vec_bias(p, q):
    adj = _toy()
    g = WalkGraph(adj)
    walks = random_walks(g, np.full(400_000, 1, dtype=np.int64), 2, p, q, np.random.default_rng(1))
    came = walks[walks[:, 1] == 0]  # 1 -> 0, then: back to 1 (1/p), to 2 (neighbour of 1: 1), to 3 (1/q)
    w = np.array([adj[0, 1] / p, adj[0, 2] * 1.0, adj[0, 3] / q])
    freq = np.array([(came[:, 2] == k).mean() for k in (1, 2, 3)])
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.006)


def test_walkers_on_nodes_without_edges_stay_put():
    adj = sp.block_diag([_toy(), sp.csr_matrix((1, 1))]).tocsr()  # node 5 has no edge
    walks = random_walks(WalkGraph(adj), np.array([5, 5, 0, 3]), 4, 0.5, 2.0, np.random.default_rng(0))
    assert (walks[:2] == 5).all() and not (walks[2:] == 5).any()


def test_walks_follow_edges_and_are_seeded(string_top):
    g = WalkGraph(string_top.adjacency())
    starts = np.arange(string_top.n)
    a = random_walks(g, starts, 10, 2.0, 0.5, np.random.default_rng(3))
    b = random_walks(g, starts, 10, 2.0, 0.5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert g.has_edge(a[:, :-1].ravel(), a[:, 1:].ravel()).all()


def test_node2vec_predicts_held_out_string_edges(string_top, neighbour_gap):
    split = split_edges(string_top, 0.1, seed=0)
    rows, cols = split.train.numpy()
    train = sp.coo_matrix((split.train_weight.numpy(), (rows, cols)), shape=(string_top.n,) * 2)
    train = (train + train.T).tocsr()
    params = Node2VecParams(
        dims=32,
        walk_length=10,
        context_size=5,
        walks_per_node=2,
        epochs=20,
        batch_size=64,
        lr=0.05,
        p=1.0,
        q=1.0,
        num_negative_samples=1,
    )
    emb = train_node2vec(train, params)
    assert emb.shape == (string_top.n, 32)
    np.testing.assert_array_equal(emb, train_node2vec(train, params))  # deterministic under a seed
    neg = torch.from_numpy(np.random.default_rng(0).integers(0, string_top.n, (2, split.val.shape[1])))
    auc = link_auc(torch.from_numpy(emb), split.val, neg)
    assert auc > 0.75, auc
    close, random = neighbour_gap(emb, string_top)
    assert close > random + 0.1, (close, random)


def test_walk_loss_equals_torch_geometric_loss_on_the_windows(string_top):
    model = WeightedNode2Vec(WalkGraph(string_top.adjacency()), 16, 12, 5, 3, 1.0, 2.0, 2, seed=0)
    pos, neg = model.walks(torch.arange(40))
    assert pos.shape == (120, 12) and neg.shape == (240, 12) and (neg[:, 0] == torch.arange(40).repeat(6)).all()
    fast = model.walk_loss(pos, neg)
    fast.backward()
    fast_grad = model.embedding.weight.grad.clone()
    model.embedding.weight.grad = None
    reference = Node2Vec.loss(model, model.windows(pos), model.windows(neg))
    reference.backward()
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, model.embedding.weight.grad, rtol=1e-4, atol=1e-7)
    pos_windows, neg_windows = model.sample(torch.arange(40))  # torch-geometric's own API still works
    assert pos_windows.shape == (120 * 8, 5) and neg_windows.shape == (240 * 8, 5)
    assert torch.isfinite(model.loss(pos_windows, neg_windows))
