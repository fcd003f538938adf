"""Evaluators of the paper's protocol, controls, metrics and the benchmark runner."""

from pertstore.consumers.evaluators._metrics import deg_metrics, l2_per_perturbation, regression_metrics
from pertstore.consumers.evaluators._models import KNN, SklearnGrid, VectorLogistic, evaluator, k_grid, project
from pertstore.consumers.evaluators._runner import (
    CONTROLS,
    WARN_COVERAGE,
    CoverageWarning,
    Plan,
    check_coverage,
    plan_coverage,
    results,
    run_plan,
)

__all__ = [
    "CONTROLS",
    "KNN",
    "WARN_COVERAGE",
    "CoverageWarning",
    "VectorLogistic",
    "Plan",
    "SklearnGrid",
    "check_coverage",
    "deg_metrics",
    "evaluator",
    "k_grid",
    "l2_per_perturbation",
    "plan_coverage",
    "project",
    "regression_metrics",
    "results",
    "run_plan",
]
