"""Training, prediction and persistence of the fusion model."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pertstore.consumers.fusion._model import FusionConfig, FusionModel
from torch import nn

from pertstore.errors import InvalidInputError, NotFoundError


@dataclass
class FusionInputs:
    """Embeddings of perturbations from several sources, with the sources each one has.

    ``values[s]`` is ``[n, d_s]`` float32 (rows of absent sources are ignored, whatever they hold);
    ``present`` is ``[n, S]`` bool; ``context`` holds context codes into ``contexts``;
    ``context_features`` (optional, ``[len(contexts), F]``) are the control features of each
    context that the cell-line autoencoder reads.
    """

    sources: list[str]
    values: list[np.ndarray]
    present: np.ndarray
    context: np.ndarray
    contexts: list[str]
    context_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.context)
        if len(self.values) != len(self.sources) or self.present.shape != (n, len(self.sources)):
            raise InvalidInputError(
                "fusion inputs: one value matrix per source and a [n, sources] presence mask needed"
            )
        for name, v in zip(self.sources, self.values):
            if v.shape[0] != n:
                raise InvalidInputError(f"fusion inputs: source {name} has {v.shape[0]} rows, expected {n}")
        empty = np.flatnonzero(~self.present.any(axis=1))
        if len(empty):
            raise InvalidInputError(
                f"fusion inputs: {len(empty)} perturbation(s) have no embedding from any source "
                f"(first row {empty[0]}); drop them or give them the train mean"
            )
        if self.context_features is not None:
            f = np.asarray(self.context_features)
            if f.ndim != 2 or len(f) != len(self.contexts) or not np.isfinite(f).all():
                raise InvalidInputError(
                    f"fusion inputs: context features must be finite, one row per context "
                    f"({len(self.contexts)}), got shape {f.shape}"
                )

    def subset(self, rows: np.ndarray) -> FusionInputs:
        return FusionInputs(
            self.sources,
            [v[rows] for v in self.values],
            self.present[rows],
            self.context[rows],
            self.contexts,
            self.context_features,
        )

    def tensors(self, rows: np.ndarray | None = None):
        idx = slice(None) if rows is None else rows
        return (
            [torch.from_numpy(np.ascontiguousarray(v[idx], dtype=np.float32)) for v in self.values],
            torch.from_numpy(self.present[idx]),
            torch.from_numpy(self.context[idx].astype(np.int64)),
        )


def inputs_from_store(
    store,
    sources: Sequence[str],
    entity_ids: Sequence[str | None],
    contexts: Sequence[str],
    *,
    tag: str | dict | None = None,
    drop_empty: bool = False,
):
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


def validation_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, validation rows)``: ``fraction`` of the distinct groups held out, every row of a
    group on one side (``LeaderboardSplitDataModule.setup``: scikit-learn's ``train_test_split`` over
    the unique split keys in order of appearance)."""
    from sklearn.model_selection import train_test_split

    groups = np.asarray(groups).astype(str)
    unique = pd.unique(groups)
    if len(unique) < 2:
        return np.arange(len(groups)), np.zeros(0, dtype=np.int64)
    _, held = train_test_split(unique, test_size=fraction, random_state=seed, shuffle=True)
    is_val = np.isin(groups, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def lfc_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean over perturbations of the L2 norm of the error (``PseudobulkRegressionTask.loss_fn``)."""
    return torch.linalg.vector_norm(pred - y, dim=-1).mean()


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """``[genes, 3]`` weights ``n / (3 * count)`` of each gene's classes in training (0 where a class
    never occurs; ``ClassWeightingCallback``); ``labels`` are class indices 0, 1, 2."""
    counts = torch.from_numpy(np.stack([(labels == k).sum(axis=0) for k in range(3)], axis=1).astype(np.int64))
    return (counts.sum(dim=1)[0] / (3 * counts)).nan_to_num(posinf=0.0)


def deg_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy per gene (weighted mean over perturbations), averaged over genes
    (``DEGClassificationTask.loss_fn``); a gene whose batch labels all weigh 0 adds 0."""
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, y[..., None])[..., 0]  # [batch, genes]
    w = weights[torch.arange(y.shape[1])[None, :], y]
    denom = w.sum(dim=0)
    per_gene = torch.where(denom > 0, (w * nll).sum(dim=0) / denom.clamp(min=1e-12), 0.0)
    return per_gene.mean()


