"""Experimental error as the paper's code computes it (``benchmark/experimental_error/``), memory bounded.

- LFC, ``small`` variant (``run_exp_error_essential.py``): per context, the control cells are
  bootstrapped once and every perturbation's own cells on their own, each in two stages
  (``outer`` draws of the batches with replacement, then ``inner`` draws of the cells of each drawn
  batch, batches weighted equally); trial ``(i, t)`` of a perturbation is paired with trial
  ``(i, t)`` of the controls.
- LFC, ``large`` variant (``run_exp_error_plate_matched.py``): per perturbation, its batches that
  hold controls are drawn; in each drawn batch its cells and then that batch's controls are
  resampled from one random stream; the replicate is the mean over drawn batches of the
  differences.
- Random streams as the reference's: ``SeedSequence(seed)`` per context, spawned ``[controls,
  perturbation 0, 1, ...]`` (small) or ``[perturbation 0, 1, ...]`` (large) over the context's
  perturbations in sorted label order, outer draws and drawn batches spawned below.
- Per trial: L2, MSE, MAE, Pearson and Spearman of the replicate LFC against the LFC; per
  perturbation the 0.9 quantile over trials; per fold the mean over its test perturbations.
- DEG, ``small`` (``run_exp_error_essential_deg.py``): per trial
  (``SeedSequence(seed).generate_state(trials)``), the cells of every label (controls included)
  are resampled with replacement as ``DataFrame.groupby(label).sample(frac=1, replace=True)``
  does; the labels are recomputed and scored, per fold, against the task's labels as one-hot
  predictions (the evaluator's DEG metrics); the limit is the 0.1 quantile over trials
  (``nearest``, as polars).

No ``[trials, cells, genes]`` array exists: a replicate is a sparse product ``X_p.T @ W`` of the
perturbation's cells with resampling weights ``W [cells, trials]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from pertstore.errors import InvalidInputError

from ._deg import mean_var, vote, welch_labels
from ._groups import Layout, Targets, layout
from ._ingest import PerturbationData
from ._lfc import lfc_design
from ._matrix import BLOCK_ROWS, Progress, group_sums

LFC_METRICS = ("l2", "mse", "mae", "pearson", "spearman")
"""Named as the runner's regression metrics."""
QUANTILE = {"lfc": 0.9, "deg": 0.1}
OUTER, INNER, SEED = 10, 10, 5050
"""The reference's trials (outer x inner) and seed."""


@dataclass
class ExperimentalError:
    """Bootstrap error of a task, as the reference computes it.

    LFC: ``trials[i, t, m]`` is metric ``metrics[m]`` of row ``i``'s replicate
    ``t`` against its LFC (NaN: not estimated) and ``per_pert[i, m]`` its
    ``quantile`` (0.9) over trials. DEG: ``fold_trials`` holds ``context,
    fold, metric, trial, value`` (the metric of one replicate of the labels of
    a fold's test perturbations), computed on ``folds``.
    :meth:`fold_limits` gives the limit per (context, fold, metric).
    """

    kind: str
    quantile: float
    metrics: list[str]
    params: dict
    trials: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    per_pert: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    fold_trials: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {
                "context": pd.Series(dtype=str),
                "fold": pd.Series(dtype=np.int64),
                "metric": pd.Series(dtype=str),
                "trial": pd.Series(dtype=np.int64),
                "value": pd.Series(dtype=np.float64),
            }
        )
    )
    folds: np.ndarray | None = None

    def fold_limits(self, folds: np.ndarray, contexts: list[str]) -> pd.DataFrame:
        """``context, fold, metric, value``: the limit of each fold (fold -1, in no fold, has none).

        LFC: the mean over the fold's test perturbations of their ``quantile``
        of each metric (NaN ones left out). DEG: the ``quantile`` over trials
        (method ``nearest``) of each metric; ``folds`` must be the ones the
        bootstrap scored.
        """
        folds = np.asarray(folds)
        contexts = np.asarray(contexts, dtype=str)
        if self.kind == "deg":
            if self.folds is None or not np.array_equal(self.folds, folds):
                raise InvalidInputError("the DEG experimental error was scored on other folds than the task's")
            g = self.fold_trials.groupby(["context", "fold", "metric"], sort=True)["value"]
            out = g.agg(lambda v: nearest_quantile(v.to_numpy(), self.quantile)).reset_index()
            return out[["context", "fold", "metric", "value"]]
        rows = []
        for ctx in sorted(set(contexts)):
            for f in sorted(set(folds[contexts == ctx].tolist()) - {-1}):
                test = (contexts == ctx) & (folds == f)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN for every test row
                    means = np.nanmean(self.per_pert[test], axis=0)
                rows += [(ctx, int(f), m, float(v)) for m, v in zip(self.metrics, means, strict=True)]
        return pd.DataFrame(rows, columns=["context", "fold", "metric", "value"])


