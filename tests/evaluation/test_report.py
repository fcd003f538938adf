"""The report as the paper's figure notebooks compute it (``results/figures/fig_1*``, ``fig_2*``, ``fig_3*``).

Each number is checked against an independent construction written here from the notebooks' code:
gap closed from medians over folds (``fig_1.ipynb``'s "fraction achieved"), ranks per (context, fold)
(``fig_2.ipynb``), the CCA score matrix (``fig_3.ipynb``: StandardScaler, PCA(10) on the entities common to
all sets, ``CCA(10).score``), and the paired Wilcoxon tests (scipy) with Benjamini-Hochberg (statsmodels).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from pertstore.consumers.evaluators._runner import save_results
from pertstore.consumers.reports import cca_scores, paired_tests
from scipy.stats import rankdata, wilcoxon
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from pertstore import Store
from pertstore.cli import app

runner = CliRunner()


def run(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _row(task, context, fold, set_name, evaluator, metric, value):
    return {
        "task": task,
        "task_version": "v1",
        "context": context,
        "fold": fold,
        "set": set_name,
        "set_version": "",
        "evaluator": evaluator,
        "metric": metric,
        "value": value,
        "chosen": "{}",
        "coverage": 1.0,
        "seconds": 0.0,
    }


def _stored_rows() -> pd.DataFrame:
    """An LFC task (two contexts, knn and lasso, a fusion) and a DEG task, with per-fold experimental error.
    Fold 4 is an outlier everywhere, so means over folds and medians disagree."""
    rng = np.random.default_rng(3)
    levels = {
        ("train_mean", "none"): 5.0,
        ("no_change", "none"): 5.6,
        ("experimental_error", "none"): 4.0,
        ("idealised", "knn"): 3.0,
        ("setA", "knn"): 4.6,
        ("setB", "knn"): 4.9,
        ("setA", "lasso"): 4.7,
        ("idealised", "lasso"): 3.2,
        ("fusion(setA,setB)", "fusion"): 3.9,
    }
    rows = []
    for context in ("K562", "RPE1"):
        for fold in range(5):
            for (s, ev), level in levels.items():
                bump = {"setA": 3.0, "train_mean": 0.1}.get(s, 0.0) if fold == 4 else 0.0
                rows.append(_row("lfc", context, fold, s, ev, "l2", level + bump + 0.05 * rng.normal()))
                rows.append(_row("lfc", context, fold, s, ev, "mse", 0.01))
            for (s, ev), level in {
                ("train_mean", "none"): 0.40,
                ("no_change", "none"): 0.30,
                ("experimental_error", "none"): 0.80,
                ("setA", "logistic"): 0.50,
                ("idealised", "logistic"): 0.90,
            }.items():
                rows.append(_row("deg", context, fold, s, ev, "f1", level + 0.02 * rng.normal()))
    rows.append(_row("lfc", "K562", -1, "experimental_error", "none", "l2", 1.0))  # old form: not drawn
    rows += [
        _row("nofloor", "K562", fold, s, "none", "l2", 5.0) for fold in range(5) for s in ("train_mean", "no_change")
    ]
    return pd.DataFrame(rows)


def test_report_of_stored_rows_follows_the_figure_notebooks(store, tmp_path):
    rows = _stored_rows()
    save_results(store, rows, pd.DataFrame())
    root = store.uri
    store.close()
    out = tmp_path / "report"
    printed = run("report", "--out", out, "--store", root)
    assert "report.html" in "".join(printed.split())  # rich may wrap the path on a narrow terminal
    note = "nofloor / K562: no per-fold experimental error stored"
    assert note in " ".join(printed.split()) and note in (out / "report.html").read_text()
    assert "lfc / K562: no per-fold" not in (out / "report.html").read_text()  # its fold -1 row is not drawn
    for name in (
        "fig1_lfc_knn",
        "fig1_lfc_lasso",
        "fig1_deg_logistic",
        "fig2_ranks_lfc_knn",
        "fig2_ranks_deg_logistic",
    ):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.svg").stat().st_size > 0
    l2 = rows[(rows.task == "lfc") & (rows.metric == "l2") & (rows.fold >= 0)]

    # gap closed from medians over folds; best = best median, positive controls and fusion left out
    gaps = pd.read_csv(out / "gap_closed.csv", keep_default_na=False, na_values=[""])
    for context in ("K562", "RPE1"):
        med = l2[l2.context == context].groupby(["set", "evaluator"]).value.median()
        best = gaps[(gaps.task == "lfc") & (gaps.evaluator_family == "knn") & (gaps.context == context) & gaps.best]
        assert best[["set", "evaluator"]].values.tolist() == [["setA", "knn"]]  # not idealised, not fusion
        tm, ee = med[("train_mean", "none")], med[("experimental_error", "none")]
        expected = (tm - med[("setA", "knn")]) / (tm - ee)
        assert best.gap_closed.iloc[0] == pytest.approx(expected, rel=1e-12)
        mean = l2[l2.context == context].groupby(["set", "evaluator"]).value.mean()
        from_means = (mean[("train_mean", "none")] - mean[("setA", "knn")]) / (
            mean[("train_mean", "none")] - mean[("experimental_error", "none")]
        )
        assert abs(from_means - expected) > 0.1  # the outlier fold: means would give another number

    # ranks per (context, fold) within one task and one evaluator (+ controls and fusion); F1 ranks descending
    ranked = pd.read_csv(out / "ranks.csv", keep_default_na=False, na_values=[""])
    for (task, family, context, fold), g in ranked.groupby(["task", "evaluator_family", "context", "fold"]):
        assert set(g.evaluator) <= {family, "none", "fusion"}
        sign = 1 if task == "lfc" else -1
        np.testing.assert_array_equal(g["rank"].to_numpy(), rankdata(sign * g.value.to_numpy()))
    knn = ranked[(ranked.task == "lfc") & (ranked.evaluator_family == "knn")]
    assert len(knn) == 2 * 5 * 7  # contexts x folds x (3 controls, idealised, setA, setB, fusion)
    deg = ranked[(ranked.task == "deg") & (ranked.context == "K562") & (ranked.fold == 0)].set_index("set")["rank"]
    assert deg["idealised"] == 1 and deg["no_change"] == 5

    # DEG: no per-perturbation scores, so pairs are (context, fold); with 10 pairs significance is reachable
    tests = pd.read_csv(out / "wilcoxon.csv", keep_default_na=False, na_values=[""])
    deg_test = tests[(tests.task == "deg") & (tests.set == "setA")].iloc[0]
    assert deg_test.paired_over == "folds x contexts" and deg_test.n_pairs == 10 and deg_test.control == "train_mean"
    f1 = rows[(rows.task == "deg") & (rows.fold >= 0)].set_index(["set", "context", "fold"]).value
    assert deg_test.p_value == pytest.approx(wilcoxon(f1["setA"] - f1["train_mean"]).pvalue)
    assert deg_test.better and deg_test.significant


def test_fusion_vs_best_single_set_figure_5(store, tmp_path):
    """The Figure 5 view through `pertstore report`: every fusion variant against the best single embedding set
    of the same task, context and evaluator family, its gap closed computed here from the stored rows' medians.
    Fusion worse than the best set (K562, fusion-full), and everything worse than the train mean (RPE1), stay
    negative; the idealised baseline and the train mean are never the best single set."""
    rng = np.random.default_rng(11)
    levels = {
        "K562": {
            ("train_mean", "none"): 5.0,
            ("no_change", "none"): 5.6,
            ("experimental_error", "none"): 4.0,
            ("idealised", "knn"): 3.0,
            ("setA", "knn"): 4.6,
            ("setB", "knn"): 4.9,
            ("setB", "lasso"): 4.7,
            ("fusion(setA,setB)", "fusion"): 4.3,
            ("fusion(setA,setB)", "fusion-full"): 4.8,
        },
        "RPE1": {
            ("train_mean", "none"): 5.0,
            ("no_change", "none"): 5.6,
            ("experimental_error", "none"): 4.5,
            ("idealised", "knn"): 3.0,
            ("setA", "knn"): 5.2,
            ("setB", "knn"): 5.4,
            ("setB", "lasso"): 5.3,
            ("fusion(setA,setB)", "fusion"): 5.1,
            ("fusion(setA,setB)", "fusion-full"): 5.5,
        },
    }
    rows = [
        _row("lfc", c, fold, s, ev, "l2", v + 0.02 * rng.normal())
        for c, lv in levels.items()
        for fold in range(5)
        for (s, ev), v in lv.items()
    ]
    deg = {
        ("train_mean", "none"): 0.40,
        ("experimental_error", "none"): 0.80,
        ("setA", "logistic"): 0.50,
        ("setB", "logistic"): 0.55,
        ("fusion(setA,setB)", "fusion"): 0.52,
    }
    rows += [
        _row("deg", "K562", fold, s, ev, "f1", v + 0.02 * rng.normal())
        for fold in range(5)
        for (s, ev), v in deg.items()
    ]
    rows = pd.DataFrame(rows)
    save_results(store, rows, pd.DataFrame())
    root = store.uri
    store.close()
    out = tmp_path / "report"
    run("report", "--out", out, "--store", root)
    assert (out / "fig5_fusion_vs_best.png").stat().st_size > 0 and (out / "fig5_fusion_vs_best.svg").exists()
    assert "Fusion vs the best single set" in (out / "report.html").read_text()
    got = pd.read_csv(out / "fusion_vs_best.csv").set_index(["task", "evaluator_family", "context", "fusion_evaluator"])
    med = rows.groupby(["task", "context", "set", "evaluator"]).value.median()
    expected = {}
    for task, family, context, singles, fusions, lower in [
        ("lfc", "knn", "K562", ["setA", "setB"], ["fusion", "fusion-full"], True),
        ("lfc", "knn", "RPE1", ["setA", "setB"], ["fusion", "fusion-full"], True),
        ("lfc", "lasso", "K562", ["setB"], ["fusion", "fusion-full"], True),
        ("lfc", "lasso", "RPE1", ["setB"], ["fusion", "fusion-full"], True),
        ("deg", "logistic", "K562", ["setA", "setB"], ["fusion"], False),
    ]:
        m = med.loc[(task, context)]
        single = {s: m[(s, family)] for s in singles}
        best = (min if lower else max)(single, key=single.get)
        tm, ee = m[("train_mean", "none")], m[("experimental_error", "none")]
        for ev in fusions:
            fused = m[("fusion(setA,setB)", ev)]
            row = got.loc[(task, family, context, ev)]
            assert row.best_set == best and row.fusion == "fusion(setA,setB)"
            assert row.gap_closed_fusion == pytest.approx((tm - fused) / (tm - ee), rel=1e-12)
            assert row.gap_closed_best == pytest.approx((tm - single[best]) / (tm - ee), rel=1e-12)
            assert row.remaining_gap_closed == pytest.approx((single[best] - fused) / (single[best] - ee), rel=1e-9)
            assert row.fusion_better == (fused < single[best] if lower else fused > single[best])
            expected[(task, family, context, ev)] = row.gain
    assert len(got) == len(expected) == 9
    assert expected[("lfc", "knn", "K562", "fusion")] > 0 > expected[("lfc", "knn", "K562", "fusion-full")]
    rpe1 = got.loc[("lfc", "knn", "RPE1", "fusion")]
    assert rpe1.best_set == "setA" and rpe1.gap_closed_best < 0 and rpe1.gap_closed_fusion < 0 < rpe1.gain
    # the fusion variants share the families: no figure or ranking of their own
    assert not list(out.glob("fig1_lfc_fusion*")) and set(pd.read_csv(out / "ranks.csv").evaluator_family) == {
        "knn",
        "lasso",
        "logistic",
    }


def test_paired_tests_pair_over_perturbations_and_adjust_with_bh():
    """Five folds can never reach p < 0.05 (two-sided minimum 1/16); 300 paired perturbations can."""
    rng = np.random.default_rng(0)
    rows, errors = [], []
    perts = [f"ENSG{i:011d}" for i in range(300)]
    truth = {"train_mean": 5.0, "good": 4.9, "same": 5.0, "worse": 5.05}
    for fold in range(5):
        ids = perts[fold::5]
        for s, level in truth.items():
            ev = "none" if s == "train_mean" else "knn"
            e = level + 0.3 * rng.normal(size=len(ids))
            rows.append(_row("t", "K562", fold, s, ev, "l2", float(e.mean())))
            errors += [
                {
                    "task": "t",
                    "task_version": "v1",
                    "context": "K562",
                    "fold": fold,
                    "set": s,
                    "evaluator": ev,
                    "pert_id": p,
                    "l2": float(x),
                }
                for p, x in zip(ids, e)
            ]
    rows, errors = pd.DataFrame(rows), pd.DataFrame(errors)
    tests = paired_tests(rows, errors).set_index("set")
    assert (tests.paired_over == "perturbations").all() and (tests.n_pairs == 300).all()
    e = errors.set_index(["fold", "pert_id", "set"]).l2.unstack()
    for s in ("good", "same", "worse"):
        assert tests.loc[s, "p_value"] == pytest.approx(wilcoxon(e[s] - e["train_mean"]).pvalue, rel=1e-12)
    q = multipletests(tests.p_value.to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(tests.q_value.to_numpy(), q, rtol=1e-12)
    assert tests.loc["good", "significant"] and tests.loc["good", "better"]
    # the same data pooled per fold: five pairs, p = 1/16 at best
    by_fold = paired_tests(rows, None).set_index("set")
    assert (by_fold.paired_over == "folds x contexts").all() and (by_fold.n_pairs == 5).all()
    assert (by_fold.p_value >= 0.0625).all()


def _reference_cca(blocks: dict[str, np.ndarray]) -> pd.DataFrame:
    """``fig_3.ipynb``: apply_pca (StandardScaler, PCA(10)), compute_similarity_matrix (sorted, i <= j, mirrored)."""
    pcs = {
        n: PCA(n_components=min(10, *x.shape)).fit_transform(StandardScaler().fit_transform(x))
        for n, x in blocks.items()
    }
    names = sorted(pcs)
    sim = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i <= j:
                cca = CCA(n_components=min(pcs[a].shape[1], pcs[b].shape[1])).fit(pcs[a], pcs[b])
                sim[i, j] = sim[j, i] = cca.score(pcs[a], pcs[b])
    return pd.DataFrame(sim, index=names, columns=names)


def test_cca_scores_equal_the_notebook():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 6))
    blocks = {
        "b": z @ rng.normal(size=(6, 32)) + rng.normal(size=(400, 32)),
        "a": z @ rng.normal(size=(6, 24)) + 3 * rng.normal(size=(400, 24)),
        "c": rng.normal(size=(400, 12)),
    }
    got, expected = cca_scores(blocks), _reference_cca(blocks)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-10)
    assert got.loc["a", "b"] > got.loc["a", "c"]  # shared structure scores higher than noise


def test_report_through_the_cli_after_a_real_bench_run(store, gene_ids, tmp_path):
    """The README's path: `tasks import` (paper layout, two cell lines), `import` two embedding files, `bench run`,
    `report`. Paired tests come from the stored per-perturbation errors; the clustermap from the stored sets."""
    rng = np.random.default_rng(5)
    n, genes, dim = 120, 30, 48
    perts = gene_ids[:n]
    latent = rng.normal(size=(n, 6))
    frames = []
    for line in ("K562", "RPE1"):
        y = np.tanh(latent @ rng.normal(size=(6, genes))) + 0.3 * rng.normal(size=(n, genes))
        frames.append(
            ad.AnnData(
                X=y.astype(np.float32),
                obs=pd.DataFrame(
                    {"pert_id": perts, "gene_id": perts, "cell_line": line, "test_split": np.arange(n) % 5},
                    index=[f"{line}-{i}" for i in range(n)],
                ),
            )
        )
    task = ad.concat(frames)
    task.var_names = gene_ids[1000 : 1000 + genes]
    task.write_h5ad(tmp_path / "task.h5ad")
    good = latent @ rng.normal(size=(6, dim)) + 0.3 * rng.normal(size=(n, dim))
    ad.AnnData(X=good.astype(np.float32), obs=pd.DataFrame(index=perts)).write_h5ad(tmp_path / "good.h5ad")
    ad.AnnData(
        X=rng.normal(size=(n + 40, 16)).astype(np.float32), obs=pd.DataFrame(index=gene_ids[: n + 40])
    ).write_h5ad(tmp_path / "noise.h5ad")
    root = store.uri
    store.close()
    run("tasks", "import", tmp_path / "task.h5ad", "--name", "two-lines", "--store", root)
    run("import", tmp_path / "good.h5ad", "--source", "good", "--store", root)
    run("import", tmp_path / "noise.h5ad", "--source", "noise", "--store", root)
    run("bench", "run", "--task", "two-lines", "--set", "good", "--set", "noise", "--evaluator", "knn", "--store", root)
    out = tmp_path / "report"
    run("report", "--out", out, "--store", root)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") == 3  # fig 1, fig 2 (knn), fig 3 (gene sets)
    for name in ("fig1_two-lines_knn", "fig2_ranks_two-lines_knn", "fig3_cca_gene"):
        assert (out / f"{name}.png").exists() and (out / f"{name}.svg").exists()

    with Store.open(root, read_only=True) as s:
        errors = s.catalog.query("SELECT * FROM bench_errors")
        blocks = {name: s.get(name).to_pandas() for name in ("good", "noise")}
    tests = pd.read_csv(out / "wilcoxon.csv", keep_default_na=False, na_values=[""])
    assert (tests.paired_over == "perturbations").all() and (tests.n_pairs == n).all()
    e = errors.set_index(["context", "fold", "pert_id", "set"]).l2.unstack()
    for t in tests.itertuples():
        d = e.loc[t.context]
        assert t.p_value == pytest.approx(wilcoxon(d[t.set] - d[t.control]).pvalue, rel=1e-12)
    np.testing.assert_allclose(tests.q_value, multipletests(tests.p_value, method="fdr_bh")[1], rtol=1e-12)
    good_rows = tests[tests.set == "good"]
    assert good_rows.better.all() and good_rows.significant.all()

    common = sorted(set(blocks["good"].index) & set(blocks["noise"].index))
    expected = _reference_cca({k: v.loc[common].to_numpy(np.float64) for k, v in blocks.items()})
    got = pd.read_csv(out / "cca_gene.csv", index_col=0)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-8)


def test_a_set_mostly_filled_with_the_train_mean_is_never_the_best():
    """A set covering 2 of 85 test perturbations scores the train mean plus chance: it may have the best median,
    but neither Figure 1's best model nor Figure 5's best single set is it; the gap-closed table shows its
    coverage."""
    from pertstore.consumers.reports import fusion_vs_best, gap_closed

    levels = {
        ("train_mean", "none", 1.0): 5.0,
        ("experimental_error", "none", 1.0): 4.0,
        ("sparse", "knn", 2 / 85): 4.95,
        ("setA", "knn", 1.0): 4.97,
        ("setB", "knn", 0.95): 5.2,
        ("fusion(setA,setB)", "fusion", 1.0): 5.05,
    }
    rows = pd.DataFrame(
        [
            {**_row("lfc", "K562", fold, s, ev, "l2", v + 0.001 * fold), "coverage": cov}
            for fold in range(5)
            for (s, ev, cov), v in levels.items()
        ]
    )
    gaps = gap_closed(rows)
    best = gaps[gaps.best]
    assert list(best.set) == ["setA"]
    assert gaps.set_index("set").loc["sparse", "coverage"] == pytest.approx(2 / 85)
    fused = fusion_vs_best(gaps)
    assert list(fused.best_set) == ["setA"]
    # covered well enough, the same set is the best
    rows.loc[rows.set == "sparse", "coverage"] = 0.95
    gaps = gap_closed(rows)
    assert list(gaps[gaps.best].set) == ["sparse"] and list(fusion_vs_best(gaps).best_set) == ["sparse"]
