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
    """L2 (primary), MSE, MAE, and per-perturbation Pearson and Spearman averaged over perturbations.

    A perturbation whose prediction (or truth) is constant has no correlation; it is left out of
    the Pearson/Spearman means (the train-mean and no-change controls have none at all).
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    diff = y - pred
    pearson = _rowwise_pearson(y, pred)
    spearman = _rowwise_pearson(stats.rankdata(y, axis=1), stats.rankdata(pred, axis=1))
    return {"l2": float(np.linalg.norm(diff, axis=1).mean()), "mse": float((diff ** 2).mean()),
            "mae": float(np.abs(diff).mean()),
            "pearson": float(np.nanmean(pearson)) if np.isfinite(pearson).any() else float("nan"),
            "spearman": float(np.nanmean(spearman)) if np.isfinite(spearman).any() else float("nan")}


def deg_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Macro F1 over the classes present for each gene (in truth or prediction), averaged over genes;
    macro precision and recall likewise."""
    y = np.asarray(y, dtype=np.int8)
    pred = np.asarray(pred, dtype=np.int8)
    f1s, precs, recs = [], [], []
    for g in range(y.shape[1]):
        t, p = y[:, g], pred[:, g]
        classes = np.union1d(np.unique(t), np.unique(p))
        f, pr, rc = [], [], []
        for c in classes:
            tp = np.sum((t == c) & (p == c))
            fp = np.sum((t != c) & (p == c))
            fn = np.sum((t == c) & (p != c))
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
            pr.append(precision)
            rc.append(recall)
        f1s.append(np.mean(f))
        precs.append(np.mean(pr))
        recs.append(np.mean(rc))
    return {"f1": float(np.mean(f1s)), "precision": float(np.mean(precs)), "recall": float(np.mean(recs))}


def tidy(metrics: dict[str, float], **keys) -> pd.DataFrame:
    """One row per metric with the run's keys."""
    return pd.DataFrame([{**keys, "metric": m, "value": v} for m, v in metrics.items()])
