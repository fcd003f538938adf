"""Training, prediction and persistence of the fusion model."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pertstore.consumers.fusion._model import FusionConfig, FusionModel
from pertstore.errors import InvalidInputError, NotFoundError


@dataclass
class FusionInputs:
    """Embeddings of perturbations from several sources, with the sources each one has.

    ``values[s]`` is ``[n, d_s]`` float32 (rows of absent sources are ignored, whatever they hold);
    ``present`` is ``[n, S]`` bool; ``context`` holds context codes into ``contexts``.
    """

    sources: list[str]
    values: list[np.ndarray]
    present: np.ndarray
    context: np.ndarray
    contexts: list[str]

    def __post_init__(self) -> None:
        n = len(self.context)
        if len(self.values) != len(self.sources) or self.present.shape != (n, len(self.sources)):
            raise InvalidInputError("fusion inputs: one value matrix per source and a [n, sources] presence mask needed")
        for name, v in zip(self.sources, self.values):
            if v.shape[0] != n:
                raise InvalidInputError(f"fusion inputs: source {name} has {v.shape[0]} rows, expected {n}")
        empty = np.flatnonzero(~self.present.any(axis=1))
        if len(empty):
            raise InvalidInputError(f"fusion inputs: {len(empty)} perturbation(s) have no embedding from any source "
                                    f"(first row {empty[0]}); drop them or give them the train mean")

    def subset(self, rows: np.ndarray) -> "FusionInputs":
        return FusionInputs(self.sources, [v[rows] for v in self.values], self.present[rows], self.context[rows],
                            self.contexts)

    def tensors(self, rows: np.ndarray | None = None):
        idx = slice(None) if rows is None else rows
        return ([torch.from_numpy(np.ascontiguousarray(v[idx], dtype=np.float32)) for v in self.values],
                torch.from_numpy(self.present[idx]), torch.from_numpy(self.context[idx].astype(np.int64)))


def inputs_from_store(store, sources: Sequence[str], entity_ids: Sequence[str | None], contexts: Sequence[str], *,
                      tag: str | dict | None = None, drop_empty: bool = False):
    """Align ``sources`` for each (entity, context) row through the store.

    A contextual source is read in each row's context; a context-free one serves every context.
    With ``drop_empty`` rows without any source are left out and ``(inputs, kept_rows)`` returned;
    otherwise such rows are an error.
    """
    n = len(entity_ids)
    ctx_names = sorted(set(map(str, contexts)))
    codes = np.array([ctx_names.index(str(c)) for c in contexts], dtype=np.int64)
    present = np.zeros((n, len(sources)), dtype=bool)
    values: list[np.ndarray | None] = [None] * len(sources)
    for code, ctx in enumerate(ctx_names):
        rows = np.flatnonzero(codes == code)
        ids = [entity_ids[r] or "" for r in rows]
        for s, name in enumerate(sources):
            try:
                ds = store.align([name], ids, context=ctx, tag=tag)
            except NotFoundError:  # a contextual source without a set for this context: absent here
                continue
            block = ds[name].values.astype(np.float32)
            if values[s] is None:
                values[s] = np.zeros((n, block.shape[1]), dtype=np.float32)
            values[s][rows] = np.nan_to_num(block)
            present[rows, s] = ds["covered"].values[:, 0].astype(bool)
    missing = [name for name, v in zip(sources, values) if v is None]
    if missing and not drop_empty:
        raise InvalidInputError(f"sources {missing} have no set in any of the contexts {ctx_names}")
    have = [i for i, v in enumerate(values) if v is not None]  # with drop_empty, such sources are left out
    sources, values, present = [sources[i] for i in have], [values[i] for i in have], present[:, have]
    if not drop_empty:
        return FusionInputs(list(sources), values, present, codes, ctx_names)
    kept = np.flatnonzero(present.any(axis=1))
    return FusionInputs(list(sources), [v[kept] for v in values], present[kept], codes[kept], ctx_names), kept


class FusionPredictor:
    """Fit the fusion model on some perturbations and predict others (sklearn-like)."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        self.model: FusionModel | None = None
        self.history: list[dict] = []
        self.meta: dict = {}

    def fit(self, x: FusionInputs, y: np.ndarray, *, progress=None) -> "FusionPredictor":
        """Train with Adam on a random 80% and early-stop on the other 20% (best validation state)."""
        cfg = self.config
        y = self._targets(y, len(x.context))
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(y))
        n_val = max(1, int(round(cfg.val_fraction * len(y)))) if len(y) > 4 else 0
        val, train = order[:n_val], order[n_val:]
        self.model = FusionModel([v.shape[1] for v in x.values], len(x.contexts), y.shape[1], cfg)
        self.meta = {"sources": x.sources, "contexts": x.contexts, "n_genes": int(y.shape[1]),
                     "source_dims": [int(v.shape[1]) for v in x.values], "config": cfg.model_dump()}
        self._start_at_train_mean(y[train])
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        train_t, val_t = x.tensors(train), x.tensors(val) if n_val else None
        y_train, y_val = torch.from_numpy(y[train]), torch.from_numpy(y[val]) if n_val else None
        best, best_state, waited = np.inf, None, 0
        gen = torch.Generator().manual_seed(cfg.seed)
        for epoch in range(cfg.max_epochs):
            self.model.train()
            perm = torch.randperm(len(train), generator=gen)
            total = 0.0
            for start in range(0, len(train), cfg.batch_size):
                b = perm[start:start + cfg.batch_size]
                loss = self._loss([v[b] for v in train_t[0]], train_t[1][b], train_t[2][b], y_train[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            val_loss = self._eval_loss(val_t, y_val) if n_val else total / len(train)
            self.history.append({"epoch": epoch, "train_loss": total / len(train), "val_loss": val_loss})
            if progress is not None:
                progress(epoch, val_loss)
            if val_loss < best - 1e-7:
                best, best_state, waited = val_loss, copy.deepcopy(self.model.state_dict()), 0
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        self.model.load_state_dict(best_state)
        self.model.eval()
        self.best_val_loss = float(best)
        return self

    @torch.no_grad()
    def _start_at_train_mean(self, y: np.ndarray) -> None:
        """Zero the head's weights and set its bias to the train mean (LFC) or the log class prior
        per gene (DEG): training starts from the train-mean control and improves on it."""
        head = self.model.head
        head.weight.zero_()
        if self.config.task == "deg":
            counts = np.stack([(y == c).sum(axis=0) for c in range(3)], axis=1) + 1.0  # [genes, 3], +1 smoothing
            head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum(axis=1, keepdims=True)).reshape(-1)))
        else:
            head.bias.copy_(torch.from_numpy(y.mean(axis=0)))

    def _targets(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[0] != n:
            raise InvalidInputError(f"fusion targets must be [{n}, genes], got {y.shape}")
        if self.config.task == "deg":
            if not np.isin(y, (-1, 0, 1)).all():
                raise InvalidInputError("DEG targets must be labels in {-1, 0, +1}")
            return (y + 1).astype(np.int64)
        if not np.isfinite(y).all():
            raise InvalidInputError("LFC targets hold NaN or inf")
        return y.astype(np.float32)

    def _loss(self, sources, present, context, y) -> torch.Tensor:
        out, tokens = self.model(sources, present, context)
        if self.config.task == "deg":
            loss = nn.functional.cross_entropy(out.permute(0, 2, 1), y)
        else:
            loss = nn.functional.mse_loss(out, y)
        if self.model.training and self.model.reconstruct is not None:
            rec = 0.0
            for s, (dec, x) in enumerate(zip(self.model.reconstruct, sources)):
                mask = present[:, s]
                if mask.any():
                    rec = rec + nn.functional.mse_loss(dec(tokens[mask, s]), x[mask])
            loss = loss + self.config.reconstruction_weight * rec
        return loss

    @torch.no_grad()
    def _eval_loss(self, tensors, y) -> float:
        self.model.eval()
        return float(self._loss(*tensors, y))

    @torch.no_grad()
    def predict(self, x: FusionInputs) -> np.ndarray:
        """Predicted LFC ``[n, genes]``, or DEG labels in {-1, 0, +1}."""
        if self.model is None:
            raise InvalidInputError("the fusion model is not fitted")
        if x.sources != self.meta["sources"]:
            raise InvalidInputError(f"fusion model was trained on sources {self.meta['sources']}, got {x.sources}")
        self.model.eval()
        outs = []
        for start in range(0, len(x.context), 1024):
            rows = np.arange(start, min(start + 1024, len(x.context)))
            out, _ = self.model(*x.tensors(rows))
            outs.append(out.argmax(-1).numpy().astype(np.int8) - 1 if self.config.task == "deg" else out.numpy())
        return np.concatenate(outs)

    def save(self, path: str | Path) -> None:
        """Write the weights and everything needed to rebuild the model into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "model.pt")
        (path / "fusion.json").write_text(json.dumps({**self.meta, "history": self.history}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "FusionPredictor":
        path = Path(path)
        if not (path / "fusion.json").exists():
            raise InvalidInputError(f"{path} holds no saved fusion model (fusion.json missing)")
        meta = json.loads((path / "fusion.json").read_text())
        self = cls(FusionConfig(**meta["config"]))
        self.model = FusionModel(meta["source_dims"], len(meta["contexts"]), meta["n_genes"], self.config)
        self.model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
        self.model.eval()
        self.history = meta.pop("history")
        self.meta = meta
        return self
