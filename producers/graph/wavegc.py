"""``string-wavegc``: WaveGC (Liu et al., ICML 2025; ``liun-online/WaveGC``) trained by link prediction on STRING.

Upstream's model for one large graph (``WaveGC_node``: ``wave_generator.py``, ``wave_layer.py``,
``wave_model.py``), on the ``k`` smallest eigenpairs ``(lambda, U)`` of the symmetric normalised
Laplacian of the training graph:

- **Wavelet generator**, once per forward pass: each eigenvalue is sine-encoded
  (``[lambda, sin(100 lambda w), cos(100 lambda w)]``, then a Linear) and the tokens pass one pre-LN
  transformer layer (multi-head attention, FFN). Three Linear decoders, summed over the eigenvalues and
  divided by the node count (as upstream), give the scaling coefficients ``a`` (softmax over
  ``terms``), the wavelet coefficients ``b`` (softmax) and the scales ``s_j = max_scale * sigmoid(.)``.
- **Frames**: scaling function ``h(l) = sum_i a_i (1 - T_{2i+1}(l - 1)) / 2`` (odd Chebyshev terms),
  wavelets ``g_j(l) = sum_i b_i (1 - T_{2i}(s_j l - 1)) / 2`` (even terms; ``s_j l > 2`` cut to
  ``g_j = 0``), and with ``tight_frames`` each eigenvalue's ``J + 1`` responses divided by their norm.
- **Wavelet convolution** (``Wave_Conv_arxiv``, upstream's eigenvector path): per filter ``t`` a
  Linear block ``W_t x``, ``U diag(f_t) U^T``, activation, dropout, ``U diag(f_t) U^T`` again; blocks
  concatenated, fused by a Linear, activation, dropout.
- **Block** (``WaveLayer``, GraphGPS's): ``norm(x + Drop(GCN(x))) + norm(x + Drop(WaveConv(x)))``, then
  ``h + FF(h)`` (Linear 2x, activation, dropout, Linear, dropout) and a norm.

Each gene starts from a learned ``nn.Embedding``; ``depth`` blocks, then a final Linear (the head).
Defaults: the paper's (128 dims, 2 layers, 3 scales, 7 terms, Adam 1e-3, 200 epochs, patience 30) and
upstream's config otherwise. Training (:mod:`._linkpred`) takes mini-batches of 4,096 edges with
gradient clipping 1.0 (upstream ``clip_grad_norm``) and keeps the epoch of lowest validation loss.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._chebyshev import chebyshev_basis, normalised_adjacency
from pertstore.producers.graph._common import load_gene_graph
from pertstore.producers.graph._linkpred import (
    EdgeSplit,
    LinkPredParams,
    LinkPredResult,
    split_edges,
    train_link_prediction,
)
from pertstore.producers.graph._seeding import seeded
from pydantic import Field, model_validator
from torch import nn
from torch_geometric.nn import GCNConv

from pertstore.errors import InvalidInputError


class WaveGCParams(LinkPredParams):
    depth: int = Field(2, ge=1, le=8)
    """WaveGC blocks (paper: 2)."""
    scales: int = Field(3, ge=1, le=8)
    """Wavelet scales ``J`` (plus one scaling function; paper and upstream: 3)."""
    terms: int = Field(7, ge=1, le=16)
    """Chebyshev terms per family (upstream ``num_n``): odd orders 1..2n-1 (scaling), even 0..2n-2 (wavelets)."""
    max_scale: float = Field(10.0, gt=0)
    """Upper bound of the learned scales (upstream ``pre_s``, 10 in its config)."""
    tight_frames: bool = True
    eig_ratio: float = Field(0.05, gt=0, le=1)
    """Share of the smallest Laplacian eigenpairs kept (upstream ``keep_eig_ratio``)."""
    heads: int = Field(8, ge=1)
    """Attention heads of the eigenvalue transformer (upstream ``WaveGC.nheads``); must divide ``dims``."""
    trans_dropout: float = Field(0.1, ge=0, lt=1)
    wave_dropout: float = Field(0.5, ge=0, lt=1)
    """Dropout inside the wavelet convolution (upstream ``WaveGC.drop``)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Block dropout (GraphGPS ``gt.dropout``)."""
    local: Literal["gcn", "none"] = "gcn"
    """The block's local message passing (upstream ``layer_type: GCN+WaveGC``) or none."""
    norm: Literal["batch", "layer", "none"] = "batch"
    act: Literal["relu", "gelu"] = "relu"
    weighted: bool = False
    """Laplacian and GCN weighted by score / 1000 (upstream: unweighted)."""
    batch_size: int = Field(4096, ge=1)
    clip: float | None = Field(1.0, gt=0)
    select: Literal["auc", "loss"] = "loss"

    @model_validator(mode="after")
    def _heads_divide_dims(self) -> WaveGCParams:
        if self.dims % 2 or self.dims % self.heads:
            raise ValueError(f"dims ({self.dims}) must be even and divisible by heads ({self.heads})")
        return self


