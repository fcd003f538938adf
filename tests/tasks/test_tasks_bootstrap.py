"""The experimental error equals the paper's code (``benchmark/experimental_error/``), re-implemented here.

Each reference function is written below from the reference script, with numpy on the dense
normalised cells and the reference's own random streams (``SeedSequence`` spawns,
``bootstrap_csr_mean``'s ``rng.integers``, pandas' ``groupby().sample``), so the comparison is
exact up to floating-point summation order.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from pertstore.consumers.evaluators._metrics import deg_metrics
from pertstore.consumers.tasks import deg, experimental_error, lfc, make_folds, read_perturbation_data
from pertstore.consumers.tasks._bootstrap import _deg_large_replicates, groupby_sample_counts, nearest_quantile
from pertstore.consumers.tasks._groups import layout
from scipy import stats
from statsmodels.stats.multitest import multipletests
from task_helpers import synthetic

CELLS = {
    ("A", b, lab): n for b in ("b1", "b2", "b3") for lab, n in (("control", 40), ("P1", 31), ("P2", 33), ("P3", 45))
}
CELLS.update(
    {
        ("A", "b4", "P1"): 12,
        ("A", "b4", "control"): 10,
        ("B", "b1", "control"): 30,
        ("B", "b1", "P1"): 30,
        ("B", "b2", "control"): 35,
        ("B", "b2", "P4"): 32,
        ("B", "b2", "P1"): 6,
    }
)
OUTER, INNER = 3, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("boot") / "cells.h5ad"
    a = synthetic(cells=CELLS, n_genes=20, seed=11, effect=1.5)
    a = a[np.random.default_rng(3).permutation(a.n_obs)].copy()  # batches appear in no sorted order
    a.write_h5ad(path)
    return read_perturbation_data(path)


def frame(data) -> pd.DataFrame:
    """The cells as the reference sees them: obs (file order) and dense normalised X."""
    x = data.matrix.take(np.arange(data.matrix.shape[0])).toarray()
    obs = data.cells[["context", "label", "batch", "is_control"]].astype({"context": str, "label": str, "batch": str})
    return obs.reset_index(drop=True), x


# ---- the reference, written from its scripts -------------------------------------------------------------


def bootstrap_csr_mean(x, n_trials, rng):  # utils.py
    idx = rng.integers(x.shape[0], size=(n_trials, x.shape[0]))
    return x[idx].mean(axis=1)


def two_stage_bootstrap_global(x, batch, root_seq, n_inner, n_outer):  # run_exp_error_essential.py
    batch_to_x = {b: x[batch == b] for b in np.unique(batch)}
    batch_id_list = sorted(batch_to_x)
    outer_results = []
    for ss_outer in root_seq.spawn(n_outer):
        if len(batch_id_list) > 1:
            boot_batches = np.random.default_rng(ss_outer).choice(batch_id_list, size=len(batch_id_list), replace=True)
        else:
            boot_batches = batch_id_list
        batch_results = [
            bootstrap_csr_mean(batch_to_x[b], n_inner, np.random.default_rng(ss))
            for b, ss in zip(boot_batches, ss_outer.spawn(len(boot_batches)))
        ]
        outer_results.append(np.array(batch_results).mean(axis=0))
    return np.array(outer_results)


def metrics(delta_boot, point):  # run_pert, both LFC scripts
    diff = delta_boot - point
    return {
        "l2": np.linalg.norm(diff, axis=1),
        "mse": np.mean(diff**2, axis=1),
        "mae": np.mean(np.abs(diff), axis=1),
        "pearson": [stats.pearsonr(d, point)[0] for d in delta_boot],
        "spearman": [stats.spearmanr(d, point)[0] for d in delta_boot],
    }


def reference_essential(obs, x, context, seed=5050):
    """``run_exp_error_essential.main`` on one context: {pert: {metric: 0.9 quantile}}."""
    obs_c, x_c = obs[obs["context"] == context], x[(obs["context"] == context).to_numpy()]
    ctrl = obs_c["is_control"].to_numpy()
    pert_id_list = sorted(obs_c.loc[~ctrl, "label"].unique())
    seed_seq = np.random.SeedSequence(seed)
    ctrl_boot = two_stage_bootstrap_global(
        x_c[ctrl], obs_c["batch"].to_numpy()[ctrl], seed_seq.spawn(1)[0], INNER, OUTER
    )
    ctrl_point = np.mean(
        [
            x_c[ctrl & (obs_c["batch"] == b).to_numpy()].mean(0)  # pseudobulk_delta
            for b in np.unique(obs_c["batch"][ctrl])
        ],
        axis=0,
    )
    out = {}
    for lab, ss in zip(pert_id_list, seed_seq.spawn(len(pert_id_list))):
        mine = (obs_c["label"] == lab).to_numpy() & ~ctrl
        batch = obs_c["batch"].to_numpy()[mine]
        point = np.mean([x_c[mine][batch == b].mean(0) for b in np.unique(batch)], axis=0) - ctrl_point
        delta = (two_stage_bootstrap_global(x_c[mine], batch, ss, INNER, OUTER) - ctrl_boot).reshape(-1, x.shape[1])
        out[lab] = {m: np.quantile(v, 0.9) for m, v in metrics(delta, point).items()}
    return out


def reference_plate_matched(obs, x, context, seed=5050):
    """``run_exp_error_plate_matched.main`` on one context (all five metrics, the script keeps L2)."""
    obs_c, x_c = obs[obs["context"] == context], x[(obs["context"] == context).to_numpy()]
    ctrl = obs_c["is_control"].to_numpy()
    pert_id_list = sorted(obs_c.loc[~ctrl, "label"].unique())
    key = np.where(ctrl, "control", obs_c["label"])
    plate_x = {(b, p): x_c[(obs_c["batch"] == b).to_numpy() & (key == p)] for b, p in set(zip(obs_c["batch"], key))}
    out = {}
    for lab, ss in zip(pert_id_list, np.random.SeedSequence(seed).spawn(len(pert_id_list))):
        plates = obs_c[(key == lab)]["batch"].unique()
        results = []
        for ss_outer in ss.spawn(OUTER):
            batch = np.random.default_rng(ss_outer).choice(plates, size=len(plates))
            batch_results = []
            for plate, ss_inner in zip(batch, ss_outer.spawn(len(batch))):
                rng = np.random.default_rng(ss_inner)
                batch_results.append(
                    bootstrap_csr_mean(plate_x[(plate, lab)], INNER, rng)
                    - bootstrap_csr_mean(plate_x[(plate, "control")], INNER, rng)
                )
            results.append(np.stack(batch_results).mean(axis=0))
        truth = np.mean([plate_x[(p, lab)].mean(0) - plate_x[(p, "control")].mean(0) for p in plates], axis=0)
        out[lab] = {
            m: np.quantile(v, 0.9) for m, v in metrics(np.stack(results).reshape(-1, x.shape[1]), truth).items()
        }
    return out


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["small", "large"])
def test_lfc_error_equals_the_reference_scripts(data, variant):
    targets = lfc(data, variant=variant)
    err = experimental_error(data, targets, trials=OUTER * INNER, inner=INNER)
    obs, x = frame(data)
    reference = reference_essential if variant == "small" else reference_plate_matched
    contexts = data.perturbations["context"].to_numpy()[targets.perts]
    labels = data.perturbations["label"].to_numpy()[targets.perts]
    for ctx in ("A", "B"):
        want = reference(obs, x, ctx)
        for i in np.flatnonzero(contexts == ctx):
            for m, name in enumerate(err.metrics):
                assert err.per_pert[i, m] == pytest.approx(want[labels[i]][name], rel=1e-9, abs=1e-12), (ctx, name)
    assert err.params["reference"] == (
        "run_exp_error_essential.py" if variant == "small" else "run_exp_error_plate_matched.py"
    )
    # per fold and per metric: the mean of the test perturbations' 0.9 quantiles
    folds = make_folds(contexts, labels=labels, n_folds=2)
    limits = err.fold_limits(folds, list(contexts))
    pairs = set(zip(contexts, folds.tolist()))
    assert len(limits) == 5 * len(pairs) and set(limits["metric"]) == {"l2", "mse", "mae", "pearson", "spearman"}
    for row in limits.itertuples():
        test = (contexts == row.context) & (folds == row.fold)
        want = (
            np.mean([reference(obs, x, row.context)[lab][row.metric] for lab in labels[test]])
            if row.metric == "l2"
            else np.mean(err.per_pert[test, err.metrics.index(row.metric)])
        )
        assert row.value == pytest.approx(want, rel=1e-9)


def test_groupby_sample_counts_are_pandas_draws():
    labels = np.array(list("bacbbcaacbzb"))
    df = pd.DataFrame({"label": labels, "obs_id": np.arange(labels.size)})
    for seed in (0, 7, 2**31):
        ids = df.groupby("label").sample(frac=1, replace=True, random_state=seed)["obs_id"].to_numpy()
        np.testing.assert_array_equal(groupby_sample_counts(labels, seed), np.bincount(ids, minlength=labels.size))


def reference_deg_replicates(obs, x, context, perts, trials, seed=5050, alpha=0.05):
    """``run_exp_error_essential_deg.main``'s resampled labels (Welch t against the controls, BH) per trial."""
    obs_c = obs[obs["context"] == context].reset_index(drop=True)
    x_c = x[(obs["context"] == context).to_numpy()]
    obs_c["obs_id"] = np.arange(len(obs_c))
    out = []
    for state in np.random.SeedSequence(seed).generate_state(trials):
        ids = obs_c.groupby("label").sample(frac=1, replace=True, random_state=state)["obs_id"].to_numpy()
        sample, xs = obs_c.iloc[ids], x_c[ids]
        ctrl = xs[sample["is_control"].to_numpy()]
        labels = []
        for lab in perts:
            with np.errstate(all="ignore"):
                score, p = stats.ttest_ind(
                    xs[(sample["label"] == lab).to_numpy() & ~sample["is_control"].to_numpy()], ctrl, equal_var=False
                )
            score, p = np.nan_to_num(score), np.nan_to_num(p, nan=1.0)
            labels.append((np.sign(score) * (multipletests(p, method="fdr_bh")[1] < alpha)).astype(np.int8))
        out.append(np.array(labels))
    return out


