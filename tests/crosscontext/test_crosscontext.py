"""Cross-context splits, metrics (against cell-eval itself), models, and `bench run --setting` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import pytest
from pertstore.consumers.crosscontext import (
    SplitData,
    cross_context_splits,
    discrimination_l1,
    mae_per_perturbation,
    overlap_at_n,
    random_codes,
)
from pertstore.consumers.crosscontext._models import context_mean, cross_knn
from typer.testing import CliRunner

from pertstore.cli import app
from pertstore.errors import InvalidInputError

runner = CliRunner()


def _layout(seed: int = 0):
    rng = np.random.default_rng(seed)
    ctx = np.repeat(["A", "B", "C", "D"], [12, 9, 9, 7])
    folds = rng.integers(-1, 5, size=ctx.size)
    return ctx, folds


@pytest.mark.parametrize("setting", ["zeroshot", "fewshot"])
def test_splits_never_leak_a_held_out_context(setting):
    ctx, folds = _layout()
    splits = list(cross_context_splits(ctx, folds, setting))
    assert {s.context for s in splits} == {"A", "B", "C", "D"}
    for s in splits:
        assert not (s.train & s.test).any()
        assert (ctx[s.test] == s.context).all()  # only the held-out context is tested
        if setting == "zeroshot":
            assert not (s.train & (ctx == s.context)).any()  # none of it is seen in training
            assert s.test.sum() == (ctx == s.context).sum() and s.fold == 0
        else:
            inside = s.train & (ctx == s.context)
            assert (folds[inside] != s.fold).all() and (folds[inside] != -1).all()
            assert (folds[s.test] == s.fold).all()
        assert (s.train | (ctx == s.context)).all()  # every other context trains
    if setting == "fewshot":  # every held-out row of a fold is tested exactly once
        for c in "ABCD":
            tested = np.concatenate([np.flatnonzero(s.test) for s in splits if s.context == c])
            assert sorted(tested) == sorted(np.flatnonzero((ctx == c) & (folds != -1)))


def test_split_errors_are_clear():
    ctx, folds = _layout()
    with pytest.raises(InvalidInputError, match="setting"):
        list(cross_context_splits(ctx, folds, "oneshot"))
    with pytest.raises(InvalidInputError, match="unknown context"):
        list(cross_context_splits(ctx, folds, "zeroshot", held_out=["Z"]))
    with pytest.raises(InvalidInputError, match="two contexts"):
        list(cross_context_splits(["A"] * 3, [0, 1, 2], "fewshot"))


def _pair(truth, pred, perts, genes):
    """cell-eval's inputs for pseudobulk rows: one 'cell' per perturbation plus a control at the origin."""
    obs = pd.DataFrame({"target": [*perts, "ctrl"]}, index=[f"c{i}" for i in range(len(perts) + 1)])
    var = pd.DataFrame(index=list(genes))
    zero = np.zeros((1, truth.shape[1]))
    return (
        ad.AnnData(np.vstack([truth, zero]), obs=obs.copy(), var=var.copy()),
        ad.AnnData(np.vstack([pred, zero]), obs=obs.copy(), var=var.copy()),
    )


def test_metrics_equal_cell_eval():
    from cell_eval._types import PerturbationAnndataPair, initialize_de_comparison
    from cell_eval.metrics import discrimination_score, mae

    rng = np.random.default_rng(3)
    genes = [f"G{i}" for i in range(60)]
    perts = ["G3", "G10", "X1", "G40", "X2", "G59", "X3", "X4"]  # some perturb a measured gene (left out)
    truth = rng.normal(size=(len(perts), len(genes)))
    pred = truth + rng.normal(scale=6.0, size=truth.shape)
    real, predicted = _pair(truth, pred, perts, genes)
    pair = PerturbationAnndataPair(real=real, pred=predicted, pert_col="target", control_pert="ctrl")
    ours = dict(zip(perts, discrimination_l1(truth, pred, perts, genes)))
    theirs = discrimination_score(pair, metric="l1")
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert len(set(ours.values())) > 1
    assert dict(zip(perts, mae_per_perturbation(truth, pred))) == pytest.approx(mae(pair), rel=1e-6)

    def de(values):  # every gene significant, ranked by |log2 fold change| as cell-eval's default
        return pl.DataFrame(
            {
                "target": np.repeat(perts, len(genes)),
                "feature": np.tile(genes, len(perts)),
                "log2_fold_change": values.ravel(),
                "p_value": 0.0,
                "fdr": 0.0,
            }
        )

    comparison = initialize_de_comparison(de(truth.astype(np.float32)), de(pred.astype(np.float32)))
    for n in (5, 20):
        theirs = comparison.compute_overlap(k=n, metric="overlap")
        ours = dict(zip(perts, overlap_at_n(truth, pred, n)))
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_context_mean_and_cross_knn_follow_their_definitions():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 30))
    ctx = np.repeat(["H", "S", "F"], 5)  # held out H; S is H's twin, F is unrelated
    labels = np.tile([f"p{i}" for i in range(5)], 3)
    y = np.vstack([base, base + 0.01 * rng.normal(size=base.shape), rng.normal(size=base.shape)])
    test = (ctx == "H") & np.isin(labels, ["p0", "p1"])
    d = SplitData(y, ctx, labels, ~test, test, "H")
    assert np.allclose(context_mean(d), y[(ctx == "H") & ~test].mean(axis=0))
    pred, chosen = cross_knn(d, k=1)
    assert chosen["similarity"]["S"] > 0.9 > chosen["similarity"]["F"]
    assert np.allclose(pred, y[(ctx == "S") & np.isin(labels, ["p0", "p1"])])
    zero = SplitData(y, ctx, labels, ctx != "H", ctx == "H", "H")  # zero-shot: no similarity, mean of all lines
    pred, _ = cross_knn(zero, k=2)
    assert np.allclose(pred[0], y[labels == "p0"][1:].mean(axis=0))
    assert np.allclose(context_mean(zero)[0], y[ctx != "H"].mean(axis=0))


