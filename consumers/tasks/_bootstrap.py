"""Experimental error by hierarchical bootstrap (batches, then cells within batches), memory bounded."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._deg import mean_var, vote, welch_labels
from ._groups import Layout, Targets, layout
from ._ingest import PerturbationData
from ._lfc import lfc_design
from ._matrix import BLOCK_ROWS, Progress

CHUNK_TRIALS = 32
"""Trials computed together; fixed so that results do not depend on memory settings."""
QUANTILE = {"lfc": 0.9, "deg": 0.1}


@dataclass
class ExperimentalError:
    """Bootstrap error of a task.

    ``trials[i, t]`` is perturbation ``i``'s error in trial ``t`` (L2 distance
    of the replicate LFC to the LFC, or macro F1 of the replicate labels
    against the labels; NaN when the trial drew none of its batches);
    ``per_pert`` its ``quantile`` over trials; ``dataset[context]`` the
    quantile over trials of the task-level metric (mean L2 over
    perturbations, or F1 per gene averaged over genes): the limit a model
    can be expected to reach.
    """

    metric: str
    quantile: float
    trials: np.ndarray
    per_pert: np.ndarray
    dataset: dict[str, float]
    dataset_trials: dict[str, np.ndarray]
    params: dict


def concat_errors(errors: list[ExperimentalError | None],
                  renamed: list[dict[str, str]]) -> ExperimentalError | None:
    """The errors of tasks stacked row-wise (their contexts renamed by ``renamed``); None if any is None."""
    if not errors or any(e is None for e in errors):
        return None
    first = errors[0]
    n = min(e.trials.shape[1] for e in errors)
    return ExperimentalError(
        metric=first.metric, quantile=first.quantile, trials=np.vstack([e.trials[:, :n] for e in errors]),
        per_pert=np.concatenate([e.per_pert for e in errors]),
        dataset={names[c]: v for e, names in zip(errors, renamed) for c, v in e.dataset.items()},
        dataset_trials={names[c]: v for e, names in zip(errors, renamed) for c, v in e.dataset_trials.items()},
        params=first.params)


@dataclass
class Draws:
    """Inner bootstrap draws of a set of cells: draw ``i`` picks cell ``cell[i]`` in copy ``copy[i]``.

    A copy is one outer draw of one group's batch; ``copy_trial`` and
    ``copy_group`` give its trial and group.
    """

    n: int
    cell: np.ndarray
    copy: np.ndarray
    copy_trial: np.ndarray
    copy_group: np.ndarray

    def per_trial(self, n_trials: int) -> np.ndarray:
        """``[cells, trials]``: how often each cell was drawn in each trial."""
        flat = self.copy_trial[self.copy] * self.n + self.cell
        return np.bincount(flat, minlength=n_trials * self.n).reshape(n_trials, self.n).T.astype(np.float64)

    def per_copy(self) -> np.ndarray:
        """``[cells, copies]``: how often each cell was drawn in each copy."""
        k = self.copy_trial.size
        return np.bincount(self.copy * self.n + self.cell, minlength=k * self.n).reshape(k, self.n).T.astype(
            np.float64)


def resample(seed: int, key: tuple[int, ...], starts: np.ndarray, sizes: np.ndarray, copies: np.ndarray,
             n: int) -> Draws:
    """Inner bootstrap of groups of cells (rows ``starts[g] : starts[g] + sizes[g]`` of ``n``).

    ``copies[t, g]`` is how often the outer bootstrap drew group ``g``'s batch
    in trial ``t``; each copy redraws the group's cells with replacement, from
    ``numpy.random.default_rng([seed, 1, *key])``.
    """
    n_t, n_g = copies.shape
    reps = copies.ravel()
    copy_trial = np.repeat(np.repeat(np.arange(n_t), n_g), reps)
    copy_group = np.repeat(np.tile(np.arange(n_g), n_t), reps)
    copy = np.repeat(np.arange(copy_trial.size), sizes[copy_group])
    group = copy_group[copy]
    cell = starts[group] + np.random.default_rng([seed, 1, *key]).integers(0, sizes[group])
    return Draws(n=n, cell=cell, copy=copy, copy_trial=copy_trial, copy_group=copy_group)


def batch_draws(seed: int, context: int, n_batches: int, trials: int) -> np.ndarray:
    """Outer bootstrap: ``m[t, b]`` = times batch ``b`` is drawn in trial ``t`` (``n_batches`` draws)."""
    rng = np.random.default_rng([seed, 0, context, 0, 0])
    return rng.multinomial(n_batches, np.full(n_batches, 1.0 / n_batches), size=trials)


def macro_f1(conf: np.ndarray) -> np.ndarray:
    """Macro F1 over the classes present (in truth or prediction) of confusion matrices ``[..., true, pred]``."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    true, pred = conf.sum(axis=-1), conf.sum(axis=-2)
    present = (true + pred) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / (true + pred), 0.0)
        return f1.sum(axis=-1) / present.sum(axis=-1)


