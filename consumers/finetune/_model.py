"""Cell-model fine-tuning with LoRA: In-Silico KO and Indexing (the paper's section 4.8, Figure 4).

- **In-Silico KO** (``isko``): the mean control profile of the context with the perturbed gene knocked
  out goes through the model (dense checkpoints: its value set to ``mask_value``, 0; token checkpoints:
  its token deleted, see :mod:`._inputs`); a head shared by all genes (MLP ``d -> 64 -> 32 -> 1``) reads
  each gene's last hidden state and predicts that gene's response.
- **Indexing** (``indexing``): a batch of control cells goes through the model; the last hidden state
  at the perturbed gene, averaged over the cells, feeds an MLP (``d -> 1024 -> 2048 -> genes``).

The base checkpoint is any transformers checkpoint the ``scfm`` producer loads, with the same
``adapter`` (``dense``: AIDO.Cell-style; ``geneformer``; ``scgpt``) and adapter options
(``max_length``, ``token_dictionary``, ``gene_medians``). LoRA adapters (``peft``) sit on each
transformer layer's attention output and feed-forward projections; base weights stay frozen. The
learning rate is chosen from ``{1e-2, 1e-3, 1e-4, 1e-5}`` by the validation MSE on a seeded 20% of the
training perturbations, then the model is trained again on all of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pertstore.consumers.finetune._inputs import cell_inputs
from torch import nn

from pertstore.errors import InvalidInputError

MODES = ("isko", "indexing")
HEADS = {"isko": (64, 32), "indexing": (1024, 2048)}
LORA_TARGETS = {
    "dense": r".*transformer_encoder\.layers\.\d+\.(linear1|linear2|self_attn\.out_proj)",
    "scgpt": r".*transformer_encoder\.layers\.\d+\.(linear1|linear2|self_attn\.out_proj)",
    "geneformer": r".*encoder\.layer\.\d+\.(attention\.output\.dense|intermediate\.dense|output\.dense)",
}
"""Per adapter: each layer's attention output and feed-forward projections (nn.TransformerEncoder or BERT names)."""


@dataclass
class FinetuneSettings:
    """CPU-sized defaults (``docs/crosscontext.md`` gives the paper's)."""

    mode: str = "isko"
    learning_rates: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    val_fraction: float = 0.2
    epochs: int = 30
    batch_perts: int = 32
    batch_cells: int = 32
    """Indexing: control cells per step (prediction averages over all of them)."""
    head: tuple[int, ...] | None = None
    """Hidden layers of the head; None: the paper's (``isko`` 64-32, ``indexing`` 1024-2048)."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str | None = None
    """Modules LoRA wraps (a regex); None: the adapter's (:data:`LORA_TARGETS`)."""
    adapter: str = "dense"
    """The checkpoint's input encoding, as the ``scfm`` producer names it."""
    max_length: int | None = None
    token_dictionary: str | None = None
    gene_medians: str | None = None
    mask_value: float = 0.0
    seed: int = 0
    device: str = "auto"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"fine-tuning mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.adapter not in LORA_TARGETS:
            raise InvalidInputError(
                f"fine-tuning adapter must be one of {', '.join(LORA_TARGETS)}, not {self.adapter!r}"
            )

    @property
    def torch_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


def load_adapter(model_path: str, settings: FinetuneSettings):
    """The checkpoint in ``model_path`` as the ``scfm`` producer loads it (model, genes, encoding)."""
    from pertstore.producers.expression.checkpoints import load_adapter as load

    return load(
        settings.adapter,
        model_path,
        settings.torch_device,
        max_length=settings.max_length,
        token_dictionary=settings.token_dictionary,
        gene_medians=settings.gene_medians,
    )


def lora_model(model, settings: FinetuneSettings):
    """``model`` (a loaded base model, or a checkpoint path) with LoRA adapters: base weights frozen,
    adapters trainable."""
    from peft import LoraConfig, get_peft_model

    if isinstance(model, str):
        model = load_adapter(model, settings).model
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules or LORA_TARGETS[settings.adapter],
    )
    return get_peft_model(model, config).to(settings.torch_device)


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


@dataclass
class CellModel:
    """A loaded checkpoint and the inputs it reads for one context's control cells (see :mod:`._inputs`):
    loaded and encoded once, shared by every fit of that context."""

    adapter: Any
    inputs: Any


def cell_model(model_path: str, cells: np.ndarray, settings: FinetuneSettings, adapter=None) -> CellModel:
    """:class:`CellModel` of the checkpoint in ``model_path`` (or an ``adapter`` loaded already) for ``cells``
    ``[cells, G]``: the context's log-normalised control cells in the model's gene order."""
    adapter = adapter or load_adapter(model_path, settings)
    inputs = cell_inputs(adapter, cells, settings.torch_device, mask_value=settings.mask_value, seed=settings.seed)
    return CellModel(adapter, inputs)


