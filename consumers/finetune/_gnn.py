"""STRING GNN fine-tuning on the LFC task, end to end (the paper's Figure 4, "STRING GNN Fine-Tuning").

The encoder is the ``string-gnn`` producer's ``ResidualGNN`` (learned node vectors, residual
``x + Dropout(GELU(conv(LayerNorm(x))))`` layers, a final Linear), first trained by link prediction
with the producer's code (:func:`pertstore.producers.graph.string_gnn_encoder`). An MLP head
(``dims -> 256 -> genes``, ReLU; the reference publishes no code for this head) maps the perturbed
gene's node embedding, computed over the whole graph at every step, to its LFC vector; encoder and
head train together under Adam on the MSE. ``freeze=True`` trains the head only (the paper's
"Frozen + MLP" control). The learning rate is chosen as for the cell models
(:func:`~pertstore.consumers.finetune._model.select_learning_rate`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from pertstore.consumers.finetune._model import _mlp, select_learning_rate
from pertstore.consumers.finetune._model import _predict as predict
from pertstore.consumers.finetune._model import _train as train_mse
from torch import nn


@dataclass
class GNNFinetuneSettings:
    """CPU-sized defaults (``docs/crosscontext.md``)."""

    learning_rates: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    val_fraction: float = 0.2
    epochs: int = 50
    batch_perts: int = 32
    head: tuple[int, ...] = (256,)
    freeze: bool = False
    """Train the head only, the encoder as pretrained (a control: the GNN's parameters stay as they are)."""
    seed: int = 0
    device: str = "auto"

    @property
    def torch_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


class GNNRegressor(nn.Module):
    """A copy of a pretrained GNN encoder and an MLP head; ``forward(nodes)`` -> LFC vectors ``[n, outputs]``."""

    def __init__(self, encoder: nn.Module, n_outputs: int, settings: GNNFinetuneSettings) -> None:
        super().__init__()
        torch.manual_seed(settings.seed)
        self.settings = settings
        self.encoder = copy.deepcopy(encoder).requires_grad_(not settings.freeze)
        self.head = _mlp(self.encoder.out.out_features, settings.head, n_outputs)
        self.to(settings.torch_device)

    def train(self, mode: bool = True) -> GNNRegressor:
        super().train(mode)
        if self.settings.freeze:  # a frozen encoder runs as it was pretrained: no dropout
            self.encoder.eval()
        return self

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder()[nodes])


def _train(model: GNNRegressor, nodes: np.ndarray, y: np.ndarray, lr: float) -> list[float]:
    """The fine-tuners' shared loop (Adam, MSE over known values, seeded batches of ``batch_perts``)."""
    return train_mse(model, nodes, y, lr, model.settings)


def _predict(model: GNNRegressor, nodes: np.ndarray) -> np.ndarray:
    return predict(model, nodes)


def gnn_finetune_predict(
    encoder: nn.Module,
    train_nodes: np.ndarray,
    y_train: np.ndarray,
    test_nodes: np.ndarray,
    settings: GNNFinetuneSettings,
) -> tuple[np.ndarray, dict, GNNRegressor]:
    """Choose the learning rate on a validation split, fine-tune on all training perturbations, predict.

    ``*_nodes`` are the perturbed genes' node indices in ``encoder``'s graph; ``y_train`` their LFC
    vectors. ``encoder`` is copied, never changed. Returns ``(predictions, chosen, fine-tuned model)``.
    """
    n_out = y_train.shape[1]

    def val_mse(lr: float, fit: np.ndarray, val: np.ndarray) -> float:
        model = GNNRegressor(encoder, n_out, settings)
        _train(model, train_nodes[fit], y_train[fit], lr)
        return float(np.mean((_predict(model, train_nodes[val]) - y_train[val]) ** 2))

    best, scores = select_learning_rate(len(train_nodes), settings, val_mse)
    model = GNNRegressor(encoder, n_out, settings)
    losses = _train(model, train_nodes, y_train, best)
    chosen = {
        "lr": best,
        "val_mse": {str(k): round(v, 6) for k, v in scores.items()},
        "final_train_loss": round(losses[-1], 6),
        "epochs": settings.epochs,
        "freeze": settings.freeze,
    }
    return _predict(model, test_nodes), chosen, model
