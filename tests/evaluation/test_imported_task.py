"""The user's path with the paper's published layout: `tasks import` + `import` + `bench run`.

The task and embedding files are synthetic (random responses with a low-rank structure), written
in the layout of the paper's published files: a task h5ad with Ensembl ``pert_id``/``gene_id``,
``cell_line`` and ``test_split`` in ``obs``; embedding h5ad files with Ensembl ids in
``obs_names``. Per-fold L2 must equal an independent scikit-learn run of the reference pipeline
(``bench_essential_lfc.py``: GridSearchCV over StandardScaler -> PCA(100) -> kNN, shuffled 5-fold
inner CV with seed 42, mean-L2 scorer, uncovered test perturbations filled with the train mean).
"""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.dummy import DummyRegressor
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from pertstore.cli import app

runner = CliRunner()
N_PERTS, N_GENES, DIM = 200, 40, 128
UNKNOWN = "ENSG00000999999"  # a well-formed Ensembl id that is no human gene


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture
def paper_files(gene_ids, tmp_path):
    rng = np.random.default_rng(7)
    perts = gene_ids[:N_PERTS] + [UNKNOWN]
    latent = rng.normal(size=(len(perts), 8))
    y = np.tanh(latent @ rng.normal(size=(8, N_GENES))) + 0.2 * rng.normal(size=(len(perts), N_GENES))
    obs = pd.DataFrame(
        {"pert_id": perts, "gene_id": perts, "cell_line": "K562", "test_split": np.arange(len(perts)) % 5},
        index=[f"p{i}" for i in range(len(perts))],
    )
    ad.AnnData(X=y.astype(np.float32), obs=obs, var=pd.DataFrame(index=gene_ids[1000 : 1000 + N_GENES])).write_h5ad(
        tmp_path / "essential_k562_lfc.h5ad"
    )
    covered = rng.permutation(N_PERTS)[:170]  # 170 of the 200 knock-outs have an embedding (85%)
    emb = latent[covered] @ rng.normal(size=(8, DIM)) + 0.5 * rng.normal(size=(len(covered), DIM))
    extra = rng.normal(size=(50, DIM))  # genes the task does not perturb
    ad.AnnData(
        X=np.vstack([emb, extra]).astype(np.float32),
        obs=pd.DataFrame(index=[perts[i] for i in covered] + gene_ids[1500:1550]),
    ).write_h5ad(tmp_path / "emb_partial.h5ad")
    ad.AnnData(X=rng.normal(size=(60, DIM)).astype(np.float32), obs=pd.DataFrame(index=gene_ids[1600:1660])).write_h5ad(
        tmp_path / "emb_disjoint.h5ad"
    )
    return tmp_path, perts, y, covered


def _reference_fold_l2(x_all, has, y, folds, fold):
    """bench_essential_lfc.py for one fold, written with scikit-learn alone (deterministic PCA)."""
    train, test = folds != fold, folds == fold
    estimator = GridSearchCV(
        Pipeline(
            [
                ("scaler", StandardScaler()),
                ("pca", PCA(n_components=100, svd_solver="full")),
                ("pseudobulk", KNeighborsRegressor()),
            ]
        ),
        {"pseudobulk__n_neighbors": [20, 40, 60, 80, 100]},
        cv=KFold(n_splits=5, shuffle=True, random_state=42),
        scoring=make_scorer(lambda a, b: -np.linalg.norm(a - b, axis=1).mean()),
    )
    pred = DummyRegressor().fit(np.zeros((int(train.sum()), 1)), y[train]).predict(np.zeros((int(test.sum()), 1)))
    estimator.fit(x_all[train & has], y[train & has])
    pred[has[test]] = estimator.predict(x_all[test & has])
    return np.linalg.norm(y[test] - pred, axis=1).mean()


