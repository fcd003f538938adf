"""Link-prediction training shared by the graph neural producers (``string-gnn``, ``string-wavegc``).

The undirected edges are split 90:10 (seeded) into training and validation edges; the encoder
passes messages over the training edges while it trains. Each step scores a batch of training edges
and as many negatives (:class:`NegativeSampler`, torch-geometric's ``negative_sampling`` drawn from a generator of
its own) by the dot product of the two node
embeddings; the loss is the binary cross-entropy of the positives plus that of the negatives, as
``train_gnn/data.py``; gradients are clipped to norm ``clip`` when set. After every epoch the
validation edges are scored against a fixed set of sampled non-edges: the AUC (scikit-learn's
``roc_auc_score``) and the same BCE loss. The epoch with the best ``select`` metric (highest AUC or
lowest loss) is kept; training stops after ``patience`` epochs without improvement. With
``full_graph`` (``train_gnn``'s way) validation and the final embedding pass messages over every
edge, training and validation alike; otherwise over the training edges only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pertstore.producers.graph._common import GeneGraph, GraphParams
from pydantic import Field
from sklearn.metrics import roc_auc_score

from pertstore.errors import InvalidInputError


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
    clip: float | None = Field(None, gt=0)
    """Clip the gradient norm to this (None: no clipping)."""
    select: Literal["auc", "loss"] = "auc"
    """Keep the epoch with the highest validation AUC or the lowest validation BCE loss."""
    full_graph: bool = False
    """Validate and embed with messages over every edge (training and validation), as ``train_gnn``."""


@dataclass
class EdgeSplit:
    """Undirected edges (each once, ``[2, E]``) split into training and validation edges."""

    train: torch.Tensor
    train_weight: torch.Tensor
    val: torch.Tensor

    val_weight: torch.Tensor

    def message_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training edges in both directions with their weights, for message passing."""
        return torch.cat([self.train, self.train.flip(0)], 1), torch.cat([self.train_weight, self.train_weight])

    def all_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every edge (training and validation) in both directions with its weight."""
        edges, weight = torch.cat([self.train, self.val], 1), torch.cat([self.train_weight, self.val_weight])
        return torch.cat([edges, edges.flip(0)], 1), torch.cat([weight, weight])


def split_edges(graph: GeneGraph, val_fraction: float, seed: int) -> EdgeSplit:
    """A seeded split of the graph's edges: ``val_fraction`` of them held out for validation."""
    order = np.random.default_rng(seed).permutation(len(graph.rows))
    n_val = max(1, int(round(val_fraction * len(order))))
    edges = torch.from_numpy(np.stack([graph.rows, graph.cols]))
    weight = torch.from_numpy(graph.weights.astype(np.float32))
    train, val = torch.from_numpy(np.sort(order[n_val:])), torch.from_numpy(np.sort(order[:n_val]))
    return EdgeSplit(edges[:, train], weight[train], edges[:, val], weight[val])


