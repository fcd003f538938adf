"""Train a generative model on one context's training perturbations and predict LFCs of new ones.

The latent space is the reference's (``utils.apply_pca``): StandardScaler then PCA, fitted on the
fold's training cells (controls and training perturbations), scaled to [-1, 1] by the training
latents' range (``latent_scale="minmax"``) or z-scored per dimension (the default). Training pairs a
perturbed cell with a control cell of the same batch (the
reference's ``data.py`` draws any control of the cell line; batch-matched pairs keep a batch's
controls mapped to that batch's perturbed cells, which is what prediction relies on).

Prediction (the paper's section 4.7): in every batch with controls, ``cells_per_batch`` control cells
are drawn (seeded, the same cells for every perturbation) and carried through the model with the
perturbation's embedding; the predicted cells are averaged per batch, the batch pseudobulks averaged,
and the same reduction of the controls subtracted (:func:`pseudobulk_lfc`). As PCA decoding is linear,
the difference is taken in the latent space and decoded once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from pertstore.errors import InvalidInputError

from ._backbone import DiT
from ._config import GenerativeConfig
from ._methods import make_method, seeded_numpy


@dataclass
class ContextCells:
    """Normalised (log1p) expression of one context's cells and their labels.

    ``x`` ``[cells, genes]`` float32; ``label`` the perturbation of each cell ("" for controls);
    ``batch`` each cell's batch; ``is_control``.
    """

    x: np.ndarray
    label: np.ndarray
    batch: np.ndarray
    is_control: np.ndarray


def pseudobulk_lfc(pred: np.ndarray, ctrl: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Mean over batches of the per-batch mean of ``pred`` minus the same of ``ctrl`` (rows paired by ``batch``)."""
    codes, inverse = np.unique(batch, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(codes)).astype(np.float64)
    weights = 1.0 / (len(codes) * counts[inverse])
    return weights @ (np.asarray(pred, np.float64) - np.asarray(ctrl, np.float64))


