"""Experimental error by hierarchical bootstrap (batches, then cells within batches), memory bounded."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ._deg import mean_var, vote, welch_labels
from ._groups import Layout, Targets, layout
from ._ingest import PerturbationData
from ._matrix import BLOCK_ROWS, Progress

CHUNK_TRIALS = 32
"""Trials computed together; fixed so that results do not depend on memory settings."""
LFC_METRICS = ("l2", "mse", "mae", "pearson", "spearman")
DEG_METRICS = ("f1", "precision", "recall")
HIGHER_IS_BETTER = {"pearson", "spearman", "f1", "precision", "recall"}
ERROR_QUANTILE = 0.9
"""The limit is the 0.9 quantile of an error (L2, MSE, MAE) and the 0.1 quantile of a score (correlations, F1)."""
REFERENCE_SEED = 5050


def limit_quantile(metric: str) -> float:
    """The quantile of a metric's bootstrap distribution that is its experimental-error limit."""
    return 1 - ERROR_QUANTILE if metric in HIGHER_IS_BETTER else ERROR_QUANTILE


@dataclass
class ExperimentalError:
    """Bootstrap experimental error of a task, per perturbation (LFC) or per fold (DEG).

    LFC (``run_exp_error_essential.py`` / ``run_exp_error_plate_matched.py``): ``per_pert[i, m]`` is
    perturbation ``i``'s limit for metric ``metrics[m]`` (the 0.9 quantile over its trials of the
    error of the replicate LFC against the LFC; 0.1 for correlations); ``trials[i, t]`` the L2 of
    trial ``t``. A fold's limit is the mean over its test perturbations (:meth:`fold_limits`).
    DEG (``run_exp_error_*_deg.py``): ``fold_trials`` holds each fold's F1, precision and recall of
    the replicate labels against the labels, per trial; a fold's limit is their 0.1 quantile.
    """

    kind: str
    metrics: list[str]
    per_pert: np.ndarray
    trials: np.ndarray
    fold_trials: pd.DataFrame
    params: dict

    def fold_limits(self, folds: np.ndarray, contexts: list[str]) -> pd.DataFrame:
        """The limit of every (context, fold, metric): ``context, fold, metric, value``."""
        if self.kind == "deg":
            g = self.fold_trials.groupby(["context", "fold", "metric"]).value
            out = g.quantile(1 - ERROR_QUANTILE).reset_index()
            return out[["context", "fold", "metric", "value"]]
        frame = pd.DataFrame(self.per_pert, columns=self.metrics).assign(context=contexts, fold=folds)
        frame = frame[frame.fold >= 0]
        long = frame.melt(id_vars=["context", "fold"], var_name="metric", value_name="value")
        return long.groupby(["context", "fold", "metric"]).value.mean().reset_index()


