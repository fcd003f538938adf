"""The LFC experimental error's replicates: the reference's two-stage and plate-matched bootstraps as weights.

Also the reader of a perturbation's cells (:class:`_Cells`) that the DEG replicates share.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ._groups import Layout, Targets
from ._ingest import PerturbationData
from ._lfc import lfc_design
from ._matrix import Progress

LFC_METRICS = ("l2", "mse", "mae", "pearson", "spearman")
"""Named as the runner's regression metrics."""


def _draw_rows(ss: np.random.SeedSequence, sizes: list[int], inner: int) -> list[np.ndarray]:
    """``bootstrap_csr_mean``'s draws for consecutive groups from one stream: ``[inner, size]`` row indices each."""
    rng = np.random.Generator(np.random.PCG64(ss))  # = default_rng(ss), without its dispatch
    return [rng.integers(n, size=inner * n).reshape(inner, n) for n in sizes]  # C order: the same stream


class _Weights:
    """Accumulates ``W[row, trial] += weight`` for whole ``[inner, n]`` draws; one ``bincount`` at the end."""

    def __init__(self, n_rows: int, n_trials: int) -> None:
        self.shape, self.keys, self.weights, self.sizes = (n_rows, n_trials), [], [], []

    def add(self, idx: np.ndarray, start: int, first_trial: int, weight: float) -> None:
        inner, n = idx.shape
        key = (idx + start) * self.shape[1]
        key += np.arange(first_trial, first_trial + inner)[:, None]
        self.keys.append(key.ravel())
        self.weights.append(weight)
        self.sizes.append(key.size)

    def matrix(self) -> np.ndarray:
        if not self.keys:
            return np.zeros(self.shape)
        size = self.shape[0] * self.shape[1]
        weights = np.repeat(self.weights, self.sizes)
        return np.bincount(np.concatenate(self.keys), weights=weights, minlength=size).reshape(self.shape)


def two_stage_weights(
    starts: np.ndarray, sizes: np.ndarray, ss: np.random.SeedSequence, outer: int, inner: int
) -> np.ndarray:
    """``two_stage_bootstrap_global``'s replicate means as weights ``W [cells, outer * inner]``.

    Cells of group (batch) ``g`` are rows ``starts[g] : starts[g] + sizes[g]``,
    groups in sorted batch order. The mean of replicate ``i * inner + t`` is
    ``X.T @ W[:, i * inner + t]``.
    """
    n_g = sizes.size
    w = _Weights(int(sizes.sum()), outer * inner)
    for i, ss_outer in enumerate(ss.spawn(outer)):
        drawn = np.random.default_rng(ss_outer).choice(n_g, size=n_g, replace=True) if n_g > 1 else np.zeros(1, int)
        for g, ss_inner in zip(drawn, ss_outer.spawn(drawn.size), strict=True):
            (idx,) = _draw_rows(ss_inner, [int(sizes[g])], inner)
            w.add(idx, int(starts[g]), i * inner, 1.0 / (sizes[g] * drawn.size))
    return w.matrix()


