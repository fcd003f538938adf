"""string-wavegc: the eigenpairs, the wavelet frames and the block equal upstream WaveGC's formulas written out
in numpy on a small fixed graph; training keeps the epoch of lowest validation loss over mini-batched steps;
the model predicts held-out STRING edges; the producer runs end to end through the store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from numpy.polynomial.chebyshev import chebval
from pertstore.producers.graph._common import GeneGraph
from pertstore.producers.graph._linkpred import split_edges, train_link_prediction
from pertstore.producers.graph._seeding import seeded
from pertstore.producers.graph.wavegc import (
    WaveBlock,
    WaveGC,
    WaveGCParams,
    WaveletGenerator,
    laplacian_eigenpairs,
    train_wavegc,
)
from pydantic import ValidationError


def _adjacency(n: int = 24, seed: int = 0) -> np.ndarray:
    """A connected random graph: a ring plus random chords (unweighted, symmetric)."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    a[np.arange(n), (np.arange(n) + 1) % n] = 1
    i, j = rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)
    a[i, j] = 1
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0)
    return a


def _laplacian(a: np.ndarray) -> np.ndarray:
    d = 1 / np.sqrt(a.sum(1))
    return np.eye(len(a)) - d[:, None] * a * d[None, :]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


def _layer_norm(x, w, b):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _upstream_frames(gen: WaveletGenerator, lam: np.ndarray, n_nodes: int, heads: int, max_scale: float) -> np.ndarray:
    """``Wave_generator.forward`` (WaveGC_node) written out in numpy, from the module's weights."""
    enc, d = gen.encoding, gen.encoding.encoder.dims
    div = np.exp(np.arange(0, d, 2) * (-math.log(10000) / d))
    pe = (lam * 100)[:, None] * div
    eig = np.concatenate([lam[:, None], np.sin(pe), np.cos(pe)], 1) @ _np(enc.encoder.linear.weight).T + _np(
        enc.encoder.linear.bias
    )
    x = _layer_norm(eig, _np(enc.mha_norm.weight), _np(enc.mha_norm.bias))
    q, k, v = np.split(x @ _np(enc.mha.in_proj_weight).T + _np(enc.mha.in_proj_bias), 3, axis=1)
    hd = d // heads
    out = np.concatenate(
        [
            _softmax(q[:, h * hd : (h + 1) * hd] @ k[:, h * hd : (h + 1) * hd].T / math.sqrt(hd))
            @ v[:, h * hd : (h + 1) * hd]
            for h in range(heads)
        ],
        1,
    )
    eig = eig + out @ _np(enc.mha.out_proj.weight).T + _np(enc.mha.out_proj.bias)
    f = _layer_norm(eig, _np(enc.ffn_norm.weight), _np(enc.ffn_norm.bias))
    f = f @ _np(enc.ffn[0].weight).T + _np(enc.ffn[0].bias)
    f = 0.5 * f * (1 + np.vectorize(math.erf)(f / math.sqrt(2)))  # exact GELU
    eig = eig + f @ _np(enc.ffn[2].weight).T + _np(enc.ffn[2].bias)

    def decode(lin):
        return (eig @ _np(lin.weight).T + _np(lin.bias)).sum(0) / (n_nodes + 1e-8)

    a, b = _softmax(decode(gen.decode_scaling)), _softmax(decode(gen.decode_wavelet))
    s = max_scale / (1 + np.exp(-decode(gen.decode_scales)))
    unit = np.eye(2 * len(a))
    scaling = sum(a[i] * 0.5 * (1 - chebval(lam - 1, unit[2 * i + 1])) for i in range(len(a)))
    arg = lam[:, None] * s[None, :]
    arg[arg > 2] = 0.0
    wavelets = sum(b[i] * 0.5 * (1 - chebval(arg - 1, unit[2 * i])) for i in range(len(b)))
    frames = np.concatenate([scaling[:, None], wavelets], 1)
    return frames / (np.linalg.norm(frames, axis=1, keepdims=True) + 1e-8)


def test_eigenpairs_are_the_smallest_of_the_normalised_laplacian():
    a = _adjacency(60)
    want = np.linalg.eigvalsh(_laplacian(a))[:12]
    lam, u = laplacian_eigenpairs(sp.csr_matrix(a), 12)
    np.testing.assert_allclose(lam, want, atol=1e-8)
    np.testing.assert_allclose(_laplacian(a) @ u, u * lam, atol=1e-7)  # eigenvectors of L
    np.testing.assert_allclose(u.T @ u, np.eye(12), atol=1e-8)