def concat_errors(errors: list[ExperimentalError | None],
                  renamed: list[dict[str, str]]) -> ExperimentalError | None:
    """The errors of tasks stacked row-wise (their contexts renamed by ``renamed``); None if any is None."""
    if not errors or any(e is None for e in errors):
        return None
    first = errors[0]
    n = min(e.trials.shape[1] for e in errors)
    fold_trials = pd.concat([e.fold_trials.assign(context=e.fold_trials["context"].map(names))
                             for e, names in zip(errors, renamed)], ignore_index=True)
    return ExperimentalError(kind=first.kind, metrics=first.metrics,
                             per_pert=np.vstack([e.per_pert for e in errors]),
                             trials=np.vstack([e.trials[:, :n] for e in errors]), fold_trials=fold_trials,
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


def truth_present_scores(conf: np.ndarray) -> dict[str, np.ndarray]:
    """F1, precision and recall of confusion matrices ``[trial, gene, true, pred]``, averaged over the classes
    present in each gene's truth, then over genes (``task/metrics.py``): one value per trial."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    true, pred = conf.sum(axis=-1).astype(float), conf.sum(axis=-2).astype(float)
    present = true > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(true + pred > 0, 2 * tp / (true + pred), 0.0)
        return {name: np.nanmean((v * present).sum(axis=-1) / present.sum(axis=-1), axis=-1)
                for name, v in (("f1", f1), ("precision", precision), ("recall", recall))}


def experimental_error(data: PerturbationData, targets: Targets, *, folds: np.ndarray | None = None,
                       outer: int = 10, inner: int = 10, seed: int = REFERENCE_SEED, block_rows: int = BLOCK_ROWS,
                       progress: Progress | None = None) -> ExperimentalError:
    """The experimental error of ``targets`` (from :func:`lfc` or :func:`deg`), as the reference computes it.

    LFC (``experimental_error/run_exp_error_essential.py`` for small batches and differential input,
    ``run_exp_error_plate_matched.py`` for large ones): per context, ``SeedSequence(seed)``; per
    perturbation (sorted) its own batches are drawn with replacement (``outer`` times), then each
    drawn batch's cells ``inner`` times (``bootstrap_csr_mean``), batch means averaged with equal
    weight. Small batches: the controls are bootstrapped once the same way and subtracted trial by
    trial; large batches: each drawn plate's control cells are resampled with the same generator and
    subtracted plate by plate. Each trial's replicate LFC is scored against the LFC (L2, MSE, MAE,
    Pearson, Spearman). Resampling counts multiply the sparse cells (``K @ X``): no
    ``[trials, cells, genes]`` array.

    DEG (``run_exp_error_essential_deg.py``, ``run_exp_error_tahoe_deg.py``): ``outer * inner``
    trials; small batches resample the cells of every perturbation and of the controls (no batch
    level), large ones draw batches, then cells, and vote; each trial's labels are scored per fold
    (``folds`` needed) with F1, precision and recall over the classes present in the truth.
    """
    lay = layout(data)
    params = {"outer": outer, "inner": inner, "seed": seed, "quantile_error": ERROR_QUANTILE,
              "quantile_score": 1 - ERROR_QUANTILE}
    if targets.kind == "lfc":
        per_pert, l2 = _lfc_reference(data, lay, targets, outer, inner, seed, progress)
        return ExperimentalError(kind="lfc", metrics=list(LFC_METRICS), per_pert=per_pert, trials=l2,
                                 fold_trials=pd.DataFrame(columns=["context", "fold", "trial", "metric", "value"]),
                                 params=params)
    if folds is None:
        raise ValueError("the DEG experimental error is computed per fold: pass folds")
    trials = outer * inner
    run = _Run(data, lay, targets, seed, block_rows)
    contexts = sorted(data.perturbations["context"].unique())
    frames = []
    for ci, ctx in enumerate(contexts):
        bidx = np.flatnonzero(lay.batch_context == ci)
        m = np.zeros((trials, lay.n.shape[1]), dtype=np.int64)
        m[:, bidx] = batch_draws(seed, ci, bidx.size, trials) if targets.variant == "large" else 1
        rows = np.flatnonzero(lay.pert_context[targets.perts] == ci)
        for chunk, t0 in enumerate(range(0, trials, CHUNK_TRIALS)):
            mc = m[t0:t0 + CHUNK_TRIALS]
            frames.append(run.chunk(rows, folds[rows], mc, chunk).assign(context=ctx, trial=lambda d: d.trial + t0))
            if progress is not None:
                progress("bootstrap", ci * trials + t0 + mc.shape[0], len(contexts) * trials)
    return ExperimentalError(kind="deg", metrics=list(DEG_METRICS), per_pert=np.zeros((targets.perts.size, 0)),
                             trials=np.zeros((targets.perts.size, 0)), fold_trials=pd.concat(frames, ignore_index=True),
                             params=params)


def _lfc_reference(data: PerturbationData, lay: Layout, targets: Targets, outer: int, inner: int, seed: int,
                   progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-perturbation limits ``[pert, metric]`` and per-trial L2 ``[pert, trial]`` (see experimental_error)."""
    perts = data.perturbations.iloc[targets.perts]
    labels = lay.batches["batch"].to_numpy()
    per_pert = np.full((targets.perts.size, len(LFC_METRICS)), np.nan)
    l2 = np.full((targets.perts.size, outer * inner), np.nan)
    ctrl_of = {b: lay.rows[(lay.pert < 0) & (lay.batch == b)] for b in np.flatnonzero(lay.n_ctrl)}
    done = 0
    for ctx in sorted(perts["context"].unique()):
        seq = np.random.SeedSequence(seed)
        rows = np.flatnonzero(perts["context"].to_numpy() == ctx)
        rows = rows[np.argsort(perts["label"].to_numpy()[rows], kind="stable")]
        ctrl = None
        if targets.variant == "small":   # the global control, bootstrapped once (the first child seed)
            batches = sorted((b for b in ctrl_of if lay.batches["context"].iloc[b] == ctx), key=lambda b: labels[b])
            ctrl = _two_stage([data.matrix.take(ctrl_of[b]) for b in batches], seq.spawn(1)[0], outer, inner)
        for r, child in zip(rows, seq.spawn(rows.size), strict=True):
            p = int(targets.perts[r])
            if targets.variant == "large":
                delta = _plate_matched(data, lay, p, ctrl_of, child, outer, inner)
            else:
                own = sorted(np.flatnonzero(lay.n[p] > 0), key=lambda b: labels[b])
                delta = _two_stage([data.matrix.take(_cells(lay, p, b)) for b in own], child, outer, inner)
                if ctrl is not None:
                    delta = delta - ctrl
            scores = _scores(delta, targets.values[r])
            l2[r] = scores["l2"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # constant replicates have no correlation
                per_pert[r] = [np.nanquantile(scores[m], limit_quantile(m)) for m in LFC_METRICS]
            done += 1
            if progress is not None:
                progress("bootstrap", done, targets.perts.size)
    return per_pert, l2


def _cells(lay: Layout, p: int, b: int) -> np.ndarray:
    """File rows of perturbation ``p``'s cells in batch ``b``, in file order."""
    return lay.rows[(lay.pert == p) & (lay.batch == b)]


def _draw_counts(rng: np.random.Generator, n: int, n_trials: int) -> np.ndarray:
    """The reference's ``bootstrap_csr_mean`` draws (``rng.integers(n, size=(n_trials, n))``) as counts
    ``[n_trials, n]``: the mean of the drawn rows is ``counts @ X / n``."""
    idx = rng.integers(n, size=(n_trials, n))
    return np.bincount((np.arange(n_trials)[:, None] * n + idx).ravel(), minlength=n_trials * n).reshape(n_trials, n)


def _stack(groups: list[sp.csr_matrix]) -> tuple[sp.csr_matrix, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([g.shape[0] for g in groups])]).astype(np.int64)
    return sp.vstack(groups, format="csr"), offsets