def test_deg_error_equals_the_reference_script(data):
    targets = deg(data, variant="small", min_cells=30)
    contexts = data.perturbations["context"].to_numpy()[targets.perts]
    labels = data.perturbations["label"].to_numpy()[targets.perts]
    folds = make_folds(contexts, labels=labels, n_folds=2)
    trials = 7
    err = experimental_error(data, targets, folds=folds, trials=trials)
    assert err.params["reference"] == "run_exp_error_essential_deg.py" and err.quantile == 0.1
    obs, x = frame(data)
    got = err.fold_limits(folds, list(contexts))
    for ctx in ("A", "B"):
        rows = np.flatnonzero(contexts == ctx)
        replicates = reference_deg_replicates(obs, x, ctx, labels[rows], trials)
        for f in sorted(set(folds[rows])):
            test = folds[rows] == f
            per_trial = [deg_metrics(targets.values[rows][test], r[test]) for r in replicates]
            for m in ("f1", "precision", "recall"):  # the limits reported (AUROC/AUPRC are not)
                values = np.sort([t[m] for t in per_trial])
                want = values[int(np.floor((trials - 1) * 0.1 + 0.5))]  # polars quantile(0.1), nearest
                value = got[(got.context == ctx) & (got.fold == f) & (got.metric == m)]["value"].item()
                assert value == pytest.approx(want, rel=1e-12), (ctx, f, m)
    with pytest.raises(Exception, match="other folds"):
        err.fold_limits(1 - folds, list(contexts))