def test_frames_equal_upstream_generator():
    a = _adjacency()
    lam, _ = laplacian_eigenpairs(sp.csr_matrix(a), 18)  # 18 of 24: sums over eigenvalues / node count differ
    gen = WaveletGenerator(dims=16, heads=4, terms=5, scales=3, max_scale=10.0, dropout=0.1, tight=True).double()
    _randomise(gen, 0)
    gen.eval()
    with torch.no_grad():
        got = gen(torch.from_numpy(lam), len(a)).numpy()
        s = gen.coefficients(torch.from_numpy(lam), len(a))[2].numpy()
    want = _upstream_frames(gen, lam, len(a), heads=4, max_scale=10.0)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert (lam[:, None] * s[None, :] > 2).any()  # the cut-off is exercised
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)  # tight frames
    # admissibility before normalisation: the scaling function passes frequency 0, every wavelet stops it
    gen.tight = False
    with torch.no_grad():
        at_zero = gen(torch.zeros(1, dtype=torch.float64), len(a)).numpy()[0]
    np.testing.assert_allclose(at_zero, [1.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_block_equals_upstream_wave_layer():
    a = _adjacency()
    n, d, scales = len(a), 18, 3  # blocks of 4, 4, 4 and 6 columns (the remainder goes to the last filter)
    _, u = laplacian_eigenpairs(sp.csr_matrix(a), 10)
    frames = np.abs(np.random.default_rng(1).normal(size=(10, scales + 1)))
    params = WaveGCParams(dims=d, scales=scales, heads=2, act="gelu")
    block = WaveBlock(params).double()
    _randomise(block, 1)
    for bn in (block.norm_local, block.norm_wave, block.norm_ff):  # eval-mode BatchNorm with fixed statistics
        bn.running_mean.copy_(torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
        bn.running_var.copy_(torch.rand(d, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5)
    block.eval()
    x = np.random.default_rng(4).normal(size=(n, d))
    rows, cols = np.nonzero(a)
    edge_index = torch.from_numpy(np.stack([rows, cols]))
    with torch.no_grad():
        got = block(torch.from_numpy(x), torch.from_numpy(u), torch.from_numpy(frames), edge_index, None).numpy()

    def gelu(z):
        return 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))

    def lin(m, z):
        return z @ _np(m.weight).T + _np(m.bias)

    def bn(m, z):
        return (z - _np(m.running_mean)) / np.sqrt(_np(m.running_var) + m.eps) * _np(m.weight) + _np(m.bias)

    # Wave_Conv_arxiv: per filter t a Linear W_t (rows of the stacked Linear), U f_t U^T, act, U f_t U^T
    w, bias, comb, start = _np(block.wave.lin.weight), _np(block.wave.lin.bias), [], 0
    for t, width in enumerate([d // 4] * scales + [d - scales * (d // 4)]):
        h = x @ w[start : start + width].T + bias[start : start + width]
        h = u @ (frames[:, t : t + 1] * (u.T @ h))
        h = u @ (frames[:, t : t + 1] * (u.T @ gelu(h)))
        comb.append(h)
        start += width
    wave = gelu(lin(block.wave.fusion, np.concatenate(comb, 1)))
    # GCNConv: symmetric normalisation with self-loops, Linear without bias, then the bias
    a_hat = a + np.eye(n)
    dinv = 1 / np.sqrt(a_hat.sum(1))
    local = (dinv[:, None] * a_hat * dinv[None, :]) @ (x @ _np(block.local.lin.weight).T) + _np(block.local.bias)
    h = bn(block.norm_local, x + local) + bn(block.norm_wave, x + wave)
    ff = lin(block.ff[3], gelu(lin(block.ff[0], h)))
    np.testing.assert_allclose(got, bn(block.norm_ff, h + ff), atol=1e-9)


def test_params_refuse_heads_that_do_not_divide_dims():
    with pytest.raises(ValidationError, match="divisible by heads"):
        WaveGCParams(dims=30, heads=8)


def _community_graph(n: int = 90, seed: int = 0) -> GeneGraph:
    """Three communities: dense inside, sparse across."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 3
    i, j = np.triu_indices(n, 1)
    p = np.where(group[i] == group[j], 0.25, 0.01)
    keep = rng.random(len(i)) < p
    return GeneGraph([f"g{k}" for k in range(n)], i[keep], j[keep], np.ones(keep.sum()))


def test_training_keeps_the_lowest_validation_loss_over_mini_batches():
    graph = _community_graph()
    split = split_edges(graph, 0.1, seed=0)
    params = WaveGCParams(dims=16, heads=2, epochs=6, patience=6, batch_size=64, eig_ratio=0.2)
    assert WaveGCParams().select == "loss" and WaveGCParams().batch_size == 4096 and WaveGCParams().clip == 1.0
    lam, u = laplacian_eigenpairs(graph.adjacency(), 18)
    edge_index, _ = split.message_edges()
    with seeded(0):
        model = WaveGC(graph.n, lam, u, edge_index, None, params)
        calls = []
        model.register_forward_hook(lambda *_: calls.append(model.training))
        result = train_link_prediction(model, split, graph.n, params)
    steps = math.ceil(split.train.shape[1] / 64)
    assert steps > 1 and calls.count(True) == len(result.val_loss) * steps  # mini-batched steps every epoch
    assert result.best_epoch == int(np.argmin(result.val_loss))
    with torch.no_grad():
        np.testing.assert_array_equal(result.embedding, model().numpy())  # the kept epoch's weights
    again = train_wavegc(split, graph.n, params)  # deterministic under the seed
    np.testing.assert_array_equal(again.embedding, train_wavegc(split, graph.n, params).embedding)


def test_wavegc_predicts_held_out_string_edges(string_top, neighbour_gap):
    split = split_edges(string_top, 0.1, seed=0)
    result = train_wavegc(split, string_top.n, WaveGCParams(dims=32, heads=4, epochs=6, lr=0.005))
    assert result.best_auc > 0.9, result.history
    close, random = neighbour_gap(result.embedding, string_top)
    assert close > random + 0.1, (close, random)


def test_produce_through_the_store_at_the_papers_graph_rule(store, string_small_file):
    params = {"dims": 16, "heads": 2, "epochs": 2, "terms": 3, "score": "combined", "threshold": 0}
    card = store.produce(
        "string-wavegc", source="string-wavegc", params=params, inputs={"network": str(string_small_file)}
    )
    assert card.dim == 16 and not card.failed and card.n_rows > 250
    recorded = card.recipe.params
    assert (recorded["max_scale"], recorded["tight_frames"], recorded["select"], recorded["eig_ratio"]) == (
        10.0,
        True,
        "loss",
        0.05,
    )
    assert np.isfinite(store.get("string-wavegc").values).all()
