"""string-wavegc: the Chebyshev wavelet filters equal their spectral definition (eigendecomposition),
are admissible, have correct gradients, and the model predicts held-out STRING edges."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pertstore.producers.graph._chebyshev import _SymmetricMatmul, chebyshev_terms, normalised_adjacency
from pertstore.producers.graph._linkpred import split_edges
from pertstore.producers.graph.wavegc import WaveGCParams, WaveletFilters, train_wavegc


def _graph(n: int = 60) -> sp.csr_matrix:
    a = sp.random(n, n, density=0.1, random_state=0)
    return (a + a.T).tocsr()


def test_filters_equal_their_spectral_definition():
    norm_adj = normalised_adjacency(_graph()).astype(np.float64)
    eigenvalues, vectors = np.linalg.eigh(np.eye(norm_adj.shape[0]) - norm_adj.toarray())
    filters = WaveletFilters(scales=3, terms=7)
    with torch.no_grad():
        for p in (filters.a, filters.b, filters.s):
            p.normal_(generator=torch.Generator().manual_seed(0))
    x = torch.randn(norm_adj.shape[0], 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    coeffs = filters.coefficients().detach().double()
    terms = chebyshev_terms(norm_adj, x, coeffs.shape[1])
    responses = filters.responses(torch.from_numpy(eigenvalues)).detach().numpy()
    for c, response in zip(coeffs, responses):
        got = sum(ck * t for ck, t in zip(c, terms)).numpy()
        want = vectors @ (response[:, None] * (vectors.T @ x.numpy()))
        np.testing.assert_allclose(got, want, atol=1e-6)
    # admissibility: the scaling function passes frequency 0, the wavelets do not
    at = filters.responses(torch.tensor([0.0, 2.0])).detach().numpy()
    np.testing.assert_allclose(at[0, 0], 1.0, atol=1e-12)
    np.testing.assert_allclose(at[1:, 0], 0.0, atol=1e-12)


def test_sparse_product_gradient():
    norm_adj = normalised_adjacency(_graph(12)).astype(np.float64)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _SymmetricMatmul.apply(t, norm_adj), (x,))


def test_wavegc_predicts_held_out_string_edges(string_top, neighbour_gap):
    split = split_edges(string_top, 0.1, seed=0)
    params = WaveGCParams(dims=32, epochs=25, lr=0.02, terms=4)
    result = train_wavegc(split, string_top.n, params)
    assert result.best_auc > 0.8, result.history
    np.testing.assert_array_equal(result.embedding, train_wavegc(split, string_top.n, params).embedding)
    close, random = neighbour_gap(result.embedding, string_top)
    assert close > random + 0.1, (close, random)
