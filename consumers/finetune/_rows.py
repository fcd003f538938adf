"""The result and per-perturbation rows of one fine-tuned (context, fold) run, as ``bench`` stores them."""

from __future__ import annotations

import json

from pertstore.consumers.evaluators._metrics import coverage_counts, l2_per_perturbation, regression_metrics


def score_rows(plan, version: str, context: str, fold: int, label: str, ev: str, run: dict) -> tuple[list, list]:
    """The result rows (metrics) and per-perturbation rows of one fine-tuned run.

    ``run``: ``truth``, ``pred`` (test perturbations), ``pert_ids``, ``chosen``, the boolean masks ``test`` and
    ``covered`` (the context's perturbations), ``seconds``.
    """
    test, covered, truth, pred = run["test"], run["covered"], run["truth"], run["pred"]
    base = {
        "task": plan.task,
        "task_version": version,
        "context": context,
        "fold": int(fold),
        "set": label,
        "set_version": "",
        "evaluator": ev,
        "chosen": json.dumps(run["chosen"]),
        "coverage": float(covered[test].mean()),
        "seconds": run["seconds"],
        **coverage_counts(covered, test),
    }
    results = [{**base, "metric": m, "value": v} for m, v in regression_metrics(truth, pred).items()]
    keys = ("task", "task_version", "context", "fold", "set", "evaluator")
    errors = [
        {**{k: base[k] for k in keys}, "pert_id": p, "l2": float(e), "f1": None}
        for p, e in zip(run["pert_ids"], l2_per_perturbation(truth, pred))
    ]
    return results, errors
