"""``string-gnn``: a GCN or GIN over learned node embeddings, trained by link prediction on STRING.

Each gene starts from a randomly initialised, learned vector (``nn.Embedding``); ``depth`` layers of
torch-geometric's ``GCNConv`` (edge-weighted by the combined STRING score, symmetric
normalisation with self-loops) or ``GINConv`` (a two-layer MLP, unweighted sum) update it as
``h <- LayerNorm(h + Dropout(ReLU(conv(h))))``. Training, the 90:10 edge split, the best-validation
checkpoint and early stopping are in :mod:`._linkpred`. Deterministic under ``seed`` on CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch_geometric.nn import GCNConv, GINConv

from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._common import load_gene_graph
from pertstore.producers.graph._linkpred import (EdgeSplit, LinkPredParams, LinkPredResult, split_edges,
                                                 train_link_prediction)
from pertstore.producers.graph._seeding import seeded


class GNNParams(LinkPredParams):
    layer: Literal["gcn", "gin"] = "gcn"
    depth: int = Field(2, ge=1, le=16)


class ResidualGNN(nn.Module):
    """Learned node embeddings refined by residual GCN/GIN layers with LayerNorm over a fixed graph."""

    def __init__(self, n: int, edge_index: torch.Tensor, edge_weight: torch.Tensor, dims: int, depth: int,
                 layer: str, dropout: float) -> None:
        super().__init__()
        self.layer = layer
        self.embedding = nn.Embedding(n, dims)
        if layer == "gcn":
            self.convs = nn.ModuleList([GCNConv(dims, dims, cached=True) for _ in range(depth)])
        else:
            self.convs = nn.ModuleList([GINConv(nn.Sequential(nn.Linear(dims, dims), nn.ReLU(), nn.Linear(dims, dims)))
                                        for _ in range(depth)])
        self.norms = nn.ModuleList([nn.LayerNorm(dims) for _ in range(depth)])
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)

    def forward(self) -> torch.Tensor:
        h = self.embedding.weight
        for conv, norm in zip(self.convs, self.norms):
            m = conv(h, self.edge_index, self.edge_weight) if self.layer == "gcn" else conv(h, self.edge_index)
            h = norm(h + self.dropout(torch.relu(m)))
        return h


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
    description = "GCN/GIN with residual connections trained by link prediction on STRING (> 400)"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import torch_geometric

        return {"torch": torch.__version__, "torch-geometric": torch_geometric.__version__}

    def compute(self) -> Batch:
        graph = load_gene_graph(self.ctx, self.params)
        result = train_gnn(split_edges(graph, self.params.val_fraction, self.params.seed), graph.n, self.params)
        return Batch(graph.nodes, result.embedding.astype(np.float32))
