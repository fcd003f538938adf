"""AIDO.Cell-style fine-tuning with LoRA: In-Silico KO and Indexing (the paper's section 4.8, Figure 4).

- **In-Silico KO** (``isko``): the mean control profile of the context with the perturbed gene masked
  (its value set to ``mask_value``, 0: knocked out) goes through the model; a head shared by all genes
  (MLP ``d -> 64 -> 32 -> 1``) reads each gene's last hidden state and predicts that gene's response.
- **Indexing** (``indexing``): a batch of control cells goes through the model; the last hidden state
  at the perturbed gene's position, averaged over the cells, feeds an MLP (``d -> 1024 -> 2048 -> genes``).

The base checkpoint is any dense (AIDO.Cell-style) transformers checkpoint the ``scfm`` producer loads
(``adapter: dense``); LoRA adapters (``peft``) sit on each transformer layer's attention output and
feed-forward projections; base weights stay frozen. The learning rate is chosen from
``{1e-2, 1e-3, 1e-4, 1e-5}`` by the validation MSE on a seeded 20% of the training perturbations, then
the model is trained again on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pertstore.errors import InvalidInputError

MODES = ("isko", "indexing")
HEADS = {"isko": (64, 32), "indexing": (1024, 2048)}
LORA_TARGETS = r".*transformer_encoder\.layers\.\d+\.(linear1|linear2|self_attn\.out_proj)"


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
    target_modules: str = LORA_TARGETS
    mask_value: float = 0.0
    seed: int = 0
    device: str = "auto"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"fine-tuning mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    @property
    def torch_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


def lora_model(model_path: str, settings: FinetuneSettings):
    """The dense checkpoint in ``model_path`` with LoRA adapters: base weights frozen, adapters trainable."""
    from peft import LoraConfig, get_peft_model
    from pertstore.producers.expression.checkpoints import DenseCellModel

    try:
        base = DenseCellModel.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"fine-tuning: cannot load a dense cell-model checkpoint from {model_path}: {e}") from e
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
    )
    return get_peft_model(base, config).to(settings.torch_device)


def isko_input(profile: torch.Tensor, genes: torch.Tensor, mask_value: float = 0.0) -> torch.Tensor:
    """``[len(genes), G]`` copies of the mean control ``profile`` ``[G]``, row i with gene ``genes[i]`` masked."""
    x = profile.unsqueeze(0).repeat(len(genes), 1)
    x[torch.arange(len(genes)), genes] = mask_value
    return x


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class FineTuner(nn.Module):
    """A LoRA-wrapped cell model and its head; ``forward(positions)`` -> responses ``[n, outputs]``.

    ``cells`` ``[cells, G]`` are the context's log-normalised control cells in the model's gene order;
    ``outputs`` = ``G`` (``isko``, one value per model gene) or the task's genes (``indexing``).
    """

    def __init__(self, model_path: str, cells: np.ndarray, n_outputs: int, settings: FinetuneSettings) -> None:
        super().__init__()
        torch.manual_seed(settings.seed)
        self.settings = settings
        self.base = lora_model(model_path, settings)
        d = self.base.config.d_model
        device = settings.torch_device
        self.register_buffer("cells", torch.as_tensor(cells, dtype=torch.float32, device=device))
        self.register_buffer("profile", self.cells.mean(dim=0))
        hidden = settings.head or HEADS[settings.mode]
        self.head = _mlp(d, hidden, 1 if settings.mode == "isko" else n_outputs).to(device)
        self._rng = torch.Generator(device="cpu").manual_seed(settings.seed)

    def _hidden(self, values: torch.Tensor) -> torch.Tensor:
        return self.base(values=values).last_hidden_state

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if self.settings.mode == "isko":
            return self.head(self._hidden(isko_input(self.profile, positions, self.settings.mask_value))).squeeze(-1)
        if self.training:
            pick = torch.randperm(len(self.cells), generator=self._rng)[: self.settings.batch_cells]
            state = self._hidden(self.cells[pick.to(self.cells.device)])[:, positions].mean(dim=0)
        else:  # all control cells, in batches
            chunks = torch.split(self.cells, self.settings.batch_cells)
            state = sum(self._hidden(c)[:, positions].sum(dim=0) for c in chunks) / len(self.cells)
        return self.head(state)


def _train(model: FineTuner, positions: np.ndarray, y: np.ndarray, lr: float, settings: FinetuneSettings) -> list:
    device = settings.torch_device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    pos = torch.as_tensor(positions, device=device)
    target = torch.as_tensor(y, dtype=torch.float32, device=device)
    known = torch.isfinite(target)
    target = torch.nan_to_num(target)
    rng = np.random.default_rng(settings.seed)
    losses = []
    model.train()
    for _ in range(settings.epochs):
        total = 0.0
        for batch in np.array_split(rng.permutation(len(pos)), max(1, int(np.ceil(len(pos) / settings.batch_perts)))):
            b = torch.as_tensor(batch, device=device)
            out = model(pos[b])
            loss = ((out - target[b]) ** 2 * known[b]).sum() / known[b].sum().clamp(min=1)
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
    model_path: str,
    cells: np.ndarray,
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
        model = FineTuner(model_path, cells, n_out, settings)
        _train(model, train_positions[fit], y_train[fit], lr, settings)
        return float(np.nanmean((_predict(model, train_positions[val]) - y_train[val]) ** 2))

    best, scores = select_learning_rate(len(train_positions), settings, val_mse)
    model = FineTuner(model_path, cells, n_out, settings)
    losses = _train(model, train_positions, y_train, best, settings)
    return _predict(model, test_positions), {
        "mode": settings.mode,
        "lr": best,
        "val_mse": {str(k): round(v, 6) for k, v in scores.items()},
        "final_train_loss": round(losses[-1], 6),
        "epochs": settings.epochs,
    }