def experimental_error(data: PerturbationData, targets: Targets, *, trials: int = 100, seed: int = 0,
                       block_rows: int = BLOCK_ROWS, progress: Progress | None = None) -> ExperimentalError:
    """Hierarchical bootstrap of ``targets`` (from :func:`lfc` or :func:`deg`).

    Each trial draws, per context, as many batches as it has with replacement
    (batch ``b`` drawn ``m_b`` times), then for each draw resamples the cells
    of every (perturbation, batch) group and of the batch's controls with
    replacement, and recomputes the targets with the same variant and
    parameters. A batch drawn twice contributes two independent resamples:
    for LFC and pooled DEG their cells add up; for per-batch DEG each draw
    votes. Replicates come from sparse products of the cells with resampling
    counts (``X_p.T @ K``, ``K`` of shape ``[cells, trials]``), 32 trials at
    a time, so memory does not grow with ``trials`` (beyond the
    ``[perturbations, trials]`` error table) and no ``[trials, cells, genes]``
    array exists.

    ``progress("bootstrap", done, total)`` is called after each chunk of
    trials of each context.

    Returns
    -------
    Per-perturbation error distributions and the dataset-level limit per
    context: 0.9 quantile of L2 (LFC), 0.1 quantile of F1 (DEG).
    """
    lay = layout(data)
    run = _Run(data, lay, targets, seed, block_rows)
    contexts = sorted(data.perturbations["context"].unique())
    errors = np.full((targets.perts.size, trials), np.nan)
    dataset_trials: dict[str, np.ndarray] = {}
    for ci, ctx in enumerate(contexts):
        bidx = np.flatnonzero(lay.batch_context == ci)
        m = np.zeros((trials, lay.n.shape[1]), dtype=np.int64)
        m[:, bidx] = batch_draws(seed, ci, bidx.size, trials)
        rows = np.flatnonzero(lay.pert_context[targets.perts] == ci)
        level = np.full(trials, np.nan)
        for chunk, t0 in enumerate(range(0, trials, CHUNK_TRIALS)):
            mc = m[t0:t0 + CHUNK_TRIALS]
            err, level[t0:t0 + mc.shape[0]] = run.chunk(ci, rows, mc, chunk)
            errors[rows, t0:t0 + mc.shape[0]] = err
            if progress is not None:
                progress("bootstrap", ci * trials + t0 + mc.shape[0], len(contexts) * trials)
        dataset_trials[ctx] = level
    q = QUANTILE[targets.kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN
        per_pert = np.nanquantile(errors, q, axis=1)
        dataset = {ctx: float(np.nanquantile(v, q)) for ctx, v in dataset_trials.items()}
    return ExperimentalError(metric="l2" if targets.kind == "lfc" else "f1", quantile=q, trials=errors,
                             per_pert=per_pert, dataset=dataset, dataset_trials=dataset_trials,
                             params={"trials": trials, "seed": seed, "quantile": q,
                                     "chunk_trials": CHUNK_TRIALS})


class _Run:
    """One bootstrap: fixed data, targets and seed; computes a chunk of trials for one context."""

    def __init__(self, data: PerturbationData, lay: Layout, targets: Targets, seed: int, block_rows: int) -> None:
        self.data, self.lay, self.targets, self.seed, self.block_rows = data, lay, targets, seed, block_rows
        self.kind, self.variant = targets.kind, targets.variant
        n_genes = data.matrix.shape[1]
        if self.kind == "lfc":
            a, c = lfc_design(lay, self.variant)
            self.pert_batches, self.ctrl_batches = a > 0, c > 0
        else:
            min_cells = targets.params["min_cells"]
            if self.variant == "large":
                self.pert_batches = (lay.n >= min_cells) & (lay.n_ctrl >= min_cells)[None, :]
                self.ctrl_batches = self.pert_batches
            else:
                self.pert_batches = lay.n > 0
                same = lay.pert_context[:, None] == lay.batch_context[None, :]
                self.ctrl_batches = same & (lay.n_ctrl > 0)[None, :]
        self.n_genes = n_genes
        ctrl = lay.pert < 0
        self.ctrl_rows = {b: lay.rows[ctrl & (lay.batch == b)] for b in np.flatnonzero(lay.n_ctrl)}
        is_pert = ~ctrl
        order = np.lexsort((lay.batch[is_pert], lay.pert[is_pert]))
        self.cell_rows = lay.rows[is_pert][order]
        self.cell_batch = lay.batch[is_pert][order]
        self.offsets = np.concatenate([[0], np.cumsum(lay.n.sum(axis=1))])

    # ---- one chunk of trials -------------------------------------------------------------------

    def chunk(self, ci: int, rows: np.ndarray, m: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Errors ``[len(rows), trials in chunk]`` and the dataset-level metric per trial."""
        n_t = m.shape[0]
        batches = [b for b in self.ctrl_rows if self.lay.batch_context[b] == ci
                   and self.ctrl_batches[:, b].any()]
        ctrl = {b: self._ctrl_stats(b, m[:, b], chunk) for b in batches}
        err = np.full((rows.size, n_t), np.nan)
        conf = np.zeros((n_t, self.n_genes, 9), dtype=np.int64) if self.kind == "deg" else None
        for i, p, x in self._pert_rows(rows):
            if self.kind == "lfc":
                err[i] = self._lfc_error(p, x, m, chunk, ctrl, self.targets.values[rows[i]])
            else:
                labels, valid = self._deg_labels(p, x, m, chunk, ctrl)
                truth = self.targets.values[rows[i]].astype(np.int64) + 1
                code = truth[None, :] * 3 + labels.astype(np.int64) + 1
                code[~valid] = -1
                per = np.zeros((n_t, 9), dtype=np.int64)
                ok = np.flatnonzero(valid)
                for t in ok:
                    per[t] = np.bincount(code[t], minlength=9)
                    conf[t, np.arange(self.n_genes), code[t]] += 1
                err[i, ok] = macro_f1(per[ok].reshape(-1, 3, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a trial may hold no perturbation at all
            if self.kind == "lfc":
                return err, np.nanmean(err, axis=0)
            return err, np.nanmean(macro_f1(conf.reshape(n_t, self.n_genes, 3, 3)), axis=1)

    def _pert_rows(self, rows: np.ndarray) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """Yield (position in ``rows``, perturbation, its normalised cells sorted by batch), gathered in blocks."""
        perts = self.targets.perts[rows]
        start = 0
        while start < perts.size:
            stop, total = start, 0
            while stop < perts.size and (stop == start or total + self._size(perts[stop]) <= self.block_rows):
                total += self._size(perts[stop])
                stop += 1
            sel = np.concatenate([self.cell_rows[self.offsets[p]:self.offsets[p + 1]] for p in perts[start:stop]])
            x = self.data.matrix.take(sel)
            pos = 0
            for i in range(start, stop):
                size = self._size(perts[i])
                yield i, int(perts[i]), x[pos:pos + size]
                pos += size
            start = stop

    def _size(self, p: int) -> int:
        return int(self.offsets[p + 1] - self.offsets[p])

    def _groups(self, p: int) -> Iterator[tuple[int, slice]]:
        """(batch, slice of p's cells) for every batch of p."""
        batch = self.cell_batch[self.offsets[p]:self.offsets[p + 1]]
        bounds = np.flatnonzero(np.diff(batch)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [batch.size]])
        for s, e in zip(starts, stops, strict=True):
            yield int(batch[s]), slice(int(s), int(e))

    # ---- controls ------------------------------------------------------------------------------

    def _ctrl_stats(self, b: int, copies: np.ndarray, chunk: int) -> tuple:
        x = self.data.matrix.take(self.ctrl_rows[b])
        n = x.shape[0]
        draws = resample(self.seed, (0, b + 1, chunk), np.zeros(1, int), np.array([n]), copies[:, None], n)
        if self.kind == "lfc":
            return (x.T @ draws.per_trial(copies.size) / n,)
        x2 = x.copy()
        x2.data **= 2
        if self.variant == "large":
            counts = draws.per_copy()
            s1, s2 = (x.T @ counts).T, (x2.T @ counts).T
            return mean_var(s1, s2, np.full((counts.shape[1], 1), float(n)))
        k = draws.per_trial(copies.size)
        return k.sum(axis=0), (x.T @ k).T, (x2.T @ k).T

    # ---- LFC -----------------------------------------------------------------------------------

    def _draws(self, p: int, m: np.ndarray, chunk: int) -> tuple[list[tuple[int, slice]], Draws]:
        """p's groups (one per batch, sorted) and their inner draws (key ``(p + 1, 0, chunk)``)."""
        groups = list(self._groups(p))
        starts = np.array([r.start for _, r in groups], dtype=np.int64)
        sizes = np.array([r.stop - r.start for _, r in groups], dtype=np.int64)
        batches = np.array([b for b, _ in groups], dtype=np.int64)
        return groups, resample(self.seed, (p + 1, 0, chunk), starts, sizes, m[:, batches], self._size(p))

    def _lfc_error(self, p: int, x: sp.csr_matrix, m: np.ndarray, chunk: int, ctrl: dict,
                   lfc: np.ndarray) -> np.ndarray:
        n_t = m.shape[0]
        groups, draws = self._draws(p, m, chunk)
        scale = np.zeros(x.shape[0])
        for b, rows in groups:
            scale[rows] = self.pert_batches[p, b] / (rows.stop - rows.start)
        weights = draws.per_trial(n_t) * scale[:, None]
        cb = np.flatnonzero(self.ctrl_batches[p])
        pert_m, ctrl_m = m[:, self.pert_batches[p]].sum(axis=1), m[:, cb].sum(axis=1)
        ok = (pert_m > 0) & (ctrl_m > 0)
        delta = (x.T @ weights[:, ok]) / pert_m[ok] - sum(ctrl[b][0][:, ok] for b in cb) / ctrl_m[ok]
        err = np.full(n_t, np.nan)
        err[ok] = np.linalg.norm(delta - lfc[:, None], axis=0)
        return err

    # ---- DEG -----------------------------------------------------------------------------------

    def _deg_labels(self, p: int, x: sp.csr_matrix, m: np.ndarray, chunk: int,
                    ctrl: dict) -> tuple[np.ndarray, np.ndarray]:
        n_t = m.shape[0]
        alpha = self.targets.params["alpha"]
        x2 = x.copy()
        x2.data **= 2
        if self.variant == "large":
            votes = np.zeros((3, n_t, self.n_genes), dtype=np.int32)
            groups, draws = self._draws(p, m, chunk)
            per_copy = draws.per_copy()
            for g, (b, rows) in enumerate(groups):
                cols = np.flatnonzero(draws.copy_group == g)
                if not cols.size or not self.pert_batches[p, b]:
                    continue
                n, counts, trial = rows.stop - rows.start, per_copy[rows][:, cols], draws.copy_trial[cols]
                mean, var = mean_var((x[rows].T @ counts).T, (x2[rows].T @ counts).T, np.full((trial.size, 1), n))
                ref_mean, ref_var = ctrl[b]
                labels = welch_labels(mean, var, n, ref_mean, ref_var, self.lay.n_ctrl[b], alpha=alpha)
                onehot = sp.csr_matrix((np.ones(trial.size), (trial, np.arange(trial.size))),
                                       shape=(n_t, trial.size))
                for k in range(3):
                    votes[k] += (onehot @ (labels == k - 1)).astype(np.int32)
            valid = (m[:, self.pert_batches[p]].sum(axis=1) > 0)
            return vote(votes), valid
        weights = self._draws(p, m, chunk)[1].per_trial(n_t)
        n = weights.sum(axis=0)[:, None]
        mean, var = mean_var((x.T @ weights).T, (x2.T @ weights).T, n)
        cb = np.flatnonzero(self.ctrl_batches[p])
        cn = sum(ctrl[b][0] for b in cb)[:, None]
        cmean, cvar = mean_var(sum(ctrl[b][1] for b in cb), sum(ctrl[b][2] for b in cb), cn)
        valid = (n[:, 0] > 0) & (cn[:, 0] > 0)
        return welch_labels(mean, var, n, cmean, cvar, cn, alpha=alpha), valid

