"""`pertstore tasks ...` with typer's CliRunner on the real Papalexi file and on synthetic data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from pertstore.consumers.tasks import list_tasks, load_task
from task_helpers import PAPALEXI, synthetic
from typer.testing import CliRunner

from pertstore.cli import app

runner = CliRunner()


def run(*args, ok: bool = True) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_papalexi_build_ls_show_export(store, data_dir, tmp_path):
    root = store.uri
    store.close()
    file = data_dir / PAPALEXI
    out = run(
        "tasks",
        "build",
        file,
        "--kind",
        "lfc",
        "--name",
        "papalexi-lfc",
        "--context",
        "THP-1",
        "--trials",
        8,
        "--no-progress",
        "--store",
        root,
    )
    assert "THP-1" in out and "papalexi-lfc" in out
    run(
        "tasks",
        "build",
        file,
        "--kind",
        "deg",
        "--name",
        "papalexi-deg",
        "--context",
        "THP-1",
        "--trials",
        4,
        "--store",
        root,
    )
    listing = run("tasks", "ls", "--store", root)
    assert "2 task version(s)" in listing and "papalexi" in listing
    shown = run("tasks", "show", "papalexi-lfc", "--store", root)
    assert "error limit (l2) per fold" in shown and "run_exp_error_plate_matched.py (seed 5050, 1 x 8 trials" in shown
    run("tasks", "export", "papalexi-deg", "--out", tmp_path / "deg.h5ad", "--store", root)
    a = ad.read_h5ad(tmp_path / "deg.h5ad")
    assert set(a.obs["context"]) == {"THP-1"} and a.n_vars == 299 and set(np.unique(a.X)) <= {-1, 0, 1}
    assert a.uns["recipe"]["columns"]["context"] == "THP-1" and a.uns["error"]["kind"] == "deg"
    assert {"f1", "precision", "recall"} <= set(a.uns["error"]["limits"]["metric"])
    from pertstore import Store

    with Store.open(root) as s:
        task = load_task(s, "papalexi-lfc")
        assert set(task.contexts) == {"THP-1"} and len(task.pert_ids) == 25
        assert all(e is not None for e in task.entity_ids[:3])  # knocked-out genes resolve
        assert task.error.trials.shape == (25, 8, 5)
        limits = task.error.fold_limits(task.folds, task.contexts)
        l2 = limits[limits.metric == "l2"].sort_values("fold")["value"].to_numpy()
        want = [task.error.per_pert[task.folds == f, 0].mean() for f in range(5)]
        np.testing.assert_allclose(l2, want)
        assert "/".join(f"{v:.4g}" for v in l2) in shown


def test_synthetic_build_uses_the_context_column_and_import(store, tmp_path):
    root = store.uri
    store.close()
    synthetic().write_h5ad(tmp_path / "cells.h5ad")
    out = run(
        "tasks",
        "build",
        tmp_path / "cells.h5ad",
        "--kind",
        "deg",
        "--name",
        "syn",
        "--trials",
        0,
        "--min-cells",
        10,
        "--variant",
        "small",
        "--backed",
        "--store",
        root,
    )
    assert "A" in out and "B" in out
    from pertstore import Store

    with Store.open(root) as s:
        task = load_task(s, "syn")
        assert sorted(set(task.contexts)) == ["A", "B"] and task.recipe["params"]["min_cells"] == 10
    out_file = tmp_path / "exported.h5ad"
    run("tasks", "export", "syn", "--out", out_file, "--store", root)
    run("tasks", "import", out_file, "--name", "reimported", "--store", root)
    with Store.open(root) as s:
        back = load_task(s, "reimported")
        np.testing.assert_array_equal(back.targets, task.targets)
        np.testing.assert_array_equal(back.folds, task.folds)  # the exported folds are kept
        assert back.kind == "deg" and list_tasks(s)["name"].tolist() == ["reimported", "syn"]


def test_errors_are_clear(store, tmp_path):
    root = store.uri
    store.close()
    synthetic().write_h5ad(tmp_path / "cells.h5ad")
    result = runner.invoke(
        app, ["tasks", "build", str(tmp_path / "cells.h5ad"), "--name", "x", "--batch-col", "plate", "--store", root]
    )
    assert result.exit_code != 0 and "no batch column 'plate'" in str(result.exception)
    result = runner.invoke(app, ["tasks", "show", "missing", "--store", root])
    assert result.exit_code != 0 and "no task named 'missing'" in str(result.exception)
    result = runner.invoke(app, ["tasks", "export", "missing", "--out", str(tmp_path / "x.csv"), "--store", root])
    assert result.exit_code != 0 and ".h5ad" in result.output


def test_experimental_error_rows_per_fold_and_metric_in_bench_results(store, data_dir, tmp_path):
    """tasks build -> bench run -> bench results: one experimental_error row per (context, fold, metric)."""
    store.produce("random", source="random-16", params={"dim": 16})
    root = store.uri
    store.close()
    run(
        "tasks",
        "build",
        data_dir / PAPALEXI,
        "--name",
        "pap",
        "--context",
        "THP-1",
        "--trials",
        20,
        "--no-progress",
        "--store",
        root,
    )
    run("bench", "run", "--task", "pap", "--set", "random-16", "--evaluator", "knn", "--store", root)
    shown = run("bench", "results", "--task", "pap", "--store", root)
    assert "experimen" in shown
    run("bench", "results", "--task", "pap", "--out", tmp_path / "res.csv", "--store", root)
    res = pd.read_csv(tmp_path / "res.csv")
    ee = res[res.set == "experimental_error"]
    assert (ee.evaluator == "none").all() and sorted(set(ee.fold)) == [0, 1, 2, 3, 4]
    assert len(ee) == 5 * 5 and set(ee.metric) == {"l2", "mse", "mae", "pearson", "spearman"}
    from pertstore import Store

    with Store.open(root) as s:
        task = load_task(s, "pap")
    want = task.error.fold_limits(task.folds, task.contexts).set_index(["fold", "metric"])["value"]
    got = ee.set_index(["fold", "metric"])["value"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), want.sort_index().to_numpy())
    # the floor sits below the train mean on every fold
    l2 = res[res.metric == "l2"].pivot_table(index="fold", columns="set", values="value")
    assert (l2["experimental_error"] < l2["train_mean"]).all()