def test_nearest_quantile_is_polars_rule():
    v = np.arange(6.0)[::-1]
    assert nearest_quantile(v, 0.1) == 1.0  # (6 - 1) * 0.1 = 0.5 rounds away from zero (numpy: 0)
    assert nearest_quantile(np.arange(20.0), 0.1) == 2.0
    assert nearest_quantile(np.array([np.nan, 3.0]), 0.1) == 3.0


def test_memory_stays_bounded(data):
    """No [trials, cells, genes] array: peak memory grows with trials only by the [pert, trial, metric] table."""
    targets = lfc(data, variant="small")

    def peak(trials: int) -> int:
        tracemalloc.start()
        experimental_error(data, targets, trials=trials, inner=10)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(10), peak(200)
    n_cells, n_genes = data.matrix.shape
    cube = 200 * max(CELLS.values()) * n_genes * 8  # one perturbation's [trials, cells, genes]
    table = targets.perts.size * 200 * 5 * 8
    assert large - small < cube / 2 + 4 * table + (n_cells + n_genes) * 200 * 8


def reference_tahoe_replicates(obs, x, context, lab, outer, inner, min_cells, seed=5050, alpha=0.05):
    """``run_exp_error_tahoe_deg.main``'s replicate labels of one perturbation (outer x inner), voted over plates."""
    in_ctx = (obs["context"] == context).to_numpy()
    obs_c, x_c = obs[in_ctx].reset_index(drop=True), x[in_ctx]
    pert_id = np.where(obs_c["is_control"], "control", obs_c["label"])
    n_ctrl = obs_c[obs_c["is_control"]].groupby("batch").size()
    mine = obs_c[pert_id == lab]
    sizes = mine.groupby("batch").size()
    plates = [b for b in mine["batch"].unique() if sizes[b] >= min_cells and n_ctrl.get(b, 0) >= min_cells]
    out = []
    for outer_seed in np.random.SeedSequence(seed).generate_state(outer):
        sampled = np.random.default_rng(outer_seed).choice(plates, size=len(plates))
        parts = [
            pd.DataFrame({"plate": f"plate_{i}", "pert_id": pert_id[rows], "row": rows})
            for i, plate in enumerate(sampled)
            for rows in [np.flatnonzero(((pert_id == "control") | (pert_id == lab)) & (obs_c["batch"] == plate))]
        ]
        adata = pd.concat(parts).reset_index(drop=True)
        for inner_seed in np.random.SeedSequence(outer_seed).generate_state(inner):
            sample = adata.loc[
                adata.groupby(["plate", "pert_id"]).sample(frac=1, replace=True, random_state=inner_seed).index
            ]
            votes = []
            for _, g in sample.groupby("plate"):
                xs, c = x_c[g["row"][g["pert_id"] == lab]], x_c[g["row"][g["pert_id"] == "control"]]
                with np.errstate(all="ignore"):
                    score, p = stats.ttest_ind(xs, c, equal_var=False)
                score, p = np.nan_to_num(score), np.nan_to_num(p, nan=1.0)
                votes.append(np.sign(score) * (multipletests(p, method="fdr_bh")[1] < alpha))
            votes = np.array(votes)
            counts = np.stack([(votes == k).sum(0) for k in (-1, 0, 1)])
            top = counts.max(0)  # most votes wins; a tie: the sign of the sum of the tied labels (deg_tahoe README)
            out.append(np.sign((counts[2] == top).astype(int) - (counts[0] == top)).astype(np.int8))
    return np.array(out)


