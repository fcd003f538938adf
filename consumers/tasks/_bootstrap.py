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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pertstore.errors import InvalidInputError

from ._bootstrap_deg import _deg_large_replicates, _deg_small_replicates, _score
from ._bootstrap_lfc import LFC_METRICS, _lfc_trials
from ._groups import Targets, layout
from ._ingest import PerturbationData
from ._matrix import BLOCK_ROWS, Progress

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
