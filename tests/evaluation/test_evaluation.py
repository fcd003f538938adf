"""Evaluators against scikit-learn's reference pipeline, metrics against scipy/sklearn, the runner end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pertstore.consumers.evaluators import KNN, deg_metrics, evaluator, k_grid, regression_metrics
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import Lasso
from sklearn.metrics import f1_score, make_scorer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

L2_SCORER = make_scorer(lambda y, p: -np.linalg.norm(y - p, axis=1).mean())


def _data(n=300, d=128, genes=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.tanh(x @ rng.normal(size=(d, genes)) / 8) + 0.1 * rng.normal(size=(n, genes))
    return x, y


def _reference(model, grid):
    return GridSearchCV(
        make_pipeline(StandardScaler(), PCA(100, svd_solver="full"), model),
        grid,
        cv=KFold(5, shuffle=True, random_state=42),
        scoring=L2_SCORER,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_knn_matches_sklearn_gridsearch(seed):
    x, y = _data(seed=seed)
    train, test = np.arange(250), np.arange(250, 300)
    ref = _reference(
        KNeighborsRegressor(algorithm="brute"), {"kneighborsregressor__n_neighbors": [20, 40, 60, 80, 100]}
    ).fit(x[train], y[train])
    pred, chosen = KNN().fit_predict(x[train], y[train], x[test])
    assert chosen["k"] == ref.best_params_["kneighborsregressor__n_neighbors"]
    np.testing.assert_allclose(pred, ref.predict(x[test]), rtol=0, atol=1e-12)


def test_lasso_matches_sklearn_gridsearch():
    x, y = _data(n=200, genes=8, seed=2)
    train, test = np.arange(160), np.arange(160, 200)
    ref = _reference(Lasso(), {"lasso__alpha": [1e-3, 1e-2, 1e-1, 1.0]}).fit(x[train], y[train])
    pred, chosen = evaluator("lasso").fit_predict(x[train], y[train], x[test])
    assert chosen["alpha"] == ref.best_params_["lasso__alpha"]
    np.testing.assert_allclose(pred, ref.predict(x[test]), atol=1e-8)


def test_small_sets_and_few_rows_are_handled():
    assert k_grid(250) == [20, 40, 60, 80, 100]
    assert k_grid(60) == [20, 40]
    assert k_grid(12) == [9]  # smaller than every k: the smallest inner training fold
    x, y = _data(n=20, d=6, genes=5)
    pred, chosen = KNN().fit_predict(x[:15], y[:15], x[15:])
    assert pred.shape == (5, 5) and chosen["k"] == 12


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=(30, 50)), rng.normal(size=(30, 50))
    m = regression_metrics(y, p)
    assert m["l2"] == pytest.approx(np.mean([np.linalg.norm(a - b) for a, b in zip(y, p)]))
    assert m["mse"] == pytest.approx(np.mean((y - p) ** 2)) and m["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert m["pearson"] == pytest.approx(np.mean([stats.pearsonr(a, b)[0] for a, b in zip(y, p)]))
    assert m["spearman"] == pytest.approx(np.mean([stats.spearmanr(a, b)[0] for a, b in zip(y, p)]))


def test_deg_macro_f1_matches_sklearn_per_gene():
    rng = np.random.default_rng(4)
    y = rng.choice([-1, 0, 1], size=(40, 20), p=[0.2, 0.6, 0.2])
    p = np.where(rng.random((40, 20)) < 0.7, y, rng.choice([-1, 0, 1], size=(40, 20)))
    got = deg_metrics(y, p)["f1"]
    expected = np.mean(
        [
            f1_score(
                y[:, g],
                p[:, g],
                average="macro",
                labels=np.unique(y[:, g]),  # present in truth
                zero_division=0,
            )
            for g in range(20)
        ]
    )
    assert got == pytest.approx(expected)


def test_runner_on_the_papalexi_task_with_controls_resume_and_report(store, data_dir, tmp_path):
    from pertstore.consumers.evaluators import Plan, results, run_plan
    from pertstore.consumers.reports import write_report
    from pertstore.consumers.tasks import build_task, read_perturbation_data, save_task

    data = read_perturbation_data(
        data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad",
        context="THP-1",
        resolve=lambda ids: store.resolve(ids, "gene"),
    )
    save_task(store, build_task(data, kind="lfc", trials=20, name="papalexi-lfc"))
    store.produce("random", source="random-16", params={"dim": 16})
    rows = run_plan(store, Plan(task="papalexi-lfc", sets=["random-16"], evaluators=["knn", "ridge"]))
    l2 = rows[rows.metric == "l2"]
    assert set(l2.set) == {"random-16", "train_mean", "no_change", "idealised", "experimental_error"}
    assert len(l2[(l2.set == "random-16") & (l2.evaluator == "knn")]) == 5  # one per fold
    assert (l2[l2.set == "random-16"].coverage == 1.0).all()
    mean = l2.groupby(["set", "evaluator"]).value.mean()
    assert mean[("idealised", "ridge")] < mean[("train_mean", "none")]  # the positive control works
    assert run_plan(store, Plan(task="papalexi-lfc", sets=["random-16"], evaluators=["knn", "ridge"])).empty
    assert len(results(store, "papalexi-lfc")) == len(rows)
    errors = store.catalog.query("SELECT * FROM bench_errors WHERE set = 'random-16' AND evaluator = 'knn'")
    assert len(errors) == 25  # every perturbation is in exactly one test fold
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = run_plan(
            store,
            Plan(task="papalexi-lfc", sets=["random-16"], evaluators=["knn", "ridge"], folds=[0, 1]),
            client=client,
        )
    assert on_dask.empty  # already done: resume skips every run
    store.catalog.query("DELETE FROM bench_results WHERE fold = 0")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        redo = run_plan(
            store, Plan(task="papalexi-lfc", sets=["random-16"], evaluators=["knn", "ridge"], folds=[0]), client=client
        )
    same = rows[(rows.fold == 0) & (rows.metric == "l2")].set_index(["set", "evaluator"]).value.sort_index()
    np.testing.assert_allclose(redo[redo.metric == "l2"].set_index(["set", "evaluator"]).value.sort_index(), same)
    store.produce("random", source="random-8", params={"dim": 8, "seed": 1})
    fused = run_plan(
        store,
        Plan(
            task="papalexi-lfc",
            sets=["random-16", "random-8"],
            evaluators=["fusion"],
            controls=False,
            fusion={"max_epochs": 3},
        ),
    )
    fused_l2 = fused[fused.metric == "l2"]
    assert set(fused_l2.set) == {"fusion(random-16,random-8)"} and len(fused_l2) == 5
    assert (fused_l2.coverage == 1.0).all() and np.isfinite(fused_l2.value).all()
    page = write_report(results(store), tmp_path / "report", store=store)
    assert page.exists() and (tmp_path / "report" / "fig2_ranks_papalexi-lfc_knn.png").exists()
    assert "data:image/png;base64" in page.read_text()
    before = results(store)  # results live in the store: a catalog rebuild replays them
    n_errors = len(store.catalog.results.errors(["papalexi-lfc"]))
    counts = store.rebuild_catalog()
    assert counts["results"] >= len(before) and not counts["problems"]
    pd.testing.assert_frame_equal(results(store), before)
    assert len(store.catalog.results.errors(["papalexi-lfc"])) == n_errors