def test_onehot_codes_are_fixed_per_label():
    a = random_codes(["p1", "p2", "p3"], 8)
    b = random_codes(["p3", "p1"], 8)
    assert np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])
    assert not np.allclose(a[0], a[1])


def test_bench_run_cross_context_on_the_shared_data(tmp_path: Path):
    """The README's path: `tasks build` (cell lines as contexts) + a set + `bench run --setting fewshot|zeroshot`."""
    data = os.environ.get("PERTSTORE_DATA_DIR")
    path = Path(data or "") / "perturb/norman2019_mcfaline2023_devel.h5ad"
    if not data or not path.is_file():
        pytest.skip("PERTSTORE_DATA_DIR is not set or lacks the Norman / McFaline-Figueroa file")
    from pertstore import Store

    root = tmp_path / "store"

    def run(*args) -> str:
        result = runner.invoke(app, [*map(str, args), "--store", str(root)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    run_init = runner.invoke(app, ["init", str(root)])
    assert run_init.exit_code == 0, run_init.output
    run("tasks", "build", path, "--kind", "lfc", "--name", "xc", "--pert-col", "perturbation",
        "--control-label", "control", "--context-col", "cell_type", "--trials", "2")  # fmt: skip
    with Store.open(root) as store:
        store.produce("random", source="random-8", params={"dim": 8})
    evaluators = ["--evaluator", "mlp", "--evaluator", "onehot", "--evaluator", "context_mean", "--evaluator", "knn"]
    run("bench", "run", "--task", "xc", "--set", "random-8", *evaluators, "--setting", "fewshot", "--context", "A172")
    run("bench", "run", "--task", "xc", "--set", "random-8", "--evaluator", "knn", "--setting", "zeroshot")
    out = tmp_path / "results.csv"
    run("bench", "results", "--out", out)
    df = pd.read_csv(out)
    few = df[df.evaluator == "xc-fewshot"]
    assert set(few.context) == {"A172"}
    assert set(few.set) == {"random-8", "onehot", "context_mean", "cross_knn"}
    assert {"mae", "overlap_at_n", "discrimination_l1", "l2"} <= set(few.metric)
    assert few.groupby(["set", "metric"]).fold.nunique().min() == 5  # 9 perturbations in 5 folds
    zero = df[df.evaluator == "xc-zeroshot"]
    assert set(zero.context) == {"A172", "T98G", "U87MG", "k562"} and set(zero.fold) == {0}
    bad = subprocess.run(
        [sys.executable, "-m", "pertstore.cli", "bench", "run", "--task", "xc", "--set", "random-8",
         "--evaluator", "lasso", "--setting", "fewshot", "--store", str(root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "cross-context evaluators" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    chosen = json.loads(few[(few.set == "cross_knn")].chosen.iloc[0])
    assert set(chosen["similarity"]) == {"T98G", "U87MG", "k562"}
    # the report's S12/S13 view: per setting, each model's metric averaged over folds, then over held-out cell lines
    report = tmp_path / "report"
    run("report", "--out", report)
    table = pd.read_csv(report / "cross_context.csv")
    zero_mae = zero[zero.metric == "mae"].groupby(["set", "context"]).value.mean().groupby("set").mean()
    got = table[(table.setting == "zeroshot") & (table.metric == "mae")].set_index("set")["mean"]
    assert got.to_dict() == pytest.approx(zero_mae.to_dict())
    assert set(table[table.setting == "fewshot"].model) == {
        "MLP on random-8", "MLP on one-hot codes", "context mean", "cross-context kNN"
    }  # fmt: skip
    assert (table[table.setting == "zeroshot"].n_contexts == 4).all()
    assert (report / "fig_s12_s13_xc_fewshot.png").exists() and (report / "fig_s12_s13_xc_zeroshot.png").exists()
    assert "Figures S12/S13" in (report / "report.html").read_text()
