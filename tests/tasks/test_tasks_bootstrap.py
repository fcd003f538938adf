"""The experimental error against the reference scripts, re-implemented here as they are written.

``run_exp_error_essential.py`` (small batches: the perturbation's batches, then cells, batch means
averaged; controls bootstrapped once and subtracted trial by trial) and
``run_exp_error_plate_matched.py`` (large batches: plates drawn, then each plate's cells and its
controls with one generator) use dense ``X[idx].mean(axis=1)`` on the normalised cells and numpy's
``SeedSequence`` tree from seed 5050; pertstore must give the same numbers.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score, precision_score, recall_score
from task_helpers import synthetic

from pertstore.consumers.tasks import build_task, experimental_error, lfc, read_perturbation_data
from pertstore.consumers.tasks._bootstrap import truth_present_scores

OUTER, INNER, SEED = 4, 5, 5050


@pytest.fixture
def data():
    cells = {(ctx, b, lab): n for ctx in ("A", "B") for b in ("b1", "b2", "b3")
             for lab, n in (("control", 25), ("P1", 9), ("P2", 6), ("P3", 12))}
    cells[("A", "b3", "P2")] = 0      # P2 misses a batch in context A
    return read_perturbation_data(synthetic(cells={k: v for k, v in cells.items() if v}, n_genes=20))


def _normalised(data) -> np.ndarray:
    return data.matrix.take(np.arange(data.matrix.shape[0])).toarray()


def _boot(x: np.ndarray, n_trials: int, rng) -> np.ndarray:
    """utils.bootstrap_csr_mean, as written."""
    idx = rng.integers(x.shape[0], size=(n_trials, x.shape[0]))
    return x[idx].mean(axis=1)


def _two_stage(groups: dict[str, np.ndarray], seq) -> np.ndarray:
    """run_exp_error_essential.two_stage_bootstrap_global, as written."""
    ids = sorted(groups)
    out = []
    for s_outer in seq.spawn(OUTER):
        drawn = np.random.default_rng(s_outer).choice(ids, size=len(ids), replace=True) if len(ids) > 1 else ids
        res = [_boot(groups[b], INNER, np.random.default_rng(s)) for b, s in zip(drawn, s_outer.spawn(len(drawn)))]
        out.append(np.array(res).mean(axis=0))
    return np.array(out)


def _plate_matched(pert: dict, ctrl: dict, plates: list[str], seq) -> np.ndarray:
    """run_exp_error_plate_matched.bootstrap, as written."""
    out = []
    for s_outer in seq.spawn(OUTER):
        drawn = np.random.default_rng(s_outer).choice(plates, size=len(plates))
        res = []
        for plate, s in zip(drawn, s_outer.spawn(len(drawn))):
            rng = np.random.default_rng(s)
            res.append(_boot(pert[plate], INNER, rng) - _boot(ctrl[plate], INNER, rng))
        out.append(np.stack(res).mean(axis=0))
    return np.stack(out)


def _limits(delta: np.ndarray, point: np.ndarray) -> list[float]:
    """run_pert's metrics, then the limit quantiles (0.9 of errors, 0.1 of correlations)."""
    d = delta.reshape(-1, delta.shape[-1])
    l2 = np.linalg.norm(d - point, axis=1)
    mse, mae = ((d - point) ** 2).mean(axis=1), np.abs(d - point).mean(axis=1)
    spearman = [stats.spearmanr(r, point)[0] for r in d]
    pearson = [stats.pearsonr(r, point)[0] for r in d]
    return [np.quantile(l2, 0.9), np.quantile(mse, 0.9), np.quantile(mae, 0.9), np.quantile(pearson, 0.1),
            np.quantile(spearman, 0.1)]