def nearest_quantile(values: np.ndarray, q: float) -> float:
    """polars' ``quantile(q)`` (method ``nearest``): the ``round((n - 1) q)``-th smallest, halves away from 0."""
    v = np.sort(values[~np.isnan(values)])
    return float(v[int(np.floor((v.size - 1) * q + 0.5))]) if v.size else float("nan")


def concat_errors(errors: list[ExperimentalError | None]) -> ExperimentalError | None:
    """The LFC errors of tasks stacked row-wise; None if any is None or is DEG (scored on its own folds)."""
    if not errors or any(e is None or e.kind != "lfc" for e in errors):
        return None
    first = errors[0]
    return ExperimentalError(
        kind="lfc",
        quantile=first.quantile,
        metrics=first.metrics,
        params=first.params,
        trials=np.concatenate([e.trials for e in errors]),
        per_pert=np.concatenate([e.per_pert for e in errors]),
    )


def experimental_error(
    data: PerturbationData,
    targets: Targets,
    *,
    folds: np.ndarray | None = None,
    trials: int = OUTER * INNER,
    inner: int = INNER,
    seed: int = SEED,
    block_rows: int = BLOCK_ROWS,
    progress: Progress | None = None,
) -> ExperimentalError:
    """The reference's experimental error of ``targets`` (from :func:`lfc` or :func:`deg`).

    Parameters
    ----------
    folds
        DEG only: the fold of each target row (the limit is per fold).
    trials, inner
        LFC: ``trials // inner`` outer draws of batches times ``inner`` draws
        of cells (the reference: 10 x 10). DEG: the number of replicates (the
        reference ran 20).
    seed
        The reference's 5050 by default.
    progress
        ``progress("bootstrap", done, total)`` after each perturbation (LFC) or trial (DEG).
    """
    if trials < 1:
        raise InvalidInputError(f"trials must be at least 1, not {trials}")
    inner = min(inner, trials)
    lay = layout(data)
    params = {
        "trials": trials,
        "seed": seed,
        "quantile": QUANTILE[targets.kind],
        "variant": targets.variant,
        "reference": _REFERENCE[(targets.kind, targets.variant)],
    }
    if targets.kind == "lfc":
        if trials % inner:
            raise InvalidInputError(f"LFC trials ({trials}) must be a multiple of inner ({inner})")
        params.update({"outer": trials // inner, "inner": inner})
        if targets.variant not in ("small", "large", "differential"):
            raise InvalidInputError(f"no experimental error for LFC variant {targets.variant!r}")
        values = _lfc_trials(data, lay, targets, trials // inner, inner, seed, block_rows, progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows never estimated stay NaN
            per_pert = np.nanquantile(values, QUANTILE["lfc"], axis=1)
        return ExperimentalError(
            kind="lfc",
            quantile=QUANTILE["lfc"],
            metrics=list(LFC_METRICS),
            params=params,
            trials=values,
            per_pert=per_pert,
        )
    if targets.variant not in ("small", "large"):
        raise InvalidInputError(f"no experimental error for DEG variant {targets.variant!r}")
    if folds is None or len(folds) != targets.perts.size:
        raise InvalidInputError("the DEG experimental error needs the fold of every target row")
    if targets.variant == "small":
        replicates = _deg_small_replicates(data, lay, targets, trials, seed, block_rows, progress)
    else:
        params.update({"outer": trials // inner, "inner": inner})
        replicates = _deg_large_replicates(data, lay, targets, trials // inner, inner, seed, progress)
    frame = _score(data, lay, targets, np.asarray(folds), replicates)
    return ExperimentalError(
        kind="deg",
        quantile=QUANTILE["deg"],
        metrics=sorted(frame["metric"].unique()),
        params=params,
        fold_trials=frame,
        folds=np.asarray(folds).copy(),
    )


_REFERENCE = {
    ("lfc", "small"): "run_exp_error_essential.py",
    ("lfc", "large"): "run_exp_error_plate_matched.py",
    ("lfc", "differential"): "run_exp_error_essential.py (differential input: no control subtracted)",
    ("deg", "small"): "run_exp_error_essential_deg.py",
    ("deg", "large"): "run_exp_error_tahoe_deg.py",
}


# ---- LFC ---------------------------------------------------------------------------------------


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


# ---- DEG ---------------------------------------------------------------------------------------


def groupby_sample_counts(labels: np.ndarray, seed: int) -> np.ndarray:
    """How often each cell is drawn by ``df.groupby(labels).sample(frac=1, replace=True, random_state=seed)``.

    pandas draws ``RandomState(seed).choice(n_g, n_g, replace=True)`` for each
    group in sorted key order, the group's rows in frame order.
    """
    rs = np.random.RandomState(seed)
    keys, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse, minlength=keys.size))]
    counts = np.zeros(labels.size, dtype=np.int64)
    for g in range(keys.size):
        rows = order[bounds[g] : bounds[g + 1]]
        counts += np.bincount(rows[rs.choice(rows.size, size=rows.size, replace=True)], minlength=labels.size)
    return counts


def _deg_small_replicates(
    data: PerturbationData,
    lay: Layout,
    targets: Targets,
    trials: int,
    seed: int,
    block_rows: int,
    progress: Progress | None,
) -> Iterator[np.ndarray]:
    """``run_exp_error_essential_deg``: per trial, every label's cells resampled, the labels recomputed."""
    alpha = targets.params["alpha"]
    labels = data.cells["label"].astype(str).to_numpy()
    ctx_codes = lay.batch_context[lay.batch]
    n_contexts = len(data.cells["context"].cat.categories)
    slot = np.full(len(data.perturbations), -1)
    slot[targets.perts] = np.arange(targets.perts.size)
    group = np.where(lay.pert >= 0, slot[np.maximum(lay.pert, 0)], targets.perts.size + ctx_codes)
    n_groups, k = targets.perts.size + n_contexts, targets.perts.size
    ref = k + lay.pert_context[targets.perts]
    for t, state in enumerate(np.random.SeedSequence(seed).generate_state(trials)):
        weight = np.zeros(len(labels))
        for ci in range(n_contexts):  # the reference runs each context (cell line) on its own
            in_ctx = ctx_codes == ci
            weight[in_ctx] = groupby_sample_counts(labels[in_ctx], int(state))
        use = (group >= 0) & (weight > 0)
        s1, s2 = group_sums(
            data.matrix,
            rows=lay.rows[use],
            group=group[use],
            weight=weight[use],
            n_groups=n_groups,
            squares=True,
            block_rows=block_rows,
        )
        n = np.bincount(group[use], weights=weight[use], minlength=n_groups)[:, None]
        mean, var = mean_var(s1, s2, n)
        yield welch_labels(mean[:k], var[:k], n[:k], mean[ref], var[ref], n[ref], alpha=alpha)
        if progress is not None:
            progress("bootstrap", t + 1, trials)


def _deg_large_replicates(
    data: PerturbationData, lay: Layout, targets: Targets, outer: int, inner: int, seed: int, progress: Progress | None
) -> Iterator[np.ndarray]:
    """``run_exp_error_tahoe_deg``: per perturbation, its kept batches drawn (``outer`` states of
    ``SeedSequence(seed)``, the same for every perturbation), then per inner state the cells of each
    (drawn batch ``plate_i``, perturbation or ``control``) group resampled as pandas does; labels per
    drawn batch against its controls, then the vote."""
    alpha, min_cells = targets.params["alpha"], targets.params["min_cells"]
    kept = (lay.n >= min_cells) & (lay.n_ctrl >= min_cells)[None, :]
    cells = _Cells(data, lay)
    label = data.perturbations["label"].to_numpy()
    out = np.zeros((outer * inner, targets.perts.size, data.matrix.shape[1]), dtype=np.int8)
    outer_states = np.random.SeedSequence(seed).generate_state(outer)
    for i, (p, x) in enumerate(cells.perturbed([int(p) for p in targets.perts], BLOCK_ROWS)):
        groups = sorted(((b, s) for b, s in cells.groups(p) if kept[p, b]), key=lambda g: cells.first_row(p, g[1]))
        x2 = x.copy()
        x2.data **= 2
        for o, state in enumerate(outer_states):
            drawn = np.random.default_rng(state).choice(len(groups), size=len(groups))
            names = [f"plate_{j}" for j in range(drawn.size)]
            # pandas' group order: (plate name, label) sorted; the controls are 'control'
            order = sorted((names[j], key) for j in range(drawn.size) for key in ("control", str(label[p])))
            inner_states = np.random.SeedSequence(int(state)).generate_state(inner)
            counts = {key: np.zeros((_size(groups, drawn, key, lay), inner)) for key in order}
            for t, inner_state in enumerate(inner_states):
                rs = np.random.RandomState(int(inner_state))
                for key in order:
                    n = counts[key].shape[0]
                    counts[key][:, t] = np.bincount(rs.choice(n, size=n, replace=True), minlength=n)
            votes = np.zeros((3, inner, x.shape[1]), dtype=np.int32)
            for j, g in enumerate(drawn):
                b, rows = groups[g]
                kp, kc = counts[(names[j], str(label[p]))], counts[(names[j], "control")]
                xc = cells.controls([b])
                xc2 = xc.copy()
                xc2.data **= 2
                mean, var = mean_var((x[rows].T @ kp).T, (x2[rows].T @ kp).T, float(kp.shape[0]))
                cmean, cvar = mean_var((xc.T @ kc).T, (xc2.T @ kc).T, float(kc.shape[0]))
                lab = welch_labels(mean, var, kp.shape[0], cmean, cvar, kc.shape[0], alpha=alpha)
                for c in range(3):
                    votes[c] += lab == c - 1
            out[o * inner : (o + 1) * inner, i] = vote(votes)
        if progress is not None:
            progress("bootstrap", i + 1, targets.perts.size)
    yield from out


def _size(groups: list[tuple[int, slice]], drawn: np.ndarray, key: tuple[str, str], lay: Layout) -> int:
    b, rows = groups[drawn[int(key[0].split("_")[1])]]
    return int(lay.n_ctrl[b]) if key[1] == "control" else rows.stop - rows.start


def _score(
    data: PerturbationData, lay: Layout, targets: Targets, folds: np.ndarray, replicates: Iterator[np.ndarray]
) -> pd.DataFrame:
    """Each replicate's labels scored per fold against the task's labels: F1, precision and recall over the
    classes present in the truth (the reference also reports AUROC and AUPRC of one-hot replicate labels;
    they are left out here, a per-gene curve per trial and fold costs minutes and no figure uses them)."""
    from pertstore.consumers.evaluators._metrics import deg_label_metrics

    contexts = [str(c) for c in data.cells["context"].cat.categories]
    row_ctx = lay.pert_context[targets.perts]
    rows = []
    for t, replicate in enumerate(replicates):
        for ci, ctx in enumerate(contexts):
            for f in sorted(set(folds[row_ctx == ci].tolist()) - {-1}):
                test = (row_ctx == ci) & (folds == f)
                for m, v in deg_label_metrics(targets.values[test], replicate[test]).items():
                    rows.append((ctx, int(f), m, t, float(v)))
    return pd.DataFrame(rows, columns=["context", "fold", "metric", "trial", "value"])