def test_per_batch_deg_error_equals_the_tahoe_script(data):
    targets = deg(data, variant="large", min_cells=30)
    contexts = data.perturbations["context"].to_numpy()[targets.perts]
    labels = data.perturbations["label"].to_numpy()[targets.perts]
    folds = make_folds(contexts, labels=labels, n_folds=2)
    outer, inner = 2, 3
    err = experimental_error(data, targets, folds=folds, trials=outer * inner, inner=inner)
    assert err.params["reference"] == "run_exp_error_tahoe_deg.py"
    obs, x = frame(data)
    replicates = np.stack(
        [reference_tahoe_replicates(obs, x, c, lab, outer, inner, 30) for c, lab in zip(contexts, labels)], axis=1
    )  # [trials, perts, genes]
    ours = np.stack(list(_deg_large_replicates(data, layout(data), targets, outer, inner, 5050, None)))
    np.testing.assert_array_equal(ours, replicates)
    assert (replicates != targets.values[None]).any()  # the replicates do differ from the labels
    got = err.fold_limits(folds, list(contexts))
    for (ctx, f), rows in got.groupby(["context", "fold"]):
        test = (contexts == ctx) & (folds == f)
        per_trial = [deg_metrics(targets.values[test], r[test]) for r in replicates]
        for m, value in zip(rows["metric"], rows["value"]):
            assert value == pytest.approx(nearest_quantile(np.array([t[m] for t in per_trial]), 0.1), rel=1e-12)
