"""``string-wavegc``: wavelet graph convolution (WaveGC, Liu et al.) trained by link prediction on STRING.

WaveGC builds admissible graph wavelets from Chebyshev terms of the normalised Laplacian ``L``
split by parity: a low-pass scaling function from odd terms,
``h(l) = sum_i a_i (1 - T_{2i+1}(l - 1)) / 2`` (``h(0) = 1``), and band-pass wavelets from even
terms at learned scales ``s_j``, ``g_j(l) = sum_i b_i (1 - T_{2i}(s_j l - 1)) / 2`` (``g(0) = 0``),
with ``a``, ``b`` non-negative and summing to one. A layer maps the input to one block per filter
``F`` (``W_F x``), filters it, applies ReLU, filters again (the matrix-valued kernel of the paper's
code), concatenates the blocks and fuses them with a linear layer; residual connection and
LayerNorm as in ``string-gnn``. See docs/graph.md for the differences from the paper's code.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pertstore.errors import InvalidInputError
from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._chebyshev import (chebyshev_basis, chebyshev_nodes, chebyshev_terms,
                                                  interpolation_matrix, normalised_adjacency)
from pertstore.producers.graph._common import load_gene_graph
from pertstore.producers.graph._linkpred import (EdgeSplit, LinkPredParams, LinkPredResult, split_edges,
                                                 train_link_prediction)
from pertstore.producers.graph._seeding import seeded


class WaveGCParams(LinkPredParams):
    depth: int = Field(2, ge=1, le=8)
    scales: int = Field(3, ge=1, le=8)
    """Wavelet scales ``J`` (plus one scaling function)."""
    terms: int = Field(7, ge=1, le=16)
    """Chebyshev terms per filter family: odd orders 1..2K-1 (scaling), even orders 0..2K-2 (wavelets)."""
    batch_size: int = Field(1 << 20, ge=1)
    """Training edges per step; the default takes all of STRING's in one step (one encoder pass per epoch)."""


class WaveletFilters(nn.Module):
    """One scaling function and ``scales`` wavelets as Chebyshev coefficients in ``T_k(L - I)``."""

    def __init__(self, scales: int, terms: int) -> None:
        super().__init__()
        self.terms = terms
        self.m = 2 * terms  # highest order 2K-1: 2K coefficients, interpolated exactly at 2K nodes
        self.a = nn.Parameter(torch.zeros(terms))
        self.b = nn.Parameter(torch.zeros(terms))
        self.s = nn.Parameter(torch.logit(torch.linspace(0.9, 0.25, scales)) if scales > 1 else torch.zeros(1))
        self.register_buffer("nodes", chebyshev_nodes(self.m))
        self.register_buffer("interp", interpolation_matrix(self.m))

    def responses(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        """``[1 + scales, len(eigenvalues)]``: the scaling function and wavelets at ``eigenvalues`` in [0, 2]."""
        a = torch.sigmoid(self.a.double())
        b = torch.sigmoid(self.b.double())
        a, b = a / a.sum(), b / b.sum()
        x = eigenvalues.double()
        odd = chebyshev_basis(x - 1, 2 * self.terms - 1)[1::2]  # T_1, T_3, ..
        scaling = (a[:, None] * (1 - odd) / 2).sum(0)
        scaled = torch.sigmoid(self.s.double())[:, None] * x[None, :] - 1  # [J, n] in [-1, 1]
        even = chebyshev_basis(scaled, 2 * self.terms - 2)[0::2]  # [K, J, n]: T_0, T_2, ..
        wavelets = (b[:, None, None] * (1 - even) / 2).sum(0)
        return torch.cat([scaling[None], wavelets])

    def coefficients(self) -> torch.Tensor:
        """``[1 + scales, 2K]``: each filter's coefficients on ``T_0(L - I) .. T_{2K-1}(L - I)``."""
        return (self.responses(self.nodes + 1) @ self.interp.T).float()


class WaveConv(nn.Module):
    """A WaveGC layer: per filter a linear block, filter, ReLU, filter; concatenated and fused."""

    def __init__(self, dims: int, scales: int, terms: int, dropout: float) -> None:
        super().__init__()
        self.filters = WaveletFilters(scales, terms)
        width = [dims // (scales + 1)] * scales
        self.width = [dims - sum(width)] + width
        self.lin = nn.Linear(dims, dims)
        self.fusion = nn.Linear(dims, dims)
        self.dropout = nn.Dropout(dropout)

    def _filter(self, norm_adj, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        terms = torch.stack(chebyshev_terms(norm_adj, x, coeffs.shape[1]))  # [m, n, dims]
        blocks = torch.split(terms, self.width, dim=2)
        return torch.cat([torch.einsum("m,mnd->nd", c, blk) for c, blk in zip(coeffs, blocks)], dim=1)

    def forward(self, x: torch.Tensor, norm_adj) -> torch.Tensor:
        coeffs = self.filters.coefficients()
        h = self.dropout(torch.relu(self._filter(norm_adj, self.lin(x), coeffs)))
        h = self._filter(norm_adj, h, coeffs)
        return self.dropout(torch.relu(self.fusion(h)))


class WaveGC(nn.Module):
    """Learned node embeddings refined by residual WaveGC layers with LayerNorm over a fixed graph."""

    def __init__(self, n: int, norm_adj, params: WaveGCParams) -> None:
        super().__init__()
        self.norm_adj = norm_adj
        self.embedding = nn.Embedding(n, params.dims)
        self.layers = nn.ModuleList([WaveConv(params.dims, params.scales, params.terms, params.dropout)
                                     for _ in range(params.depth)])
        self.norms = nn.ModuleList([nn.LayerNorm(params.dims) for _ in range(params.depth)])

    def forward(self) -> torch.Tensor:
        h = self.embedding.weight
        for layer, norm in zip(self.layers, self.norms):
            h = norm(h + layer(h, self.norm_adj))
        return h


def train_wavegc(split: EdgeSplit, n: int, params: WaveGCParams) -> LinkPredResult:
    """Build and train WaveGC on ``split``'s training edges (filters on their normalised Laplacian)."""
    import scipy.sparse as sp

    rows, cols = split.train.numpy()
    adj = sp.coo_matrix((split.train_weight.numpy().astype(np.float64), (rows, cols)), shape=(n, n))
    norm_adj = normalised_adjacency(adj + adj.T)
    if params.full_graph:
        raise InvalidInputError("string-wavegc: full_graph is not supported (its filters are fixed on the training graph)")
    with seeded(params.seed):
        return train_link_prediction(WaveGC(n, norm_adj, params), split, n, params)


class WaveGCProducer(Producer):
    """WaveGC link-prediction embeddings of the STRING gene graph."""

    name = "string-wavegc"
    kind = "gene"
    Params = WaveGCParams
    inputs = {"network": "file"}
    chunked = False
    description = "WaveGC (Chebyshev wavelet graph convolution) trained by link prediction on STRING"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import scipy

        return {"torch": torch.__version__, "scipy": scipy.__version__}

    def compute(self) -> Batch:
        graph = load_gene_graph(self.ctx, self.params)
        result = train_wavegc(split_edges(graph, self.params.val_fraction, self.params.seed), graph.n, self.params)
        return Batch(graph.nodes, result.embedding.astype(np.float32))