def _two_stage(groups: list[sp.csr_matrix], seq: np.random.SeedSequence, outer: int, inner: int) -> np.ndarray:
    """``two_stage_bootstrap_global``: batches drawn (when more than one), cells within each, batch means
    averaged with equal weight; ``[outer * inner, genes]``. The draws of all trials become one weight
    matrix and one sparse product (no ``[trials, cells, genes]`` array)."""
    x, offsets = _stack(groups)
    weights = np.zeros((outer * inner, x.shape[0]))
    for o, s_outer in enumerate(seq.spawn(outer)):
        drawn = (np.random.default_rng(s_outer).choice(len(groups), size=len(groups), replace=True)
                 if len(groups) > 1 else np.zeros(1, dtype=np.int64))
        trials = slice(o * inner, (o + 1) * inner)
        for g, s in zip(drawn, s_outer.spawn(len(drawn)), strict=True):
            n = int(offsets[g + 1] - offsets[g])
            weights[trials, offsets[g]:offsets[g + 1]] += _draw_counts(np.random.default_rng(s), n, inner) / (
                n * len(drawn))
    return np.asarray((x.T @ weights.T).T)


def _plate_matched(data: PerturbationData, lay: Layout, p: int, ctrl_of: dict, seq: np.random.SeedSequence,
                   outer: int, inner: int) -> np.ndarray:
    """``run_exp_error_plate_matched.bootstrap``: the perturbation's plates (in the order they first occur)
    drawn, then per drawn plate its cells and the plate's controls resampled with one generator."""
    own = (lay.pert == p) & np.isin(lay.batch, list(ctrl_of))
    first = pd.unique(lay.batch[own][np.argsort(lay.rows[own], kind="stable")])
    xp, op = _stack([data.matrix.take(_cells(lay, p, b)) for b in first])
    xc, oc = _stack([data.matrix.take(ctrl_of[b]) for b in first])
    wp, wc = np.zeros((outer * inner, xp.shape[0])), np.zeros((outer * inner, xc.shape[0]))
    for o, s_outer in enumerate(seq.spawn(outer)):
        drawn = np.random.default_rng(s_outer).choice(len(first), size=len(first))
        trials = slice(o * inner, (o + 1) * inner)
        for g, s in zip(drawn, s_outer.spawn(len(drawn)), strict=True):
            rng = np.random.default_rng(s)
            n_p, n_c = int(op[g + 1] - op[g]), int(oc[g + 1] - oc[g])
            wp[trials, op[g]:op[g + 1]] += _draw_counts(rng, n_p, inner) / (n_p * len(drawn))
            wc[trials, oc[g]:oc[g + 1]] += _draw_counts(rng, n_c, inner) / (n_c * len(drawn))
    return np.asarray((xp.T @ wp.T).T) - np.asarray((xc.T @ wc.T).T)


