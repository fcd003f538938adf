"""Cross-context prediction (seen perturbations, unseen cell line): splits, models, metrics, runner.

``bench run --setting zeroshot|fewshot`` holds out whole contexts (:func:`cross_context_splits`) and
runs the reference's models (:data:`MODELS`: the MLP on embeddings, its one-hot ablation, the context
mean and the cross-context kNN), scored with the metrics of its tables (:func:`cross_metrics`).
"""

from pertstore.consumers.crosscontext._metrics import (
    OVERLAP_N,
    cross_metrics,
    discrimination_l1,
    mae_per_perturbation,
    overlap_at_n,
)
from pertstore.consumers.crosscontext._models import MODELS, MLPSettings, SplitData, random_codes
from pertstore.consumers.crosscontext._run import run_cross_context
from pertstore.consumers.crosscontext._splits import SETTINGS, CrossSplit, cross_context_splits

__all__ = [
    "MODELS",
    "OVERLAP_N",
    "SETTINGS",
    "CrossSplit",
    "MLPSettings",
    "SplitData",
    "cross_context_splits",
    "cross_metrics",
    "discrimination_l1",
    "mae_per_perturbation",
    "overlap_at_n",
    "random_codes",
    "run_cross_context",
]
