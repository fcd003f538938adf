"""Link-prediction training shared by the graph neural producers (``string-gnn``, ``string-wavegc``).

The undirected edges are split 90:10 (seeded) into training and validation edges; the encoder
passes messages over the training edges only. Each step scores a batch of training edges and as
many negatives from torch-geometric's ``negative_sampling`` by the dot product of the two node
embeddings (binary cross-entropy on logits). After every epoch the validation AUC (validation
edges against a fixed set of sampled non-edges, scikit-learn's ``roc_auc_score``) is measured; the
best epoch's weights are kept, and training stops after ``patience`` epochs without improvement.
The embedding is the encoder's output at the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from sklearn.metrics import roc_auc_score
from torch_geometric.utils import negative_sampling

from pertstore.producers.graph._common import GeneGraph, GraphParams


class LinkPredParams(GraphParams):
    dims: int = Field(128, ge=1, le=2048)
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(200, ge=1)
    patience: int = Field(30, ge=1)
    batch_size: int = Field(65536, ge=1)
    """Training edges (and as many negatives) per optimiser step; each step runs the encoder once."""
    val_fraction: float = Field(0.1, gt=0, lt=1)


@dataclass
class EdgeSplit:
    """Undirected edges (each once, ``[2, E]``) split into training and validation edges."""

    train: torch.Tensor
    train_weight: torch.Tensor
    val: torch.Tensor

    def message_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training edges in both directions with their weights, for message passing."""
        return torch.cat([self.train, self.train.flip(0)], 1), torch.cat([self.train_weight, self.train_weight])


def split_edges(graph: GeneGraph, val_fraction: float, seed: int) -> EdgeSplit:
    """A seeded split of the graph's edges: ``val_fraction`` of them held out for validation."""
    order = np.random.default_rng(seed).permutation(len(graph.rows))
    n_val = max(1, int(round(val_fraction * len(order))))
    edges = torch.from_numpy(np.stack([graph.rows, graph.cols]))
    weight = torch.from_numpy(graph.weights.astype(np.float32))
    train, val = torch.from_numpy(np.sort(order[n_val:])), torch.from_numpy(np.sort(order[:n_val]))
    return EdgeSplit(edges[:, train], weight[train], edges[:, val])


def dot_scores(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The decoder: ``z[a] . z[b]`` for each column ``(a, b)`` of ``pairs``."""
    return (z[pairs[0]] * z[pairs[1]]).sum(-1)


def link_auc(z: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of edges ``pos`` against non-edges ``neg`` scored by :func:`dot_scores`."""
    scores = torch.cat([dot_scores(z, pos), dot_scores(z, neg)]).detach().numpy()
    labels = np.r_[np.ones(pos.shape[1]), np.zeros(neg.shape[1])]
    return float(roc_auc_score(labels, scores))


@dataclass
class LinkPredResult:
    embedding: np.ndarray
    best_auc: float
    best_epoch: int
    history: list[float]
    """Validation AUC after each epoch run."""
    val_neg: torch.Tensor
    """The non-edges the validation edges were ranked against."""


def train_link_prediction(encoder: torch.nn.Module, split: EdgeSplit, n: int,
                          params: LinkPredParams) -> LinkPredResult:
    """Train ``encoder`` (``encoder() -> [n, dims]``) by link prediction; call under :func:`seeded`."""
    all_edges = torch.cat([split.train, split.val], 1)
    all_edges = torch.cat([all_edges, all_edges.flip(0)], 1)
    val_neg = negative_sampling(all_edges, num_nodes=n, num_neg_samples=split.val.shape[1])
    train_edges = split.message_edges()[0]
    optimizer = torch.optim.Adam(encoder.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(params.seed)
    best = (-1.0, -1, {k: v.detach().clone() for k, v in encoder.state_dict().items()})
    history: list[float] = []
    for epoch in range(params.epochs):
        encoder.train()
        for batch in torch.randperm(split.train.shape[1], generator=order).split(params.batch_size):
            pos = split.train[:, batch]
            neg = negative_sampling(train_edges, num_nodes=n, num_neg_samples=len(batch))
            optimizer.zero_grad()
            z = encoder()
            logits = torch.cat([dot_scores(z, pos), dot_scores(z, neg)])
            target = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])])
            loss_fn(logits, target).backward()
            optimizer.step()
        encoder.eval()
        with torch.no_grad():
            auc = link_auc(encoder(), split.val, val_neg)
        history.append(auc)
        if auc > best[0]:
            best = (auc, epoch, {k: v.detach().clone() for k, v in encoder.state_dict().items()})
        elif epoch - best[1] >= params.patience:
            break
    encoder.load_state_dict(best[2])
    encoder.eval()
    with torch.no_grad():
        z = encoder().numpy().copy()
    return LinkPredResult(z, best[0], best[1], history, val_neg)
