"""The DEG evaluator and metrics against the reference's definitions written here.

Reference: ``benchmark/logistic_regression.py`` (the vectorised torch model), ``bench_essential_deg.py``
(``GridSearchCV(Pipeline(StandardScaler, PCA(100), model), C grid)``, default cv, the model's own score,
most-frequent fallback) and ``task/metrics.py`` (torchmetrics per gene; F1/precision/recall averaged over
the classes present in the truth; multiclass macro AUROC and average precision).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.consumers.evaluators import VectorLogistic, deg_metrics
from pertstore.consumers.evaluators._metrics import deg_f1_per_perturbation
from pertstore.consumers.evaluators._models import balanced_cross_entropy
from sklearn import base
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from pertstore.cli import app


def _present_f1(truth: np.ndarray, labels: np.ndarray, scorer=f1_score) -> np.ndarray:
    """Per gene: sklearn's macro score over the classes present in the gene's truth (zero_division 0)."""
    return np.array(
        [
            scorer(truth[:, g], labels[:, g], labels=np.unique(truth[:, g]), average="macro", zero_division=0)
            for g in range(truth.shape[1])
        ]
    )


class ReferenceLogistic(base.BaseEstimator, base.ClassifierMixin):
    """``benchmark/logistic_regression.py``'s model and score (labels 0/1/2), seeded initialisation."""

    def __init__(self, C: float = 10.0):
        self.C = C

    def fit(self, X, y):
        X = torch.tensor(X, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.int64)
        torch.manual_seed(0)
        self.linear_ = torch.nn.Linear(X.shape[1], 3 * y.shape[1], bias=True)
        optimizer = torch.optim.LBFGS(self.linear_.parameters(), max_iter=100, line_search_fn="strong_wolfe")
        counts = (y[:, :, None] == torch.arange(0, 3)[None, None, :]).sum(dim=0)
        weights = (y.shape[0] / (3 * counts)).nan_to_num(posinf=0)

        def closure():
            optimizer.zero_grad()
            outputs = self.linear_(X).view(X.shape[0], -1, 3)
            loss = (
                torch.vmap(torch.nn.functional.cross_entropy, in_dims=(1, 1, 0), out_dims=-1)(
                    outputs, y, weights
                ).mean()
                + self.linear_.weight.norm(p="fro") ** 2 / self.C
            )
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            out = self.linear_(torch.tensor(X, dtype=torch.float32))
            return torch.softmax(out.view(len(X), -1, 3), dim=-1).numpy()

    def score(self, X, y):
        return float(_present_f1(np.asarray(y), self.predict_proba(X).argmax(-1)).mean())


def _data(seed: int, n: int = 100, d: int = 12, genes: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    z = x @ rng.normal(size=(d, genes)) + rng.normal(size=(n, genes))
    y = np.where(z > 2.0, 1, np.where(z < -2.0, -1, 0))
    y[:, 0] = np.where(z[:, 0] > 2.0, 1, 0)  # a gene without the "down" class
    return x, y


def test_vector_logistic_equals_the_reference_grid_search():
    x, y = _data(0)
    train, test = np.arange(80), np.arange(80, 100)
    reference = GridSearchCV(
        Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=12, svd_solver="full")),
                ("classifier", ReferenceLogistic()),
            ]
        ),
        param_grid={"classifier__C": [1, 1e3, 1e5, 1e7]},
    ).fit(x[train], y[train] + 1)
    got, chosen = VectorLogistic().fit_predict(x[train], y[train], x[test])
    assert chosen == {"C": reference.best_params_["classifier__C"]}
    assert len(set(np.round(reference.cv_results_["mean_test_score"], 6))) > 1  # the grid does matter here
    # the optimiser path differs by float32 rounding only (see the objective test): probabilities agree to 2e-3
    np.testing.assert_allclose(got, reference.predict_proba(x[test]), atol=2e-3)


def test_the_objective_equals_the_reference_loss():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.normal(size=(50, 7, 3)) * 3, dtype=torch.float32)
    classes = torch.tensor(rng.integers(0, 3, size=(50, 7)))
    classes[:, 0] = torch.tensor(rng.integers(0, 2, size=50))  # an absent class: weight 0
    counts = (classes[:, :, None] == torch.arange(0, 3)[None, None, :]).sum(dim=0)
    weights = (classes.shape[0] / (3 * counts)).nan_to_num(posinf=0)
    expected = torch.vmap(torch.nn.functional.cross_entropy, in_dims=(1, 1, 0), out_dims=-1)(
        logits, classes, weights
    ).mean()
    assert float(balanced_cross_entropy(logits, classes, weights)) == pytest.approx(float(expected), rel=1e-6)


def test_the_idealised_control_skips_scaler_and_pca():
    x, y = _data(1)
    reference = GridSearchCV(
        Pipeline([("classifier", ReferenceLogistic())]), param_grid={"classifier__C": [1, 1e3, 1e5, 1e7]}
    ).fit(x[:80], y[:80] + 1)
    got, chosen = VectorLogistic(transform=False).fit_predict(x[:80], y[:80], x[80:])
    assert chosen == {"C": reference.best_params_["classifier__C"]}
    np.testing.assert_allclose(got, reference.predict_proba(x[80:]), atol=2e-3)