def matched_weights(
    starts: np.ndarray,
    sizes: np.ndarray,
    ctrl_sizes: np.ndarray,
    ss: np.random.SeedSequence,
    outer: int,
    inner: int,
    n_rows: int | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The plate-matched bootstrap's weights: perturbed cells ``[cells, trials]`` and controls per batch.

    Batch ``g`` (in the order the reference lists them) holds perturbed rows
    ``starts[g] : starts[g] + sizes[g]`` and ``ctrl_sizes[g]`` controls; in
    each drawn batch the perturbed cells, then the controls, are resampled from
    one stream. Replicate = ``X.T @ W - sum_g C_g.T @ V_g``. ``n_rows``: rows of ``X`` (default the
    batches' cells; more when ``X`` also holds cells of batches left out, which get weight 0).
    """
    n_g = sizes.size
    w = _Weights(int(sizes.sum()) if n_rows is None else n_rows, outer * inner)
    v = [_Weights(int(n), outer * inner) for n in ctrl_sizes]
    for i, ss_outer in enumerate(ss.spawn(outer)):
        drawn = np.random.default_rng(ss_outer).choice(n_g, size=n_g)
        for g, ss_inner in zip(drawn, ss_outer.spawn(drawn.size), strict=True):
            pert, ctrl = _draw_rows(ss_inner, [int(sizes[g]), int(ctrl_sizes[g])], inner)
            w.add(pert, int(starts[g]), i * inner, 1.0 / (sizes[g] * drawn.size))
            v[g].add(ctrl, 0, i * inner, 1.0 / (ctrl_sizes[g] * drawn.size))
    return w.matrix(), [vg.matrix() for vg in v]


def lfc_metrics(replicates: np.ndarray, lfc: np.ndarray) -> np.ndarray:
    """``[trials, 5]``: L2, MSE, MAE, Pearson, Spearman of each replicate (column of ``[genes, trials]``)."""
    diff = replicates - lfc[:, None]
    out = np.empty((replicates.shape[1], len(LFC_METRICS)))
    out[:, 0] = np.linalg.norm(diff, axis=0)
    out[:, 1] = (diff**2).mean(axis=0)
    out[:, 2] = np.abs(diff).mean(axis=0)
    out[:, 3] = _pearson(replicates, lfc)
    out[:, 4] = _pearson(stats.rankdata(replicates, axis=0), stats.rankdata(lfc))
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson of every column of ``a`` with ``b`` (NaN when one is constant, as scipy)."""
    a = a - a.mean(axis=0)
    b = b - b.mean()
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (b @ a) / denom, np.nan)


def _lfc_trials(
    data: PerturbationData,
    lay: Layout,
    targets: Targets,
    outer: int,
    inner: int,
    seed: int,
    block_rows: int,
    progress: Progress | None,
) -> np.ndarray:
    n_trials = outer * inner
    out = np.full((targets.perts.size, n_trials, len(LFC_METRICS)), np.nan)
    cells = _Cells(data, lay)
    row_of = {int(p): i for i, p in enumerate(targets.perts)}
    a, _ = lfc_design(lay, targets.variant)
    done = 0
    for ci in range(len(data.cells["context"].cat.categories)):
        ctx_perts = np.flatnonzero(lay.pert_context == ci)  # sorted by label: the reference's order
        seq = np.random.SeedSequence(seed)
        if targets.variant in ("small", "differential"):
            ctrl_b = np.flatnonzero((lay.batch_context == ci) & (lay.n_ctrl > 0))
            ss_ctrl, *ss_perts = seq.spawn(1 + ctx_perts.size)
            ctrl_rep = 0.0
            if targets.variant == "small":  # differential input holds differences already
                sizes = lay.n_ctrl[ctrl_b]
                ctrl_rep = cells.controls(ctrl_b).T @ two_stage_weights(
                    np.r_[0, np.cumsum(sizes)[:-1]], sizes, ss_ctrl, outer, inner
                )
        else:
            ss_perts = seq.spawn(ctx_perts.size)
        wanted = [p for p in ctx_perts if int(p) in row_of]
        for p, x in cells.perturbed(wanted, block_rows):
            i, k = row_of[int(p)], int(np.searchsorted(ctx_perts, p))
            groups = cells.groups(p)
            if targets.variant in ("small", "differential"):
                starts = np.array([s.start for _, s in groups])
                sizes = np.array([s.stop - s.start for _, s in groups])
                rep = x.T @ two_stage_weights(starts, sizes, ss_perts[k], outer, inner) - ctrl_rep
            else:
                groups = [(b, s) for b, s in groups if a[p, b] > 0]
                groups.sort(key=lambda g: cells.first_row(p, g[1]))  # plates as the reference lists them
                starts = np.array([s.start for _, s in groups])
                sizes = np.array([s.stop - s.start for _, s in groups])
                batches = [b for b, _ in groups]
                # plates without controls are left out (as the reference), their cells weighted 0
                w, v = matched_weights(starts, sizes, lay.n_ctrl[batches], ss_perts[k], outer, inner, n_rows=x.shape[0])
                rep = x.T @ w - sum(cells.controls([b]).T @ vb for b, vb in zip(batches, v, strict=True))
            out[i] = lfc_metrics(np.asarray(rep), targets.values[i])
            done += 1
            if progress is not None:
                progress("bootstrap", done, targets.perts.size)
    return out


class _Cells:
    """Normalised cells of one perturbation (sorted by batch, file order within) or of control batches."""

    def __init__(self, data: PerturbationData, lay: Layout) -> None:
        self.data, self.lay = data, lay
        ctrl = lay.pert < 0
        self.ctrl_rows = {int(b): lay.rows[ctrl & (lay.batch == b)] for b in np.flatnonzero(lay.n_ctrl)}
        self._ctrl_cache: dict[int, sp.csr_matrix] = {}
        is_pert = ~ctrl
        order = np.lexsort((lay.batch[is_pert], lay.pert[is_pert]))
        self.cell_rows = lay.rows[is_pert][order]
        self.cell_batch = lay.batch[is_pert][order]
        self.offsets = np.concatenate([[0], np.cumsum(lay.n.sum(axis=1))])

    def controls(self, batches) -> sp.csr_matrix:
        """Control cells of ``batches`` (in that order), each batch read once."""
        for b in batches:
            if int(b) not in self._ctrl_cache:
                self._ctrl_cache[int(b)] = self.data.matrix.take(self.ctrl_rows[int(b)])
        return sp.vstack([self._ctrl_cache[int(b)] for b in batches], format="csr")

    def size(self, p: int) -> int:
        return int(self.offsets[p + 1] - self.offsets[p])

    def perturbed(self, perts: list[int], block_rows: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(p, its cells)`` for ``perts``, read in blocks of about ``block_rows`` cells."""
        start = 0
        while start < len(perts):
            stop, total = start, 0
            while stop < len(perts) and (stop == start or total + self.size(perts[stop]) <= block_rows):
                total += self.size(perts[stop])
                stop += 1
            sel = np.concatenate([self.cell_rows[self.offsets[p] : self.offsets[p + 1]] for p in perts[start:stop]])
            x = self.data.matrix.take(sel)
            pos = 0
            for p in perts[start:stop]:
                yield int(p), x[pos : pos + self.size(p)]
                pos += self.size(p)
            start = stop

    def groups(self, p: int) -> list[tuple[int, slice]]:
        """(batch, slice of p's cells) for every batch of p, in batch order."""
        batch = self.cell_batch[self.offsets[p] : self.offsets[p + 1]]
        bounds = np.flatnonzero(np.diff(batch)) + 1
        starts, stops = np.r_[0, bounds], np.r_[bounds, batch.size]
        return [(int(batch[s]), slice(int(s), int(e))) for s, e in zip(starts, stops, strict=True)]

    def first_row(self, p: int, rows: slice) -> int:
        return int(self.cell_rows[self.offsets[p] + rows.start])
