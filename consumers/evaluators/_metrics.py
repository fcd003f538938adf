"""Metrics of the paper's protocol: per-perturbation errors averaged over perturbations."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def l2_per_perturbation(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``||y_i - pred_i||_2`` for every perturbation ``i`` (row)."""
    return np.linalg.norm(np.asarray(y, dtype=np.float64) - pred, axis=1)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """L2 (primary), MSE, MAE, and Pearson and Spearman as the reference (``task/regression_evaluate.py``):
    the plain mean over perturbations of scipy's per-perturbation ``pearsonr``/``spearmanr``.

    A perturbation whose prediction (or truth) is constant has no correlation (scipy: NaN); it is left
    out of the mean (the reference's ``np.mean`` would make the whole figure NaN), so a control predicting
    a constant (no change) reports NaN and a run with some constant rows averages over the others.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    diff = y - pred
    pearson = _rowwise_pearson(y, pred)
    spearman = _rowwise_pearson(stats.rankdata(y, axis=1), stats.rankdata(pred, axis=1))
    return {
        "l2": float(np.linalg.norm(diff, axis=1).mean()),
        "mse": float((diff**2).mean()),
        "mae": float(np.abs(diff).mean()),
        "pearson": float(np.nanmean(pearson)) if np.isfinite(pearson).any() else float("nan"),
        "spearman": float(np.nanmean(spearman)) if np.isfinite(spearman).any() else float("nan"),
    }


def as_proba(pred: np.ndarray) -> np.ndarray:
    """``[perturbations, genes, 3]`` class probabilities; labels -1/0/1 become one-hot rows."""
    pred = np.asarray(pred)
    if pred.ndim == 3:
        return pred.astype(np.float64)
    return (pred.astype(np.int64)[..., None] + 1 == np.arange(3)).astype(np.float64)


def _present_mean(per_class: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean over the classes present in the truth (axis -1)."""
    return (per_class * present).sum(-1) / present.sum(-1)


def _prf(truth: np.ndarray, labels: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 (0 where undefined, torchmetrics' zero_division) counting along ``axis``
    and which classes the truth holds; class on the last axis."""
    t = truth[..., None] == np.arange(3)
    p = labels[..., None] == np.arange(3)
    tp, fp, fn = (t & p).sum(axis), (~t & p).sum(axis), (t & ~p).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return precision, recall, f1, t.any(axis)


def _curve(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest first (as torchmetrics and
    scikit-learn build their curves)."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps, last


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """torchmetrics' binary AUROC (no thresholds): 0 when there are no positives (or no negatives)."""
    tps, fps, _ = _curve(score, positive)
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    tpr = tps / tps[-1] if tps[-1] > 0 else np.zeros(len(tps))
    fpr = fps / fps[-1] if fps[-1] > 0 else np.zeros(len(fps))
    return float(np.trapezoid(tpr, fpr))


def _average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """torchmetrics' binary average precision (step sum); NaN when there are no positives."""
    tps, fps, _ = _curve(score, positive)
    if tps[-1] == 0:
        return float("nan")
    precision = np.r_[(tps / (tps + fps))[::-1], 1.0]
    recall = np.r_[(tps / tps[-1])[::-1], 0.0]
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def deg_gene_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene scores of the reference (``task/metrics.py``): macro F1, precision and recall over the
    classes present in the gene's truth (on the argmax of ``pred``), and torchmetrics' multiclass macro
    one-vs-rest AUROC (a class absent from the truth scores 0 and counts) and average precision (a class
    absent from the truth is NaN and left out).

    ``y``: labels -1/0/1 ``[perturbations, genes]``; ``pred``: labels of that shape or probabilities
    ``[perturbations, genes, 3]``.
    """
    truth = np.asarray(y, dtype=np.int64) + 1
    proba = as_proba(pred)
    precision, recall, f1, present = _prf(truth, proba.argmax(-1), axis=0)
    auroc = np.array(
        [np.mean([_auroc(proba[:, g, c], truth[:, g] == c) for c in range(3)]) for g in range(truth.shape[1])]
    )
    ap = np.array(
        [
            np.nanmean([_average_precision(proba[:, g, c], truth[:, g] == c) for c in range(3)])
            for g in range(truth.shape[1])
        ]
    )
    return {
        "f1": _present_mean(f1, present),
        "precision": _present_mean(precision, present),
        "recall": _present_mean(recall, present),
        "auroc": auroc,
        "auprc": ap,
    }


def deg_f1_per_gene(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each gene's present-class macro F1 (:func:`deg_gene_scores`' ``f1`` alone, as the inner CV scores)."""
    truth = np.asarray(y, dtype=np.int64) + 1
    _, _, f1, present = _prf(truth, as_proba(pred).argmax(-1), axis=0)
    return _present_mean(f1, present)


def deg_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Macro F1 (primary), precision, recall, AUROC and AUPRC per gene (:func:`deg_gene_scores`), averaged
    over genes. ``pred``: labels -1/0/1 or class probabilities ``[perturbations, genes, 3]``."""
    return {k: float(np.mean(v)) for k, v in deg_gene_scores(y, pred).items()}


def deg_label_metrics(y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Macro F1, precision and recall of predicted labels (:func:`deg_gene_scores`' first three, vectorised
    over genes), averaged over genes: what the experimental error of a DEG task reports per fold."""
    truth = np.asarray(y, dtype=np.int64) + 1
    precision, recall, f1, present = _prf(truth, np.asarray(labels, dtype=np.int64) + 1, axis=0)
    return {
        "f1": float(np.mean(_present_mean(f1, present))),
        "precision": float(np.mean(_present_mean(precision, present))),
        "recall": float(np.mean(_present_mean(recall, present))),
    }


def deg_f1_per_perturbation(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each perturbation's macro F1 over its genes (classes present in its truth): the paired score."""
    truth = np.asarray(y, dtype=np.int64) + 1
    _, _, f1, present = _prf(truth, as_proba(pred).argmax(-1), axis=1)
    return _present_mean(f1, present)


def tidy(metrics: dict[str, float], **keys) -> pd.DataFrame:
    """One row per metric with the run's keys."""
    return pd.DataFrame([{**keys, "metric": m, "value": v} for m, v in metrics.items()])


def coverage_counts(covered: np.ndarray, test: np.ndarray) -> dict[str, int]:
    """Test and training perturbations of a run and how many of each the set covers."""
    return {
        "n_test": int(test.sum()),
        "n_test_covered": int(covered[test].sum()),
        "n_train": int((~test).sum()),
        "n_train_covered": int(covered[~test].sum()),
    }