def test_deg_metrics_equal_the_reference_definitions():
    rng = np.random.default_rng(5)
    n, genes = 60, 12
    y = rng.choice([-1, 0, 1], size=(n, genes), p=[0.2, 0.6, 0.2])
    y[:, 0] = 0  # one class only
    y[:, 1] = rng.choice([0, 1], size=n)  # "down" absent
    proba = rng.dirichlet(np.ones(3), size=(n, genes))
    proba[:, 2] = np.round(proba[:, 2], 1)  # ties in the scores
    proba[:, 2] /= proba[:, 2].sum(-1, keepdims=True)
    labels = proba.argmax(-1) - 1
    m = deg_metrics(y, proba)
    assert m["f1"] == pytest.approx(_present_f1(y, labels).mean())
    assert m["precision"] == pytest.approx(_present_f1(y, labels, precision_score).mean())
    assert m["recall"] == pytest.approx(_present_f1(y, labels, recall_score).mean())
    # torchmetrics' multiclass macro AUROC: one-vs-rest per class, a class absent from the truth scores 0
    # (its true-positive rate is a zero tensor) and still counts in the mean over the 3 classes
    auroc = [
        sum(roc_auc_score(y[:, g] == c, proba[:, g, c + 1]) for c in (-1, 0, 1) if 0 < (y[:, g] == c).sum() < n) / 3
        for g in range(genes)
    ]
    # its macro average precision: a class absent from the truth is NaN and left out
    auprc = [
        np.mean([average_precision_score(y[:, g] == c, proba[:, g, c + 1]) for c in (-1, 0, 1) if (y[:, g] == c).any()])
        for g in range(genes)
    ]
    assert m["auroc"] == pytest.approx(np.mean(auroc))
    assert m["auprc"] == pytest.approx(np.mean(auprc))
    assert np.mean(auroc[2:]) == pytest.approx(
        np.mean([roc_auc_score(y[:, g] + 1, proba[:, g], multi_class="ovr") for g in range(2, genes)])
    )
    # labels are one-hot probabilities; a perturbation's paired score is its present-class F1 over genes
    assert deg_metrics(y, labels)["f1"] == pytest.approx(m["f1"])
    per = deg_f1_per_perturbation(y, proba)
    assert per == pytest.approx(
        [f1_score(y[i], labels[i], labels=np.unique(y[i]), average="macro", zero_division=0) for i in range(n)]
    )


runner = CliRunner()


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_cli_deg_run_reports_the_reference_metrics(store, gene_ids, tmp_path):
    """`tasks import` a DEG task in the paper's layout, `import` an embedding, `bench run --evaluator logistic`."""
    rng = np.random.default_rng(11)
    n, genes, dim = 60, 10, 16
    perts = gene_ids[:n]
    latent = rng.normal(size=(n, 4))
    z = latent @ rng.normal(size=(4, genes)) * 1.5
    y = np.where(z > 1.5, 1, np.where(z < -1.5, -1, 0)).astype(np.float32)
    folds = np.arange(n) % 5
    obs = pd.DataFrame(
        {"pert_id": perts, "gene_id": perts, "cell_line": "K562", "test_split": folds},
        index=[f"p{i}" for i in range(n)],
    )
    ad.AnnData(X=y, obs=obs, var=pd.DataFrame(index=gene_ids[1000 : 1000 + genes])).write_h5ad(tmp_path / "deg.h5ad")
    covered = np.arange(n) >= 5  # 5 perturbations without an embedding: the fallback
    emb = latent[covered] @ rng.normal(size=(4, dim)) + 0.1 * rng.normal(size=(int(covered.sum()), dim))
    ad.AnnData(X=emb.astype(np.float32), obs=pd.DataFrame(index=[p for p, c in zip(perts, covered) if c])).write_h5ad(
        tmp_path / "emb.h5ad"
    )
    root = store.uri
    store.close()
    run("tasks", "import", tmp_path / "deg.h5ad", "--name", "deg-k562", "--store", root)
    run("import", tmp_path / "emb.h5ad", "--source", "emb", "--store", root)
    run(
        "bench",
        "run",
        "--task",
        "deg-k562",
        "--set",
        "emb",
        "--evaluator",
        "logistic",
        "--fold",
        "0",
        "--no-controls",
        "--store",
        root,
    )
    run("bench", "results", "--out", tmp_path / "r.csv", "--store", root)
    res = pd.read_csv(tmp_path / "r.csv")
    got = res[(res.set == "emb") & (res.fold == 0)].set_index("metric").value
    assert set(got.index) == {"f1", "precision", "recall", "auroc", "auprc"}

    # the reference on the same fold: GridSearchCV pipeline on the covered rows, most-frequent fallback
    test, train = folds == 0, folds != 0
    x = np.zeros((n, dim))
    x[covered] = emb.astype(np.float32)
    reference = GridSearchCV(
        Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=dim, svd_solver="full")),
                ("classifier", ReferenceLogistic()),
            ]
        ),
        param_grid={"classifier__C": [1, 1e3, 1e5, 1e7]},
    )
    reference.fit(x[train & covered], y[train & covered].astype(int) + 1)
    pred = np.zeros((int(test.sum()), genes, 3))
    for g in range(genes):  # DummyClassifier's one-hot covers only the classes seen in training
        seen = np.unique(y[train][:, g]).astype(int) + 1
        pred[:, g] = 0
        pred[:, g, seen] = np.asarray(
            DummyClassifier(strategy="most_frequent")
            .fit(np.zeros((int(train.sum()), 1)), y[train][:, g] + 1)
            .predict_proba(np.zeros((int(test.sum()), 1)))
        )
    pred[covered[test]] = reference.predict_proba(x[test & covered])
    expected = deg_metrics(y[test], pred)
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=1e-4), metric
    chosen = res[(res.set == "emb") & (res.fold == 0)].chosen.iloc[0]
    assert str(reference.best_params_["classifier__C"]) in chosen

    from pertstore import Store

    with Store.open(root) as s:
        errors = s.catalog.query("SELECT * FROM bench_errors WHERE task = 'deg-k562'")
    assert len(errors) == test.sum() and errors.l2.isna().all()
    assert sorted(errors.f1) == pytest.approx(sorted(deg_f1_per_perturbation(y[test], pred)))
