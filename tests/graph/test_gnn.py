"""string-gnn: bit-identical under a seed, best-validation checkpoint, early stopping, and link
prediction on held-out edges of the real STRING network (GCN and GIN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pertstore.producers.graph._linkpred import link_auc, split_edges
from pertstore.producers.graph.gnn import GNNParams, train_gnn


@pytest.mark.parametrize("layer", ["gcn", "gin"])
def test_gnn_predicts_held_out_string_edges(string_top, neighbour_gap, layer):
    split = split_edges(string_top, 0.1, seed=0)
    assert split.val.shape[1] == round(0.1 * len(string_top.rows))
    params = GNNParams(
        layer=layer, dims=32, depth=2, epochs=25, lr=0.02, batch_size=65536, select="auc", full_graph=False
    )
    result = train_gnn(split, string_top.n, params)
    assert result.best_auc > 0.85, (layer, result.history)
    close, random = neighbour_gap(result.embedding, string_top)
    assert close > random + 0.1, (close, random)


def test_gnn_is_bit_identical_under_a_seed_and_keeps_the_best_epoch(string_top):
    split = split_edges(string_top, 0.1, seed=0)
    params = GNNParams(
        dims=16,
        depth=2,
        epochs=12,
        patience=3,
        lr=0.3,
        dropout=0.2,
        batch_size=65536,
        select="auc",
        full_graph=False,
        clip=None,
    )
    a, b = train_gnn(split, string_top.n, params), train_gnn(split, string_top.n, params)
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert a.history == b.history
    other = train_gnn(split, string_top.n, params.model_copy(update={"seed": 1}))
    assert not np.array_equal(a.embedding, other.embedding)
    # the embedding is the best validation epoch's, and training stops `patience` epochs after it
    assert a.best_auc == max(a.history) and a.best_epoch == int(np.argmax(a.history))
    assert link_auc(torch.from_numpy(a.embedding), split.val, a.val_neg) == pytest.approx(a.best_auc, abs=1e-12)
    assert len(a.history) < params.epochs and len(a.history) - 1 - a.best_epoch == params.patience


def test_seeded_training_leaves_global_random_state_alone():
    import random

    from pertstore.producers.graph._seeding import seeded

    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with seeded(3):
        first = (random.random(), np.random.rand(), torch.rand(1).item())
        assert torch.are_deterministic_algorithms_enabled()
    with seeded(3):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2]) and not torch.are_deterministic_algorithms_enabled()


def test_training_is_bit_identical_while_another_thread_draws_from_random(string_top):
    """A Dask worker's event loop draws from Python's global `random` while a task trains: the negatives come
    from a generator of their own, so the embedding stays the same (it did not, with torch-geometric's
    `negative_sampling`, and two `make demo` runs stored different string-gin sets under one version)."""
    import random
    import threading

    split = split_edges(string_top, 0.1, seed=0)
    params = GNNParams(dims=16, depth=2, epochs=3, lr=0.3, batch_size=4096, full_graph=False, clip=None)
    quiet = train_gnn(split, string_top.n, params)
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()

    noisy_thread = threading.Thread(target=draw, daemon=True)
    noisy_thread.start()
    try:
        noisy = train_gnn(split, string_top.n, params)
    finally:
        stop.set()
        noisy_thread.join()
    np.testing.assert_array_equal(quiet.embedding, noisy.embedding)


def test_negative_sampler_draws_distinct_non_edges_reproducibly():
    from pertstore.producers.graph._linkpred import NegativeSampler

    from pertstore.errors import InvalidInputError

    rng = np.random.default_rng(0)
    n = 40
    edges = torch.from_numpy(rng.integers(0, n, (2, 600)))
    pairs = NegativeSampler(edges, n, np.random.default_rng(5))(300).numpy()
    edge_set = set(zip(*edges.numpy().tolist()))
    drawn = list(zip(*pairs.tolist()))
    assert pairs.shape == (2, 300) and len(set(drawn)) == 300
    assert not edge_set & set(drawn) and all(a != b for a, b in drawn) and pairs.min() >= 0 and pairs.max() < n
    again = NegativeSampler(edges, n, np.random.default_rng(5))(300).numpy()
    np.testing.assert_array_equal(pairs, again)
    # every non-edge can be drawn: over many draws the sampler covers all of them
    sampler = NegativeSampler(edges, n, np.random.default_rng(1))
    seen = {p for _ in range(1000) for p in zip(*sampler(50).numpy().tolist())}  # about 46 draws of each
    non_edges = {(a, b) for a in range(n) for b in range(n) if a != b} - edge_set
    assert seen == non_edges
    complete = torch.tensor([(a, b) for a in range(4) for b in range(4) if a != b]).T
    with pytest.raises(InvalidInputError, match="no non-edges"):
        NegativeSampler(complete, 4, np.random.default_rng(0))