def _scores(delta: np.ndarray, point: np.ndarray) -> dict[str, np.ndarray]:
    """Each trial's L2, MSE, MAE, Pearson and Spearman of a replicate LFC against the LFC (scipy's definitions)."""
    diff = delta - point[None, :]

    def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a @ b) / np.sqrt((a * a).sum(axis=1) * (b @ b))

    return {"l2": np.linalg.norm(diff, axis=1), "mse": (diff ** 2).mean(axis=1), "mae": np.abs(diff).mean(axis=1),
            "pearson": pearson(delta, point),
            "spearman": pearson(stats.rankdata(delta, axis=1), stats.rankdata(point))}


class _Run:
    """One DEG bootstrap: fixed data, targets and seed; computes a chunk of trials for one context."""

    def __init__(self, data: PerturbationData, lay: Layout, targets: Targets, seed: int, block_rows: int) -> None:
        self.data, self.lay, self.targets, self.seed, self.block_rows = data, lay, targets, seed, block_rows
        self.variant = targets.variant
        min_cells = targets.params["min_cells"]
        if self.variant == "large":
            self.pert_batches = (lay.n >= min_cells) & (lay.n_ctrl >= min_cells)[None, :]
            self.ctrl_batches = self.pert_batches
        else:
            self.pert_batches = lay.n > 0
            same = lay.pert_context[:, None] == lay.batch_context[None, :]
            self.ctrl_batches = same & (lay.n_ctrl > 0)[None, :]
        self.n_genes = data.matrix.shape[1]
        ctrl = lay.pert < 0
        self.ctrl_rows = {b: lay.rows[ctrl & (lay.batch == b)] for b in np.flatnonzero(lay.n_ctrl)}
        is_pert = ~ctrl
        order = np.lexsort((lay.batch[is_pert], lay.pert[is_pert]))
        self.cell_rows = lay.rows[is_pert][order]
        self.cell_batch = lay.batch[is_pert][order]
        self.offsets = np.concatenate([[0], np.cumsum(lay.n.sum(axis=1))])

    def chunk(self, rows: np.ndarray, folds: np.ndarray, m: np.ndarray, chunk: int) -> pd.DataFrame:
        """Each fold's F1, precision and recall per trial of the chunk: ``fold, trial, metric, value``."""
        n_t = m.shape[0]
        ci = int(self.lay.pert_context[self.targets.perts[rows[0]]]) if rows.size else 0
        batches = [b for b in self.ctrl_rows if self.lay.batch_context[b] == ci and self.ctrl_batches[:, b].any()]
        ctrl = {b: self._ctrl_stats(b, m[:, b], chunk) for b in batches}
        fold_ids = sorted(set(folds.tolist()) - {-1})
        conf = {f: np.zeros((n_t, self.n_genes, 9), dtype=np.int64) for f in fold_ids}
        genes = np.arange(self.n_genes)
        for i, p, x in self._pert_rows(rows):
            if folds[i] < 0:
                continue
            labels, valid = self._deg_labels(p, x, m, chunk, ctrl)
            truth = self.targets.values[rows[i]].astype(np.int64) + 1
            code = truth[None, :] * 3 + labels.astype(np.int64) + 1
            for t in np.flatnonzero(valid):
                conf[folds[i]][t, genes, code[t]] += 1
        out = []
        for f in fold_ids:
            for name, value in truth_present_scores(conf[f].reshape(n_t, self.n_genes, 3, 3)).items():
                out.append(pd.DataFrame({"fold": f, "trial": np.arange(n_t), "metric": name, "value": value}))
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["fold", "trial", "metric",
                                                                                     "value"])

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
        x2 = x.copy()
        x2.data **= 2
        if self.variant == "large":
            counts = draws.per_copy()
            s1, s2 = (x.T @ counts).T, (x2.T @ counts).T
            return mean_var(s1, s2, np.full((counts.shape[1], 1), float(n)))
        k = draws.per_trial(copies.size)
        return k.sum(axis=0), (x.T @ k).T, (x2.T @ k).T

    def _draws(self, p: int, m: np.ndarray, chunk: int) -> tuple[list[tuple[int, slice]], Draws]:
        """p's groups (one per batch, sorted) and their inner draws (key ``(p + 1, 0, chunk)``)."""
        groups = list(self._groups(p))
        starts = np.array([r.start for _, r in groups], dtype=np.int64)
        sizes = np.array([r.stop - r.start for _, r in groups], dtype=np.int64)
        batches = np.array([b for b, _ in groups], dtype=np.int64)
        return groups, resample(self.seed, (p + 1, 0, chunk), starts, sizes, m[:, batches], self._size(p))

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