class FineTuner(nn.Module):
    """A LoRA-wrapped copy of a cell model and its head; ``forward(positions)`` -> responses ``[n, outputs]``.

    ``outputs`` = ``G`` (``isko``, one value per model gene) or the task's genes (``indexing``). An output
    the model has no state for (token checkpoints: a gene without a token) is NaN.
    """

    def __init__(self, model: CellModel, n_outputs: int, settings: FinetuneSettings) -> None:
        super().__init__()
        torch.manual_seed(settings.seed)
        self.settings = settings
        self.inputs = model.inputs
        self.n_genes = len(model.adapter.genes)
        self.base = lora_model(copy.deepcopy(model.adapter.model), settings)  # peft adds its layers in place
        hidden = settings.head or HEADS[settings.mode]
        d_out = 1 if settings.mode == "isko" else n_outputs
        self.head = _mlp(model.adapter.hidden_size, hidden, d_out).to(settings.torch_device)
        self._rng = torch.Generator(device="cpu").manual_seed(settings.seed)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if self.settings.mode == "isko":
            hidden, genes = self.inputs.knocked_out(self.base, positions)
            per_token = self.head(hidden).squeeze(-1)
            out = per_token.new_full((len(positions), self.n_genes), float("nan"))
            row, column = torch.nonzero(genes >= 0, as_tuple=True)
            return out.index_put((row, genes[row, column]), per_token[row, column])
        n = self.inputs.n_cells
        if self.training:
            picks = [torch.randperm(n, generator=self._rng)[: self.settings.batch_cells]]
        else:  # all control cells, in batches
            picks = list(torch.split(torch.arange(n), self.settings.batch_cells))
        total, count = zip(*(self.inputs.gene_states(self.base, positions, p.to(positions.device)) for p in picks))
        count = sum(count)
        state = sum(total) / count.clamp(min=1)[:, None]
        out = self.head(state)
        return out.masked_fill((count == 0)[:, None], float("nan"))


def _train(model: FineTuner, positions: np.ndarray, y: np.ndarray, lr: float, settings: FinetuneSettings) -> list:
    device = settings.torch_device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    pos = torch.as_tensor(positions, device=device)
    target = torch.as_tensor(y, dtype=torch.float32, device=device)
    known = torch.isfinite(target)
    rng = np.random.default_rng(settings.seed)
    losses = []
    model.train()
    for _ in range(settings.epochs):
        total = 0.0
        for batch in np.array_split(rng.permutation(len(pos)), max(1, int(np.ceil(len(pos) / settings.batch_perts)))):
            b = torch.as_tensor(batch, device=device)
            out = model(pos[b])
            scored = known[b] & torch.isfinite(out)  # NaN: no value, or no state for that gene
            loss = torch.where(scored, out - target[b], 0).pow(2).sum() / scored.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        losses.append(total / len(pos))
    return losses


@torch.no_grad()
def _predict(model: FineTuner, positions: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.as_tensor(positions, device=model.settings.torch_device)).float().cpu().numpy()


def select_learning_rate(n: int, settings, val_mse) -> tuple[float, dict[float, float]]:
    """The learning rate of ``settings.learning_rates`` with the lowest ``val_mse(lr, fit, val)``.

    ``fit`` / ``val`` index the ``n`` training perturbations: a seeded ``settings.val_fraction`` of them
    (at least one) is held out for validation. Returns ``(best, {lr: validation MSE})`` (non-finite: inf).
    """
    if n < 2:
        raise InvalidInputError("fine-tuning needs at least two training perturbations with a model gene")
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = max(1, int(round(settings.val_fraction * n)))
    val, fit = order[:n_val], order[n_val:]
    scores = {}
    for lr in settings.learning_rates:
        score = val_mse(lr, fit, val)
        scores[lr] = score if np.isfinite(score) else float("inf")
    return min(settings.learning_rates, key=lambda lr: scores[lr]), scores


def finetune_predict(
    model: CellModel,
    train_positions: np.ndarray,
    y_train: np.ndarray,
    test_positions: np.ndarray,
    settings: FinetuneSettings,
) -> tuple[np.ndarray, dict]:
    """Choose the learning rate on a validation split, fine-tune on all training perturbations, predict.

    ``*_positions`` are the perturbed genes' indices in the model's gene order; ``y_train`` holds the
    training responses in the output space (``isko``: model genes, NaN where the task has no value;
    ``indexing``: the task's genes). Returns ``(predictions, chosen)``.
    """
    n_out = y_train.shape[1]

    def val_mse(lr: float, fit: np.ndarray, val: np.ndarray) -> float:
        tuner = FineTuner(model, n_out, settings)
        _train(tuner, train_positions[fit], y_train[fit], lr, settings)
        return float(np.nanmean((_predict(tuner, train_positions[val]) - y_train[val]) ** 2))

    best, scores = select_learning_rate(len(train_positions), settings, val_mse)
    tuner = FineTuner(model, n_out, settings)
    losses = _train(tuner, train_positions, y_train, best, settings)
    return _predict(tuner, test_positions), {
        "mode": settings.mode,
        "lr": best,
        "val_mse": {str(k): round(v, 6) for k, v in scores.items()},
        "final_train_loss": round(losses[-1], 6),
        "epochs": settings.epochs,
    }