def test_paper_layout_task_resolves_and_matches_the_reference_pipeline(store, paper_files):
    folder, perts, y, covered = paper_files
    root = store.uri
    store.close()
    out = run("tasks", "import", folder / "essential_k562_lfc.h5ad", "--name", "essential-k562", "--store", root)
    assert "200 of 201 perturbation(s) resolved" in out and UNKNOWN in out
    assert UNKNOWN in run("tasks", "show", "essential-k562", "--store", root)
    run("import", folder / "emb_partial.h5ad", "--source", "partial", "--store", root)
    run("import", folder / "emb_disjoint.h5ad", "--source", "disjoint", "--store", root)

    out = run(
        "bench",
        "run",
        "--task",
        "essential-k562",
        "--set",
        "partial",
        "--evaluator",
        "knn",
        "--no-controls",
        "--store",
        root,
    )
    assert "170 / 201 (85%)" in out and "covers 170 of 201 (85%)" in out and "get the train mean" in out
    run("bench", "results", "--out", folder / "results.parquet", "--store", root)
    res = pd.read_parquet(folder / "results.parquet")
    l2 = res[(res.set == "partial") & (res.metric == "l2")].set_index("fold").sort_index()
    assert len(l2) == 5

    folds = np.arange(len(perts)) % 5
    x_all = np.full((len(perts), DIM), np.nan)
    emb = ad.read_h5ad(folder / "emb_partial.h5ad")
    position = {p: i for i, p in enumerate(perts)}
    for name, row in zip(emb.obs_names, emb.X):
        if name in position:
            x_all[position[name]] = row
    has = ~np.isnan(x_all[:, 0])
    y32 = y.astype(np.float32).astype(np.float64)  # the task file stores float32, as the paper's do
    for fold in range(5):
        expected = _reference_fold_l2(x_all, has, y32, folds, fold)
        assert l2.loc[fold, "value"] == pytest.approx(expected, rel=0.01)
        assert l2.loc[fold, "n_test"] == (folds == fold).sum()
        assert l2.loc[fold, "n_test_covered"] == (has & (folds == fold)).sum()
        assert l2.loc[fold, "n_train_covered"] == (has & (folds != fold)).sum()
    train_mean = np.mean([np.linalg.norm(y32[folds == f] - y32[folds != f].mean(0), axis=1).mean() for f in range(5)])
    assert l2.value.mean() < 0.9 * train_mean  # the embedding is used, not the train-mean fallback
    assert "170 /" in run("bench", "results", "--store", root)


def test_a_set_covering_no_perturbation_is_refused(store, paper_files):
    folder, *_ = paper_files
    root = store.uri
    store.close()
    run("tasks", "import", folder / "essential_k562_lfc.h5ad", "--name", "essential-k562", "--store", root)
    run("import", folder / "emb_disjoint.h5ad", "--source", "disjoint", "--store", root)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pertstore.cli",
            "bench",
            "run",
            "--task",
            "essential-k562",
            "--set",
            "disjoint",
            "--store",
            root,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "set 'disjoint' covers 0 of 201 perturbations of task 'essential-k562'" in done.stderr
    assert "Traceback" not in done.stderr
    from pertstore import Store

    with Store.open(root) as s:
        assert s.catalog.query("SELECT count(*) AS n FROM bench_results").n[0] == 0  # no train-mean rows stored


def test_dose_contexts_get_a_dose_curve_and_the_report_shows_coverage(store, gene_ids, tmp_path):
    """Synthetic bulk wells (log expression) of 60 genes' perturbations at three doses on two plates."""
    rng = np.random.default_rng(3)
    rows = []
    for plate in ("P1", "P2"):
        rows += [(plate, "DMSO", np.nan, True)] * 6
        rows += [(plate, g, d, False) for g in gene_ids[:60] for d in (0.1, 1.0, 10.0)]
    obs = pd.DataFrame(rows, columns=["batch", "perturbation", "dose_uM", "is_control"])
    obs["cell_line"] = "A375"
    x = rng.normal(8, 1, size=(len(obs), 30)) + np.log10(obs.dose_uM.fillna(1).to_numpy())[:, None]
    obs.index = [f"w{i}" for i in range(len(obs))]
    ad.AnnData(X=x.astype(np.float32), obs=obs).write_h5ad(tmp_path / "wells.h5ad")
    root = store.uri
    store.produce("random", source="random-16", params={"dim": 16})
    store.close()
    out = run(
        "tasks",
        "build",
        tmp_path / "wells.h5ad",
        "--name",
        "doses",
        "--input",
        "log",
        "--variant",
        "large",
        "--dose-col",
        "dose_uM",
        "--dose-as-context",
        "--trials",
        0,
        "--no-progress",
        "--store",
        root,
    )
    assert "A375_dose0.1" in out and "A375_dose10" in out
    run("bench", "run", "--task", "doses", "--set", "random-16", "--evaluator", "knn", "--store", root)
    run("report", "--out", tmp_path / "report", "--store", root)
    curve = pd.read_csv(tmp_path / "report" / "dose_doses.csv")
    knn = curve[(curve.set == "random-16") & (curve.evaluator == "knn")].sort_values("dose")
    assert knn.dose.tolist() == [0.1, 1.0, 10.0] and (knn.n_folds == 5).all()
    assert (tmp_path / "report" / "fig_dose_doses.png").exists()
    coverage = pd.read_csv(tmp_path / "report" / "coverage.csv")
    row = coverage[(coverage.set == "random-16") & (coverage.context == "A375_dose1")].iloc[0]
    assert row.n_test == 60 and row.coverage == 1.0