@pytest.mark.parametrize("variant", ["small", "large"])
def test_lfc_error_equals_the_reference_scripts(data, variant):
    targets = lfc(data, variant=variant)
    got = experimental_error(data, targets, outer=OUTER, inner=INNER, seed=SEED)
    x, cells = _normalised(data), data.cells
    perts = data.perturbations.iloc[targets.perts].reset_index(drop=True)
    for ctx in ("A", "B"):
        seq = np.random.SeedSequence(SEED)
        here = cells[cells.context == ctx]
        ctrl = {str(b): x[g.row.to_numpy()] for b, g in here[here.is_control].groupby("batch", observed=True)}
        ctrl_boot = _two_stage(ctrl, seq.spawn(1)[0]) if variant == "small" else None
        rows = perts.index[perts.context == ctx].to_numpy()
        rows = rows[np.argsort(perts.label[rows].to_numpy())]
        for r, child in zip(rows, seq.spawn(len(rows))):
            mine = here[here.label == perts.label[r]]
            own = {str(b): x[g.row.to_numpy()] for b, g in mine.groupby("batch", observed=True)}
            if variant == "small":
                delta = _two_stage(own, child) - ctrl_boot
            else:
                plates = list(pd.unique(mine.sort_values("row").batch.astype(str)))
                delta = _plate_matched(own, ctrl, plates, child)
            np.testing.assert_allclose(got.per_pert[r], _limits(delta, targets.values[r]), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got.trials[r], np.linalg.norm(delta.reshape(-1, delta.shape[-1])
                                                                    - targets.values[r], axis=1), rtol=1e-9)


def test_fold_limits_are_means_of_the_fold_perturbations_per_metric(data):
    task = build_task(data, kind="lfc", variant="small", trials=OUTER * INNER, inner_trials=INNER)
    limits = task.error.fold_limits(task.folds, task.contexts)
    assert set(limits.metric) == {"l2", "mse", "mae", "pearson", "spearman"}
    frame = pd.DataFrame(task.error.per_pert, columns=task.error.metrics).assign(context=task.contexts,
                                                                                 fold=task.folds)
    for r in limits.itertuples():
        rows = frame[(frame.context == r.context) & (frame.fold == r.fold)]
        assert r.value == pytest.approx(rows[r.metric].mean())
    assert task.error.params["seed"] == 5050 and task.error.params["outer"] == OUTER


def test_deg_scores_average_over_the_classes_present_in_the_truth():
    rng = np.random.default_rng(4)
    truth = rng.choice([-1, 0, 1], size=(30, 12), p=[0.1, 0.8, 0.1])
    truth[:, 0] = 0                                   # a gene whose truth holds one class only
    pred = np.where(rng.random((30, 12)) < 0.7, truth, rng.choice([-1, 0, 1], size=(30, 12)))
    conf = np.zeros((1, 12, 3, 3), dtype=np.int64)
    for g in range(12):
        np.add.at(conf[0, g], (truth[:, g] + 1, pred[:, g] + 1), 1)
    got = truth_present_scores(conf)
    for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        expected = np.mean([fn(truth[:, g], pred[:, g], labels=np.unique(truth[:, g]), average="macro",
                               zero_division=0) for g in range(12)])
        assert got[name][0] == pytest.approx(expected)


def test_deg_error_is_drawn_per_fold(data):
    task = build_task(data, kind="deg", variant="small", min_cells=5, trials=40, inner_trials=10)
    table = task.error.fold_trials
    assert set(table.metric) == {"f1", "precision", "recall"}
    assert table.groupby(["context", "fold", "metric"]).trial.nunique().eq(40).all()
    limits = task.error.fold_limits(task.folds, task.contexts)
    for r in limits.itertuples():
        values = table[(table.context == r.context) & (table.fold == r.fold) & (table.metric == r.metric)].value
        assert r.value == pytest.approx(np.quantile(values, 0.1))


def test_memory_does_not_grow_with_trials():
    data = read_perturbation_data(synthetic(n_genes=400, cells={("A", b, lab): n for b in ("b1", "b2")
                                                              for lab, n in (("control", 400), ("P1", 300))}))
    targets = lfc(data, variant="small")

    def peak(outer: int) -> int:
        tracemalloc.start()
        experimental_error(data, targets, outer=outer, inner=20, seed=1)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(2), peak(20)
    # [trials, cells, genes] would be 400 trials x 300 cells x 400 genes x 8 bytes = 384 MB
    assert large < 60e6 and large < 4 * small + 20e6
