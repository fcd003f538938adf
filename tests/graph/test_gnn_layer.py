"""string-gnn's layer and model against train_gnn's formula written out on fixed weights; a tiny graph end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.producers.graph._common import GeneGraph
from pertstore.producers.graph._linkpred import split_edges
from pertstore.producers.graph.gnn import GNNParams, ResidualGNN, train_gnn


def _graph():
    rng = np.random.default_rng(0)
    n, e = 12, 30
    pairs = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(e)}
    rows, cols = np.array(sorted(pairs)).T
    return n, torch.tensor(np.stack([np.r_[rows, cols], np.r_[cols, rows]])), torch.rand(2 * len(rows))


def _layer_norm(x, ln):
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / np.sqrt(2)))


@pytest.mark.parametrize("layer", ["gcn", "gin"])
def test_gnn_equals_train_gnn_formula_on_fixed_weights(layer):
    torch.manual_seed(0)
    n, edges, weight = _graph()
    model = ResidualGNN(n, edges, weight, 8, 3, layer, dropout=0.5).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerNorm/eps away from their neutral initial values
            p.add_(0.1 * torch.randn_like(p))
    a = torch.zeros(n, n)
    a[edges[1], edges[0]] = weight  # messages flow source -> target
    x = model.embedding.weight.detach()
    for lay in model.layers:
        h = _layer_norm(x, lay.norm)
        if layer == "gcn":  # D^-1/2 (A + I) D^-1/2 h W^T + b, weighted degrees
            ai = a + torch.eye(n)
            d = ai.sum(1).rsqrt()
            m = (d[:, None] * ai * d[None, :]) @ (h @ lay.conv.lin.weight.T) + lay.conv.bias
        else:  # MLP((1 + eps) h + sum of neighbours), weights ignored
            mlp = lay.conv.nn
            s = (1 + lay.conv.eps) * h + (a > 0).float() @ h
            m = mlp[2](torch.relu(mlp[0](s)))
        x = x + _gelu(m)  # dropout is the identity in eval
    expected = x @ model.out.weight.T + model.out.bias
    torch.testing.assert_close(model(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(edges, weight), expected, rtol=1e-5, atol=1e-5)


def test_gnn_defaults_are_train_gnns():
    p = GNNParams()
    assert (p.dims, p.depth, p.dropout, p.lr, p.epochs, p.patience, p.batch_size, p.clip, p.select, p.full_graph) == (
        256,
        3,
        0.1,
        1e-3,
        120,
        10,
        4096,
        1.0,
        "loss",
        True,
    )


def test_tiny_graph_trains_end_to_end_selected_by_validation_loss():
    rng = np.random.default_rng(1)

    blocks = [
        (a, b)
        for k in range(4)
        for a in range(10 * k, 10 * k + 10)
        for b in range(a + 1, 10 * k + 10)
        if rng.random() < 0.6
    ]
    edges = pd.DataFrame({"a": [f"g{a:02d}" for a, _ in blocks], "b": [f"g{b:02d}" for _, b in blocks], "score": 900.0})
    graph = GeneGraph.from_edges(edges)
    split = split_edges(graph, 0.1, seed=0)
    params = GNNParams(dims=16, depth=2, epochs=30, patience=5, batch_size=64, lr=0.01)
    result = train_gnn(split, graph.n, params)
    assert result.embedding.shape == (graph.n, 16) and np.isfinite(result.embedding).all()
    assert result.best_epoch == int(np.argmin(result.val_loss)) and result.val_loss[-1] >= min(result.val_loss)
    assert result.val_loss[result.best_epoch] < result.val_loss[0]
    assert result.best_auc > 0.8, result.history
    # the embedding passes messages over every edge, validation edges included (train_gnn's save_embeddings)
    with torch.no_grad():
        full, train_only = result.encoder(*split.all_edges()).numpy(), result.encoder().numpy()
    np.testing.assert_array_equal(result.embedding, full)
    assert not np.allclose(result.embedding, train_only)