class Latent:
    """StandardScaler then PCA of the training cells; differences decode linearly to genes."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def fit(self, x: np.ndarray) -> Latent:
        self.scaler = StandardScaler().fit(x)
        dim = min(self.dim, x.shape[0] - 1, x.shape[1])
        self.pca = PCA(dim, svd_solver="full").fit(self.scaler.transform(x))
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(self.scaler.transform(x)).astype(np.float32)

    def decode_difference(self, dz: np.ndarray) -> np.ndarray:
        """Gene-space difference of two decoded latents whose difference is ``dz``."""
        return (np.asarray(dz, np.float64) @ self.pca.components_) * self.scaler.scale_


@dataclass
class GenerativePredictor:
    """One method (``flow``, ``diffusion``, ``schrodinger``) trained on one context's cells."""

    method: str
    config: GenerativeConfig = field(default_factory=GenerativeConfig)
    history: list[dict] = field(default_factory=list)

    def fit(
        self,
        cells: ContextCells,
        perts: list[str],
        embeddings: np.ndarray,
        progress: Callable[[str], None] | None = None,
    ) -> GenerativePredictor:
        """Train on the cells of ``perts`` (with ``embeddings`` ``[perts, D]``) and the context's controls."""
        cfg = self.config
        emb = np.asarray(embeddings, np.float64)
        if len(perts) != len(emb) or not len(perts):
            raise InvalidInputError(f"{len(perts)} training perturbations for {len(emb)} embeddings")
        self.cells = cells
        ctrl = np.flatnonzero(cells.is_control)
        if not ctrl.size:
            raise InvalidInputError("no control cells in the context")
        groups = [np.flatnonzero(cells.label == p) for p in perts]
        if empty := [p for p, g in zip(perts, groups) if not g.size]:
            raise InvalidInputError(f"no cells for training perturbation(s) {empty[:5]}")
        rows = np.concatenate([ctrl, *groups])
        self.latent = Latent(cfg.pca_dim).fit(cells.x[rows])
        z_all = self.latent.encode(cells.x)
        if cfg.latent_scale == "minmax":
            lo, hi = float(z_all[rows].min()), float(z_all[rows].max())
            self.center, self.scale = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
        else:
            self.center, sd = z_all[rows].mean(0), z_all[rows].std(0)
            self.scale = np.where(sd > 0, sd, 1.0)
        self.z = torch.from_numpy(self._normalise(z_all))
        self.emb_mean, self.emb_std = emb.mean(0), np.where(emb.std(0) > 0, emb.std(0), 1.0)
        cond = torch.from_numpy(((emb - self.emb_mean) / self.emb_std).astype(np.float32))

        sampler = make_method(self.method, cfg)
        sampler.clip = (float(self.z[rows].min()), float(self.z[rows].max()))  # DDPM clips its x0 estimate here
        self.sampler = sampler
        pert_of = np.concatenate([np.full(g.size, i) for i, g in enumerate(groups)])
        targets = np.concatenate(groups)
        same_batch = _controls_by_batch(cells, ctrl)
        with torch.random.fork_rng(devices=[]), seeded_numpy(cfg.seed):
            torch.manual_seed(cfg.seed)
            gen = torch.Generator().manual_seed(cfg.seed)
            rng = np.random.default_rng(cfg.seed)
            model = DiT(
                self.z.shape[1],
                cond.shape[1],
                in_channels=sampler.in_channels,
                out_channels=sampler.out_channels,
                hidden=cfg.hidden,
                depth=cfg.depth,
                heads=cfg.heads,
                mlp_ratio=cfg.mlp_ratio,
                cond_dropout=cfg.cond_dropout,
            )
            ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
            )
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            steps = math.ceil(rows.size / cfg.batch_size)
            for epoch in range(cfg.epochs):
                t0, total = time.perf_counter(), 0.0
                model.train()
                for _ in range(steps):
                    # a training perturbation, one of its cells, a control of that cell's batch
                    which = rng.integers(len(groups), size=cfg.batch_size)
                    cell = targets[_pick(rng, pert_of, which)]
                    source = same_batch(rng, cells.batch[cell])
                    loss = sampler.loss(model, self.z[source], self.z[cell], cond[which], gen)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    opt.step()
                    ema.update_parameters(model)
                    total += float(loss.detach())
                self.history.append({"epoch": epoch, "loss": total / steps, "seconds": time.perf_counter() - t0})
                if progress is not None:
                    progress(f"{self.method}: epoch {epoch + 1}/{cfg.epochs}, loss {total / steps:.4f}")
        self.model = ema.module.eval()
        return self

    def _normalise(self, z: np.ndarray) -> np.ndarray:
        return ((z - self.center) / self.scale).astype(np.float32)

    def _unnormalise(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale + self.center

    def control_cells(self) -> np.ndarray:
        """The control cells carried through the model: up to ``cells_per_batch`` per batch (seeded)."""
        return control_rows(self.cells, self.config.cells_per_batch, self.config.seed)

    def predict_cells(self, embedding: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
        """Predicted latent cells (unnormalised PCA coordinates) from the control cells ``rows``."""
        cond = torch.from_numpy(
            ((np.asarray(embedding, np.float64) - self.emb_mean) / self.emb_std).astype(np.float32)
        )[None].expand(rows.size, -1)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            x1 = self.sampler.sample(self.model, self.z[rows], cond, seed)
        return self._unnormalise(x1.numpy().astype(np.float64))

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """LFC ``[perts, genes]`` of perturbations with ``embeddings`` (section 4.7's pseudobulk reduction)."""
        rows = self.control_cells()
        ctrl = self._unnormalise(self.z[rows].numpy().astype(np.float64))
        batch = self.cells.batch[rows]
        out = []
        for i, e in enumerate(np.asarray(embeddings)):
            pred = self.predict_cells(e, rows, seed=self.config.seed + i)
            out.append(self.latent.decode_difference(pseudobulk_lfc(pred, ctrl, batch)))
        return np.stack(out) if out else np.zeros((0, self.cells.x.shape[1]))


def control_rows(cells: ContextCells, per_batch: int, seed: int) -> np.ndarray:
    """Rows of up to ``per_batch`` control cells of every batch with controls (seeded, sorted per batch)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in np.unique(cells.batch[cells.is_control]):
        pool = np.flatnonzero(cells.is_control & (cells.batch == b))
        out.append(np.sort(rng.choice(pool, min(per_batch, pool.size), replace=False)))
    return np.concatenate(out)


def _pick(rng: np.random.Generator, owner: np.ndarray, which: np.ndarray) -> np.ndarray:
    """For each entry of ``which``, a uniformly drawn position ``i`` with ``owner[i] == which``."""
    starts = np.searchsorted(owner, np.arange(owner.max() + 2))
    sizes = starts[which + 1] - starts[which]
    return starts[which] + (rng.random(which.size) * sizes).astype(np.int64)


def _controls_by_batch(cells: ContextCells, ctrl: np.ndarray):
    """``draw(rng, batches)``: a control cell of each batch (any control of the context where a batch has none)."""
    batches = cells.batch[ctrl]
    order = np.argsort(batches, kind="stable")
    sorted_ctrl, sorted_batches = ctrl[order], batches[order]
    keys, starts, counts = np.unique(sorted_batches, return_index=True, return_counts=True)

    def draw(rng: np.random.Generator, wanted: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(keys, wanted)
        pos = np.minimum(pos, len(keys) - 1)
        found = keys[pos] == wanted
        start = np.where(found, starts[pos], 0)
        size = np.where(found, counts[pos], sorted_ctrl.size)
        return sorted_ctrl[start + (rng.random(wanted.size) * size).astype(np.int64)]

    return draw
