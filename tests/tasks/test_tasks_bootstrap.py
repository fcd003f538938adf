"""The bootstrap equals a brute-force bootstrap that materialises every resampled cell."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from task_helpers import synthetic
from scipy import stats
from sklearn.metrics import f1_score
from statsmodels.stats.multitest import multipletests

from pertstore.consumers.tasks import deg, experimental_error, lfc, read_perturbation_data
from pertstore.consumers.tasks._bootstrap import CHUNK_TRIALS, batch_draws, macro_f1, resample

CELLS = {("A", b, lab): n for b in ("b1", "b2", "b3") for lab, n in (("control", 40), ("P1", 31), ("P2", 33),
                                                                       ("P3", 45))}
CELLS.update({("A", "b4", "P1"): 12, ("A", "b4", "control"): 10, ("B", "b1", "control"): 30, ("B", "b1", "P1"): 30,
              ("B", "b2", "control"): 35, ("B", "b2", "P4"): 32})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("boot") / "cells.h5ad"
    synthetic(cells=CELLS, n_genes=20, seed=11, effect=1.5).write_h5ad(path)
    return read_perturbation_data(path)


def dense_normalised(data) -> np.ndarray:
    return data.matrix.take(np.arange(data.matrix.shape[0])).toarray()


def slots(data, seed: int, trials: int, t: int):
    """Brute force: every (context, batch copy) of trial t with its explicitly resampled cells per group.

    Draws follow the documented scheme: outer ``batch_draws`` per context; inner
    ``resample`` keyed ``(0, b + 1, chunk)`` for the controls of batch ``b`` and
    ``(p + 1, 0, chunk)`` for perturbation ``p`` (its batches in order, cells in file order).
    """
    cells, x = data.cells, dense_normalised(data)
    pairs = sorted(set(zip(cells["context"].astype(str), cells["batch"].astype(str))))
    chunk, tc = divmod(t, CHUNK_TRIALS)
    out = []
    for ci, ctx in enumerate(sorted({c for c, _ in pairs})):
        gb = [i for i, (c, _) in enumerate(pairs) if c == ctx]
        m = np.zeros((trials, len(pairs)), dtype=int)
        m[:, gb] = batch_draws(seed, ci, len(gb), trials)
        m = m[chunk * CHUNK_TRIALS:(chunk + 1) * CHUNK_TRIALS]
        copies = {b: [dict() for _ in range(m[tc, b])] for b in gb}
        for b in gb:
            rows = cells.loc[(cells["context"] == ctx) & (cells["batch"] == pairs[b][1]) & cells["is_control"], "row"]
            if len(rows):
                d = resample(seed, (0, b + 1, chunk), np.array([0]), np.array([len(rows)]), m[:, [b]], len(rows))
                for j, c in enumerate(np.flatnonzero(d.copy_trial == tc)):
                    copies[b][j]["control"] = x[rows.to_numpy()[d.cell[d.copy == c]]]
        for p, (pc, lab) in enumerate(zip(data.perturbations["context"], data.perturbations["label"], strict=True)):
            if pc != ctx:
                continue
            own = cells[(cells["context"] == ctx) & (cells["label"] == lab) & ~cells["is_control"]]
            bs = [b for b in gb if (own["batch"] == pairs[b][1]).any()]
            rows = np.concatenate([own.loc[own["batch"] == pairs[b][1], "row"].to_numpy() for b in bs])
            sizes = np.array([(own["batch"] == pairs[b][1]).sum() for b in bs])
            starts = np.r_[0, np.cumsum(sizes)[:-1]]
            d = resample(seed, (p + 1, 0, chunk), starts, sizes, m[:, bs], rows.size)
            for g, b in enumerate(bs):
                for j, c in enumerate(np.flatnonzero((d.copy_trial == tc) & (d.copy_group == g))):
                    copies[b][j][lab] = x[rows[d.cell[d.copy == c]]]
        out += [(ctx, pairs[b][1], drawn) for b in gb for drawn in copies[b]]
    return out


def brute_lfc(data, variant: str, seed: int, trials: int, t: int) -> dict:
    by_ctx: dict = {}
    for ctx, _, drawn in slots(data, seed, trials, t):
        by_ctx.setdefault(ctx, []).append(drawn)
    out = {}
    for ctx, copies in by_ctx.items():
        ctrl_means = [d["control"].mean(axis=0) for d in copies if "control" in d]
        for lab in {lab for d in copies for lab in d} - {"control"}:
            if variant == "large":
                diffs = [d[lab].mean(axis=0) - d["control"].mean(axis=0) for d in copies if lab in d and "control" in d]
                out[(ctx, lab)] = np.mean(diffs, axis=0) if diffs else None
            else:
                out[(ctx, lab)] = np.mean([d[lab].mean(axis=0) for d in copies if lab in d], axis=0) - np.mean(
                    ctrl_means, axis=0)
    return out


@pytest.mark.parametrize("variant", ["large", "small"])
def test_lfc_bootstrap_equals_brute_force(data, variant):
    targets = lfc(data, variant=variant)
    trials = CHUNK_TRIALS + 3     # two chunks
    err = experimental_error(data, targets, trials=trials, seed=7)
    keys = list(zip(data.perturbations["context"].to_numpy()[targets.perts],
                    data.perturbations["label"].to_numpy()[targets.perts]))
    for t in (0, 5, CHUNK_TRIALS + 1):
        rep = brute_lfc(data, variant, 7, trials, t)
        for i, key in enumerate(keys):
            if rep.get(key) is None:
                assert np.isnan(err.trials[i, t])
            else:
                assert err.trials[i, t] == pytest.approx(np.linalg.norm(rep[key] - targets.values[i]), abs=1e-9)
    assert err.per_pert == pytest.approx(np.nanquantile(err.trials, 0.9, axis=1))
    for ci, ctx in enumerate(("A", "B")):
        rows = [i for i, k in enumerate(keys) if k[0] == ctx]
        assert err.dataset[ctx] == pytest.approx(np.nanquantile(np.nanmean(err.trials[rows], axis=0), 0.9))


def test_pooled_deg_bootstrap_equals_brute_force_with_scipy_and_sklearn(data):
    targets = deg(data, variant="small", min_cells=30)
    err = experimental_error(data, targets, trials=4, seed=3)
    keys = list(zip(data.perturbations["context"].to_numpy()[targets.perts],
                    data.perturbations["label"].to_numpy()[targets.perts]))
    for t in range(4):
        pooled: dict = {}
        for ctx, _, drawn in slots(data, 3, 4, t):
            for lab, x in drawn.items():
                pooled.setdefault((ctx, lab), []).append(x)
        labels = {}
        for i, (ctx, lab) in enumerate(keys):
            if (ctx, lab) not in pooled:
                assert np.isnan(err.trials[i, t])
                continue
            x, c = np.concatenate(pooled[(ctx, lab)]), np.concatenate(pooled[(ctx, "control")])
            with np.errstate(all="ignore"):
                score, p = stats.ttest_ind(x, c, equal_var=False)
            score, p = np.nan_to_num(score), np.nan_to_num(p, nan=1.0)
            labels[i] = (np.sign(score) * (multipletests(p, method="fdr_bh")[1] < 0.05)).astype(int)
            assert err.trials[i, t] == pytest.approx(f1_score(targets.values[i], labels[i], average="macro"))
        ctx_a = [i for i, k in enumerate(keys) if k[0] == "A" and i in labels]
        per_gene = [f1_score(targets.values[ctx_a, g], [labels[i][g] for i in ctx_a], average="macro")
                    for g in range(targets.values.shape[1])]
        assert err.dataset_trials["A"][t] == pytest.approx(np.mean(per_gene))


def test_per_batch_deg_bootstrap_runs_and_replicates_agree_mostly(data):
    targets = deg(data, variant="large", min_cells=30)
    err = experimental_error(data, targets, trials=20, seed=1)
    assert err.metric == "f1" and err.quantile == 0.1
    assert 0.3 < err.dataset["A"] <= 1.0 and np.nanmean(err.trials) > 0.5


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, z = rng.integers(-1, 2, 50), rng.integers(-1, 2, 50)
        z[: rng.integers(0, 50)] = 0
        conf = np.zeros((3, 3), int)
        np.add.at(conf, (y + 1, z + 1), 1)
        assert macro_f1(conf) == pytest.approx(f1_score(y, z, average="macro"))


def test_seeded_and_stable_across_seeds(data):
    targets = lfc(data, variant="large")
    a = experimental_error(data, targets, trials=150, seed=1)
    b = experimental_error(data, targets, trials=150, seed=1)
    c = experimental_error(data, targets, trials=150, seed=2)
    np.testing.assert_array_equal(a.trials, b.trials)
    assert not np.array_equal(a.trials, c.trials)
    for ctx in ("A", "B"):
        assert a.dataset[ctx] == pytest.approx(c.dataset[ctx], rel=0.1)
    np.testing.assert_allclose(a.per_pert, c.per_pert, rtol=0.2)
    more = experimental_error(data, targets, trials=160, seed=1)       # same first trials
    np.testing.assert_array_equal(more.trials[:, :150], a.trials)


def independent_bootstrap(data, targets, trials: int, seed: int) -> np.ndarray:
    """Textbook hierarchical bootstrap with its own random stream, context A, large variant."""
    rng = np.random.default_rng(seed)
    x, cells = dense_normalised(data), data.cells
    cells = cells[cells["context"] == "A"]
    batches = sorted(cells["batch"].unique())
    labels = data.perturbations["label"].to_numpy()[targets.perts]
    keep = data.perturbations["context"].to_numpy()[targets.perts] == "A"
    out = []
    for _ in range(trials):
        diffs: dict = {}
        for b in rng.choice(batches, size=len(batches)):
            in_b = cells[cells["batch"] == b]
            ctrl = in_b.loc[in_b["is_control"], "row"].to_numpy()
            cmean = x[rng.choice(ctrl, ctrl.size)].mean(axis=0)
            for lab in labels[keep]:
                rows = in_b.loc[(in_b["label"] == lab) & ~in_b["is_control"], "row"].to_numpy()
                if rows.size:
                    diffs.setdefault(lab, []).append(x[rng.choice(rows, rows.size)].mean(axis=0) - cmean)
        errs = [np.linalg.norm(np.mean(diffs[lab], axis=0) - targets.values[i])
                for i, lab in zip(np.flatnonzero(keep), labels[keep], strict=True) if lab in diffs]
        out.append(np.mean(errs))
    return np.asarray(out)


def test_quantile_matches_an_independent_bootstrap(data):
    targets = lfc(data, variant="large")
    ours = experimental_error(data, targets, trials=200, seed=4).dataset["A"]
    theirs = np.quantile(independent_bootstrap(data, targets, 200, seed=99), 0.9)
    assert ours == pytest.approx(theirs, rel=0.1)


def test_memory_does_not_grow_with_trials(data):
    targets = lfc(data, variant="large")

    def peak(trials: int) -> int:
        tracemalloc.start()
        experimental_error(data, targets, trials=trials, seed=0)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(CHUNK_TRIALS), peak(8 * CHUNK_TRIALS)
    assert large < 1.3 * small + 8 * targets.perts.size * 8 * CHUNK_TRIALS
