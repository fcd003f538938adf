"""The metrics of the reference's cross-context tables (S12/S13), on perturbation-level responses.

The reference scores cell-level predictions with ``cell-eval`` (``compare_results.py`` reads its
``mae``, ``overlap_at_N`` and ``discrimination_score_l1`` means). Here the responses are pseudobulk
LFC rows (the control is the origin), so each metric is ``cell-eval``'s definition applied to them
(``tests/crosscontext`` checks each against ``cell-eval`` itself):

- ``mae``: per perturbation, the mean absolute error over genes (``cell_eval.metrics.mae``).
- ``overlap_at_n``: per perturbation, |top-N genes by |truth| ∩ top-N by |prediction|| / N
  (``DEComparison.compute_overlap(k=N)`` with every gene significant, sorted by |log2 fold change|;
  the reference's ``N`` is the number of significant genes of the cell-level test, which an LFC task
  does not have, so ``N`` is a parameter, default 50).
- ``discrimination_l1``: per perturbation p, 1 - rank / P where rank is the position of p's true
  response among all P true responses sorted by L1 distance to p's prediction, the target gene's
  own column left out (``cell_eval.metrics.discrimination_score(metric="l1")``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OVERLAP_N = 50


def mae_per_perturbation(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean absolute error over genes, one value per row."""
    return np.abs(np.asarray(truth, float) - np.asarray(pred, float)).mean(axis=1)


def overlap_at_n(truth: np.ndarray, pred: np.ndarray, n: int = OVERLAP_N) -> np.ndarray:
    """Per row, the fraction of the top-``n`` genes by |truth| that are also top-``n`` by |prediction|."""
    n = min(n, truth.shape[1])
    top_t = np.argsort(-np.abs(truth), axis=1, kind="stable")[:, :n]
    top_p = np.argsort(-np.abs(pred), axis=1, kind="stable")[:, :n]
    return np.array([np.intersect1d(a, b).size / n for a, b in zip(top_t, top_p)])


def discrimination_l1(truth: np.ndarray, pred: np.ndarray, perts: Sequence[str], genes: Sequence[str]) -> np.ndarray:
    """Per row, ``1 - rank / P`` of its true response among all true responses by L1 distance to its prediction.

    The column of a gene named like the perturbation (its target) is left out, as ``cell-eval`` does.
    """
    perts = np.asarray(perts, dtype=str)
    genes = np.asarray(genes, dtype=str)
    out = np.empty(len(perts))
    for i, p in enumerate(perts):
        keep = np.flatnonzero(genes != p)
        dist = np.abs(truth[:, keep] - pred[i, keep][None]).sum(axis=1)
        rank = np.flatnonzero(np.argsort(dist) == np.flatnonzero(perts == p)[0])[0]
        out[i] = 1 - rank / perts.size
    return out


def cross_metrics(
    truth: np.ndarray, pred: np.ndarray, perts: Sequence[str], genes: Sequence[str], n: int = OVERLAP_N
) -> dict[str, float]:
    """The means over perturbations of ``mae``, ``overlap_at_n`` and ``discrimination_l1``."""
    return {
        "mae": float(mae_per_perturbation(truth, pred).mean()),
        "overlap_at_n": float(overlap_at_n(truth, pred, n).mean()),
        "discrimination_l1": float(discrimination_l1(truth, pred, perts, genes).mean()),
    }
