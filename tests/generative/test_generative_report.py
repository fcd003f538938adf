"""The report's Figure S14 view: generative methods beside kNN on the same set, fold-paired (synthetic results)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from pertstore.consumers.reports import generative_vs_knn, write_report


def _results() -> pd.DataFrame:
    """L2 rows: kNN and flow on sets a and b (folds 0-2; flow on b misses fold 2), GEARS, train mean."""
    rng = np.random.default_rng(0)
    rows = []
    for fold, (source, ev) in itertools.product(
        range(3),
        [("a", "knn"), ("b", "knn"), ("a", "flow"), ("b", "flow"), ("gears-go", "gears"), ("train_mean", "none")],
    ):
        if (source, ev, fold) == ("b", "flow", 2):
            continue
        for metric in ("l2", "pearson"):
            rows.append(
                {
                    "task": "t",
                    "task_version": "v",
                    "context": "c",
                    "fold": fold,
                    "set": source,
                    "set_version": "",
                    "evaluator": ev,
                    "metric": metric,
                    "value": float(rng.uniform(0.5, 2)),
                    "chosen": "{}",
                    "coverage": 1.0,
                    "seconds": 0.1,
                    "n_test": 4,
                    "n_test_covered": 4,
                    "n_train": 12,
                    "n_train_covered": 12,
                }
            )
    return pd.DataFrame(rows)


def test_each_method_is_paired_with_knn_on_the_same_set_and_folds(tmp_path):
    results = _results()
    table = generative_vs_knn(results).set_index(["set", "evaluator"])
    l2 = results[results.metric == "l2"].set_index(["set", "evaluator", "fold"]).value

    def mean(source, ev, folds):
        return float(np.mean([l2[(source, ev, f)] for f in folds]))

    flow_b = table.loc[("b", "flow")]  # fold 2 missing for flow: kNN averaged over folds 0-1 only
    assert flow_b.n_folds == 2
    assert np.isclose(flow_b.value, mean("b", "flow", [0, 1])) and np.isclose(flow_b.knn, mean("b", "knn", [0, 1]))
    assert np.isclose(flow_b.difference, flow_b.value - flow_b.knn)
    for source in ("a", "b"):  # GEARS (its own gene graph) beside kNN on every set
        gears = table.loc[(source, "gears")]
        assert np.isclose(gears.value, mean("gears-go", "gears", [0, 1, 2]))
        assert np.isclose(gears.knn, mean(source, "knn", [0, 1, 2]))
        assert np.isclose(gears.train_mean, mean("train_mean", "none", [0, 1, 2]))
    assert len(table) == 4

    write_report(results, tmp_path)  # the report carries the table and one figure per (task, context)
    assert (tmp_path / "generative_vs_knn.csv").exists() and (tmp_path / "fig_s14_t_c.png").exists()
    assert "Figure S14" in (tmp_path / "report.html").read_text()


def test_no_generative_rows_no_view():
    results = _results()
    assert generative_vs_knn(results[results.evaluator.isin(["knn", "none"])]).empty