def laplacian_eigenpairs(adj: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest eigenvalues (ascending) and eigenvectors of ``I - D^-1/2 A D^-1/2``."""
    from scipy.sparse.linalg import eigsh

    norm_adj = normalised_adjacency(adj).astype(np.float64)
    n = norm_adj.shape[0]
    if k >= n - 1:
        mu, vectors = np.linalg.eigh(norm_adj.toarray())
        mu, vectors = mu[::-1][:k], vectors[:, ::-1][:, :k]
    else:
        mu, vectors = eigsh(norm_adj, k, which="LA", v0=np.full(n, 1 / math.sqrt(n)))
        order = np.argsort(-mu)
        mu, vectors = mu[order], vectors[:, order]
    return np.clip(1.0 - mu, 0.0, 2.0), vectors


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.GELU()


def _norm(kind: str, dims: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm1d(dims), "layer": lambda: nn.LayerNorm(dims), "none": nn.Identity}[kind]()


class SineEncoding(nn.Module):
    """Upstream's eigenvalue encoding: ``Linear([e, sin(100 e w), cos(100 e w)])``, ``w_i = 10000^(-2i/d)``."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.linear = nn.Linear(dims + 1, dims)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        div = torch.exp(torch.arange(0, self.dims, 2, dtype=e.dtype) * (-math.log(10000) / self.dims))
        pe = (100 * e)[:, None] * div
        return self.linear(torch.cat([e[:, None], torch.sin(pe), torch.cos(pe)], 1))


class EigenEncoding(nn.Module):
    """One pre-LN transformer layer over the sine-encoded eigenvalues."""

    def __init__(self, dims: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.encoder = SineEncoding(dims)
        self.mha_norm, self.ffn_norm = nn.LayerNorm(dims), nn.LayerNorm(dims)
        self.mha = nn.MultiheadAttention(dims, heads, dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dims, dims), nn.GELU(), nn.Linear(dims, dims))
        self.mha_dropout, self.ffn_dropout = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        eig = self.encoder(eigenvalues)[None]  # [1, k, d]
        x = self.mha_norm(eig)
        eig = eig + self.mha_dropout(self.mha(x, x, x, need_weights=False)[0])
        return (eig + self.ffn_dropout(self.ffn(self.ffn_norm(eig))))[0]


def wavelet_frames(
    eigenvalues: torch.Tensor, a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, tight: bool
) -> torch.Tensor:
    """``[k, 1 + J]``: the scaling function and the ``J`` wavelets at each eigenvalue (upstream's bases)."""
    n = a.shape[0]
    odd = chebyshev_basis(eigenvalues - 1, 2 * n - 1)[1::2]  # T_1, T_3, .. T_{2n-1}: [n, k]
    scaling = (a[:, None] * (1 - odd) / 2).sum(0)
    scaled = eigenvalues[:, None] * s[None, :]
    scaled = torch.where(scaled > 2, torch.zeros_like(scaled), scaled)  # upstream's cut-off: T_2i(-1) = 1, g = 0
    even = chebyshev_basis(scaled - 1, max(2 * n - 2, 1))[0::2][:n]  # T_0, T_2, .. T_{2n-2}: [n, k, J]
    wavelets = (b[:, None, None] * (1 - even) / 2).sum(0)
    frames = torch.cat([scaling[:, None], wavelets], 1)
    return frames / (frames.norm(dim=1, keepdim=True) + 1e-8) if tight else frames


class WaveletGenerator(nn.Module):
    """Upstream's ``Wave_generator``: coefficients and scales decoded from the eigenvalue transformer."""

    def __init__(
        self, dims: int, heads: int, terms: int, scales: int, max_scale: float, dropout: float, tight: bool
    ) -> None:
        super().__init__()
        self.encoding = EigenEncoding(dims, heads, dropout)
        self.decode_scaling, self.decode_wavelet = nn.Linear(dims, terms), nn.Linear(dims, terms)
        self.decode_scales = nn.Linear(dims, scales)
        self.max_scale, self.tight = max_scale, tight

    def coefficients(self, eigenvalues: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, ...]:
        """``a``, ``b`` (softmax over terms) and the scales ``s``; sums over eigenvalues / node count, as upstream."""
        eig = self.encoding(eigenvalues)
        a = torch.softmax(self.decode_scaling(eig).sum(0) / (n_nodes + 1e-8), -1)
        b = torch.softmax(self.decode_wavelet(eig).sum(0) / (n_nodes + 1e-8), -1)
        s = torch.sigmoid(self.decode_scales(eig).sum(0) / (n_nodes + 1e-8)) * self.max_scale
        return a, b, s

    def forward(self, eigenvalues: torch.Tensor, n_nodes: int) -> torch.Tensor:
        return wavelet_frames(eigenvalues, *self.coefficients(eigenvalues, n_nodes), tight=self.tight)


class WaveConv(nn.Module):
    """Upstream's ``Wave_Conv_arxiv``: per filter ``U f U^T act(U f U^T W_t x)``, concatenated and fused."""

    def __init__(self, dims: int, scales: int, act: str, dropout: float) -> None:
        super().__init__()
        single = dims // (scales + 1)
        self.width = [single] * scales + [dims - scales * single]
        self.lin = nn.Linear(dims, dims)  # the per-filter Linears W_t stacked by output rows
        self.fusion = nn.Linear(dims, dims)
        self.act, self.dropout = _activation(act), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, vectors: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        f = torch.repeat_interleave(frames, torch.tensor(self.width), dim=1)  # [k, dims]: each column's filter
        h = vectors @ (f * (vectors.T @ self.lin(x)))
        h = self.dropout(self.act(h))
        h = vectors @ (f * (vectors.T @ h))
        return self.dropout(self.act(self.fusion(h)))


class WaveBlock(nn.Module):
    """Upstream's ``WaveLayer`` (GraphGPS): local GCN and wavelet branches, summed, then a feed-forward block."""

    def __init__(self, params: WaveGCParams) -> None:
        super().__init__()
        d = params.dims
        self.local = GCNConv(d, d) if params.local == "gcn" else None
        self.wave = WaveConv(d, params.scales, params.act, params.wave_dropout)
        self.norm_local, self.norm_wave, self.norm_ff = (_norm(params.norm, d) for _ in range(3))
        self.dropout = nn.Dropout(params.dropout)
        self.ff = nn.Sequential(
            nn.Linear(d, 2 * d),
            _activation(params.act),
            nn.Dropout(params.dropout),
            nn.Linear(2 * d, d),
            nn.Dropout(params.dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        vectors: torch.Tensor,
        frames: torch.Tensor,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm_wave(x + self.dropout(self.wave(x, vectors, frames)))
        if self.local is not None:
            h = h + self.norm_local(x + self.dropout(self.local(x, edge_index, edge_weight)))
        return self.norm_ff(h + self.ff(h))


class WaveGC(nn.Module):
    """Learned node embeddings, ``depth`` :class:`WaveBlock` s sharing one set of frames, a final Linear."""

    def __init__(
        self,
        n: int,
        eigenvalues: np.ndarray,
        vectors: np.ndarray,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor | None,
        params: WaveGCParams,
    ) -> None:
        super().__init__()
        self.n = n
        self.embedding = nn.Embedding(n, params.dims)
        self.generator = WaveletGenerator(
            params.dims,
            params.heads,
            params.terms,
            params.scales,
            params.max_scale,
            params.trans_dropout,
            params.tight_frames,
        )
        self.blocks = nn.ModuleList([WaveBlock(params) for _ in range(params.depth)])
        self.out = nn.Linear(params.dims, params.dims)
        self.register_buffer("eigenvalues", torch.from_numpy(eigenvalues.astype(np.float32)))
        self.register_buffer("vectors", torch.from_numpy(vectors.astype(np.float32)))
        self.register_buffer("edge_index", edge_index)
        self.edge_weight = edge_weight

    def forward(self) -> torch.Tensor:
        frames = self.generator(self.eigenvalues, self.n)
        h = self.embedding.weight
        for block in self.blocks:
            h = block(h, self.vectors, frames, self.edge_index, self.edge_weight)
        return self.out(h)


def train_wavegc(
    split: EdgeSplit, n: int, params: WaveGCParams, eigenpairs: tuple[np.ndarray, np.ndarray] | None = None
) -> LinkPredResult:
    """Build WaveGC on ``split``'s training graph and train it by link prediction.

    ``eigenpairs``: the training graph's from :func:`training_eigenpairs`, when computed beforehand.
    """
    if params.full_graph:
        raise InvalidInputError("string-wavegc: full_graph is not supported (its eigenbasis is the training graph's)")
    edge_index, weight = split.message_edges()
    eigenvalues, vectors = training_eigenpairs(split, n, params) if eigenpairs is None else eigenpairs
    with seeded(params.seed):
        model = WaveGC(n, eigenvalues, vectors, edge_index, weight if params.weighted else None, params)
        return train_link_prediction(model, split, n, params)


def training_eigenpairs(split: EdgeSplit, n: int, params: WaveGCParams) -> tuple[np.ndarray, np.ndarray]:
    """The ``eig_ratio * n`` smallest eigenpairs of the training graph's normalised Laplacian."""
    edge_index, weight = split.message_edges()
    values = weight.numpy().astype(np.float64) if params.weighted else np.ones(edge_index.shape[1])
    adj = sp.csr_matrix((values, (edge_index[0].numpy(), edge_index[1].numpy())), shape=(n, n))
    return laplacian_eigenpairs(adj, max(1, min(n, int(params.eig_ratio * n))))


class WaveGCProducer(Producer):
    """WaveGC link-prediction embeddings of the STRING gene graph."""

    name = "string-wavegc"
    kind = "gene"
    Params = WaveGCParams
    inputs = {"network": "file"}
    chunked = False
    code_version = "2"  # 2: negatives from a generator of their own (reproducible on Dask workers)
    description = (
        "WaveGC (spectral wavelets on Laplacian eigenpairs, GraphGPS block) trained by link prediction on STRING"
    )

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import scipy
        import torch_geometric

        return {"torch": torch.__version__, "scipy": scipy.__version__, "torch-geometric": torch_geometric.__version__}

    def compute(self) -> Batch:
        graph = load_gene_graph(self.ctx, self.params)
        result = train_wavegc(split_edges(graph, self.params.val_fraction, self.params.seed), graph.n, self.params)
        return Batch(graph.nodes, result.embedding.astype(np.float32))
