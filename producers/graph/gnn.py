"""``string-gnn``: the paper's STRING GNN (``train_gnn/models.py``), trained by link prediction on STRING.

Each gene starts from a randomly initialised, learned vector (``nn.Embedding``); ``depth`` layers of
torch-geometric's ``GCNConv`` (edge-weighted by score / 1000, symmetric normalisation with
self-loops) or ``GINConv`` (a two-layer MLP, learned eps, unweighted sum) update it as
``h <- h + Dropout(GELU(conv(LayerNorm(h))))``; a final ``Linear`` gives the embedding. Defaults are
``train_gnn``'s with the paper's 256 dims: 3 layers, dropout 0.1, Adam 1e-3, 120 epochs, patience 10,
batches of 4,096 edges, gradient norm clipped to 1.0, the epoch of lowest validation BCE loss kept,
validation and the final embedding by message passing over the full graph (validation edges
included). Training and the 90:10 edge split are in :mod:`._linkpred`. Deterministic under ``seed`` on CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._common import load_gene_graph
from pertstore.producers.graph._linkpred import (
    EdgeSplit,
    LinkPredParams,
    LinkPredResult,
    split_edges,
    train_link_prediction,
)
from pertstore.producers.graph._seeding import seeded
from pydantic import Field
from torch import nn
from torch_geometric.nn import GCNConv, GINConv


class GNNParams(LinkPredParams):
    layer: Literal["gcn", "gin"] = "gcn"
    depth: int = Field(3, ge=1, le=16)
    dims: int = Field(256, ge=1, le=2048)
    epochs: int = Field(120, ge=1)
    patience: int = Field(10, ge=1)
    batch_size: int = Field(4096, ge=1)
    clip: float | None = Field(1.0, gt=0)
    select: Literal["auc", "loss"] = "loss"
    full_graph: bool = True


class GNNLayer(nn.Module):
    """``train_gnn``'s layer without its residual: ``Dropout(GELU(conv(LayerNorm(x))))``."""

    def __init__(self, dims: int, layer: str, dropout: float) -> None:
        super().__init__()
        self.layer = layer
        self.conv = (
            GCNConv(dims, dims)
            if layer == "gcn"
            else GINConv(nn.Sequential(nn.Linear(dims, dims), nn.ReLU(), nn.Linear(dims, dims)), train_eps=True)
        )
        self.norm = nn.LayerNorm(dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = self.conv(x, edge_index, edge_weight) if self.layer == "gcn" else self.conv(x, edge_index)
        return self.dropout(torch.nn.functional.gelu(x))


class ResidualGNN(nn.Module):
    """Learned node embeddings, residual :class:`GNNLayer` s, a final Linear (``train_gnn``'s ``GNN``)."""

    def __init__(
        self,
        n: int,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor,
        dims: int,
        depth: int,
        layer: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, dims)
        self.layers = nn.ModuleList([GNNLayer(dims, layer, dropout) for _ in range(depth)])
        self.out = nn.Linear(dims, dims)
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)

    def forward(self, edge_index: torch.Tensor | None = None, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings over ``edge_index`` (default: the training edges the model was built with)."""
        if edge_index is None:
            edge_index, edge_weight = self.edge_index, self.edge_weight
        h = self.embedding.weight
        for layer in self.layers:
            h = h + layer(h, edge_index, edge_weight)
        return self.out(h)


def train_gnn(split: EdgeSplit, n: int, params: GNNParams) -> LinkPredResult:
    """Build and train the GNN on ``split``'s training edges."""
    with seeded(params.seed):
        edge_index, edge_weight = split.message_edges()
        model = ResidualGNN(n, edge_index, edge_weight, params.dims, params.depth, params.layer, params.dropout)
        return train_link_prediction(model, split, n, params)


class GNNProducer(Producer):
    """GCN/GIN link-prediction embeddings of the STRING gene graph."""

    name = "string-gnn"
    kind = "gene"
    Params = GNNParams
    inputs = {"network": "file"}
    chunked = False
    code_version = "2"  # 2: negatives from a generator of their own (reproducible on Dask workers)
    description = "the paper's STRING GNN (GCN/GIN, train_gnn) trained by link prediction"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import torch_geometric

        return {"torch": torch.__version__, "torch-geometric": torch_geometric.__version__}

    def compute(self) -> Batch:
        graph = load_gene_graph(self.ctx, self.params)
        result = train_gnn(split_edges(graph, self.params.val_fraction, self.params.seed), graph.n, self.params)
        return Batch(graph.nodes, result.embedding.astype(np.float32))