class NegativeSampler:
    """Node pairs ``(a, b)``, ``a != b``, that are not edges of ``edge_index``, drawn uniformly without replacement.

    torch-geometric's ``negative_sampling`` (sparse method: over-sample by 1.1 / the share of non-edges, drop the
    edges, at most three tries), with the generator ``rng`` instead of Python's global ``random``, which other
    threads of the process (a Dask worker's event loop) draw from too: these samples are reproducible. The
    edges are indexed once (sorted pair codes), so a call costs a binary search instead of ``np.isin``.
    """

    def __init__(self, edge_index: torch.Tensor, n: int, rng: np.random.Generator) -> None:
        row, col = edge_index.numpy().astype(np.int64)
        loops = row == col
        self.n, self.rng = n, rng
        self.population = n * (n - 1)  # ordered pairs without self-loops: (a, b) -> a * (n - 1) + b - (b > a)
        self.edges = np.unique(self._code(row[~loops], col[~loops]))
        if len(self.edges) >= self.population:
            raise InvalidInputError(
                f"the network's {n} genes are all linked to each other: link prediction has no non-edges to learn from"
            )

    def _code(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * (self.n - 1) + b - (b > a)

    def _is_edge(self, codes: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.edges, codes).clip(max=max(len(self.edges) - 1, 0))
        return self.edges[at] == codes if len(self.edges) else np.zeros(len(codes), bool)

    def __call__(self, k: int) -> torch.Tensor:
        """``[2, k]`` non-edges (fewer if three tries do not find ``k``)."""
        share = 1.0 - len(self.edges) / self.population
        found = np.empty(0, dtype=np.int64)
        for _ in range(3):
            draw = self.rng.choice(self.population, size=min(self.population, int(1.1 * k / share)), replace=False)
            draw = draw[~self._is_edge(draw) & ~np.isin(draw, found)]
            found = np.concatenate([found, draw])
            if len(found) >= k:
                break
        found = found[:k]
        a, b = found // (self.n - 1), found % (self.n - 1)
        return torch.from_numpy(np.stack([a, b + (b >= a)]))


def dot_scores(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The decoder: ``z[a] . z[b]`` for each column ``(a, b)`` of ``pairs``."""
    return (z[pairs[0]] * z[pairs[1]]).sum(-1)


def link_loss(z: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``train_gnn``'s loss: mean BCE on logits of the edges ``pos`` (label 1) plus that of ``neg`` (label 0)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pos_scores, neg_scores = dot_scores(z, pos), dot_scores(z, neg)
    return bce(pos_scores, torch.ones_like(pos_scores)) + bce(neg_scores, torch.zeros_like(neg_scores))


def link_auc(z: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC of edges ``pos`` against non-edges ``neg`` scored by :func:`dot_scores`."""
    scores = torch.cat([dot_scores(z, pos), dot_scores(z, neg)]).detach().numpy()
    labels = np.r_[np.ones(pos.shape[1]), np.zeros(neg.shape[1])]
    return float(roc_auc_score(labels, scores))


@dataclass
class LinkPredResult:
    embedding: np.ndarray
    best_auc: float
    """Validation AUC at the kept epoch."""
    best_epoch: int
    history: list[float]
    """Validation AUC after each epoch run."""
    val_neg: torch.Tensor
    """The non-edges the validation edges were ranked against."""
    val_loss: list[float]
    """Validation BCE loss after each epoch run."""
    encoder: torch.nn.Module
    """The trained encoder at the kept epoch (eval mode)."""


def train_link_prediction(encoder: torch.nn.Module, split: EdgeSplit, n: int, params: LinkPredParams) -> LinkPredResult:
    """Train ``encoder`` by link prediction; call under :func:`seeded`.

    ``encoder()`` embeds ``[n, dims]`` over the training edges; with ``params.full_graph``,
    ``encoder(edge_index, edge_weight)`` embeds over the edges given.
    """
    all_edges, all_weight = split.all_edges()
    rng = np.random.default_rng(params.seed)
    val_neg = NegativeSampler(all_edges, n, rng)(split.val.shape[1])
    train_negatives = NegativeSampler(split.message_edges()[0], n, rng)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    order = torch.Generator().manual_seed(params.seed)
    evaluate = (lambda: encoder(all_edges, all_weight)) if params.full_graph else encoder
    sign = 1.0 if params.select == "auc" else -1.0  # higher is better
    best = (-np.inf, -1, {k: v.detach().clone() for k, v in encoder.state_dict().items()})
    history: list[float] = []
    losses: list[float] = []
    for epoch in range(params.epochs):
        encoder.train()
        for batch in torch.randperm(split.train.shape[1], generator=order).split(params.batch_size):
            neg = train_negatives(len(batch))
            optimizer.zero_grad()
            link_loss(encoder(), split.train[:, batch], neg).backward()
            if params.clip is not None:
                torch.nn.utils.clip_grad_norm_(encoder.parameters(), params.clip)
            optimizer.step()
        encoder.eval()
        with torch.no_grad():
            z = evaluate()
            history.append(link_auc(z, split.val, val_neg))
            losses.append(float(link_loss(z, split.val, val_neg)))
        metric = sign * (history[-1] if params.select == "auc" else losses[-1])
        if metric > best[0]:
            best = (metric, epoch, {k: v.detach().clone() for k, v in encoder.state_dict().items()})
        elif epoch - best[1] >= params.patience:
            break
    encoder.load_state_dict(best[2])
    encoder.eval()
    with torch.no_grad():
        z = evaluate().numpy().copy()
    return LinkPredResult(z, history[best[1]], best[1], history, val_neg, losses, encoder)