class FusionPredictor:
    """Fit the fusion model on some perturbations and predict others (sklearn-like)."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        self.model: FusionModel | None = None
        self.history: list[dict] = []
        self.meta: dict = {}
        self.best_val_loss = float("nan")

    def fit(self, x: FusionInputs, y: np.ndarray, *, groups: Sequence | None = None, progress=None) -> FusionPredictor:
        """Train as the reference does and keep the state of the best validation loss.

        ``groups`` (e.g. the perturbed gene of each row) are split 80/20 by :func:`validation_split`,
        so no gene is in both; without them each row is its own group. Adam, a linear warm-up over
        ``warmup_epochs`` (per step, from ``lr * 1e-8``), gradient-norm clipping, early stopping on
        the validation task loss after ``patience`` epochs without a strict improvement.
        """
        cfg = self.config
        self.history = []
        y = self._targets(y, len(x.context))
        train, val = validation_split(
            np.arange(len(y)) if groups is None else np.asarray(groups), cfg.val_fraction, cfg.val_seed
        )
        if not len(train):
            raise InvalidInputError("fusion needs training perturbations of more than one gene (validation split)")
        torch.manual_seed(cfg.seed)
        features = None if x.context_features is None else torch.from_numpy(np.asarray(x.context_features, np.float32))
        self.model = FusionModel([v.shape[1] for v in x.values], len(x.contexts), y.shape[1], cfg, features)
        self.meta = {
            "sources": x.sources,
            "contexts": x.contexts,
            "n_genes": int(y.shape[1]),
            "source_dims": [int(v.shape[1]) for v in x.values],
            "config": cfg.model_dump(),
            "context_features": None if features is None else list(features.shape),
        }
        self._fit_statistics(x, train)
        train_t, val_t = x.tensors(train), x.tensors(val)
        y_t = torch.from_numpy(y)
        y_train, y_val = y_t[train], y_t[val]
        self.class_weights = class_weights(y[train]) if cfg.task == "deg" else None
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        steps_per_epoch = -(-len(train) // cfg.batch_size)
        warmup = (
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-8, total_iters=steps_per_epoch * cfg.warmup_epochs)
            if cfg.warmup_epochs
            else None
        )
        best, best_state, waited = np.inf, None, 0
        gen = torch.Generator().manual_seed(cfg.seed)
        for epoch in range(cfg.max_epochs):
            t0 = time.perf_counter()
            self.model.train()
            perm = torch.randperm(len(train), generator=gen)
            total, task_total = 0.0, 0.0
            for start in range(0, len(train), cfg.batch_size):
                b = perm[start : start + cfg.batch_size]
                task_loss, loss = self._losses([v[b] for v in train_t[0]], train_t[1][b], train_t[2][b], y_train[b])
                opt.zero_grad()
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                opt.step()
                if warmup is not None and warmup.last_epoch < warmup.total_iters:
                    warmup.step()
                total += float(loss.detach()) * len(b)
                task_total += float(task_loss.detach()) * len(b)
            val_loss = self._eval_loss(val_t, y_val) if len(val) else task_total / len(train)
            self.history.append(
                {
                    "epoch": epoch,
                    "train_loss": task_total / len(train),
                    "train_total_loss": total / len(train),
                    "val_loss": val_loss,
                    "seconds": time.perf_counter() - t0,
                }
            )
            if progress is not None:
                progress(epoch, val_loss)
            if val_loss < best:
                best, best_state, waited = val_loss, copy.deepcopy(self.model.state_dict()), 0
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        self.best_val_loss = float(best)
        return self

    @torch.no_grad()
    def _fit_statistics(self, x: FusionInputs, train: np.ndarray) -> None:
        """z-score statistics per source from the training rows that have it (``FitStatisticsCallback``)."""
        if self.config.input_norm != "zscore":
            return
        for s, v in enumerate(x.values):
            rows = train[x.present[train, s]]
            if len(rows) < 2:
                continue
            values = torch.from_numpy(np.ascontiguousarray(v[rows], dtype=np.float32))
            getattr(self.model, f"mean_{s}").copy_(values.mean(dim=0))
            getattr(self.model, f"std_{s}").copy_(values.std(dim=0).clamp(min=1e-8))

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

    def _losses(self, sources, present, context, y) -> tuple[torch.Tensor, torch.Tensor]:
        """``(task loss, total loss)``: total adds the weighted reconstruction and autoencoder losses."""
        out, aux = self.model(sources, present, context)
        task = deg_loss(out, y, self.class_weights) if self.config.task == "deg" else lfc_loss(out, y)
        total = (
            task
            + self.config.reconstruction_weight * aux["reconstruction"]
            + self.config.autoencoder_weight * aux["autoencoder"]
        )
        return task, total

    @torch.no_grad()
    def _eval_loss(self, tensors, y) -> float:
        """Validation task loss: the mean over batches weighted by their size (Lightning's epoch mean)."""
        self.model.eval()
        sources, present, context = tensors
        total = 0.0
        for start in range(0, len(y), self.config.batch_size):
            b = slice(start, start + self.config.batch_size)
            total += float(self._losses([v[b] for v in sources], present[b], context[b], y[b])[0]) * len(y[b])
        return total / len(y)

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
    def load(cls, path: str | Path) -> FusionPredictor:
        path = Path(path)
        if not (path / "fusion.json").exists():
            raise InvalidInputError(f"{path} holds no saved fusion model (fusion.json missing)")
        meta = json.loads((path / "fusion.json").read_text())
        self = cls(FusionConfig(**meta["config"]))
        shape = meta.get("context_features")
        features = None if shape is None else torch.zeros(shape)  # the saved values come with the state
        self.model = FusionModel(meta["source_dims"], len(meta["contexts"]), meta["n_genes"], self.config, features)
        self.model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
        self.model.eval()
        self.history = meta.pop("history")
        self.meta = meta
        return self
