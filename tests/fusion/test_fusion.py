"""The fusion model on a synthetic task whose response is a known function of two sources.

Synthetic data (said so): y = A @ Wa + B @ Wb + noise, with source B missing for 30% of the
perturbations. Fusion must beat each source alone and must not read the values of absent sources.
"""

from __future__ import annotations

import numpy as np
import pytest

from pertstore.consumers.fusion import FusionConfig, FusionInputs, FusionPredictor, tune
from pertstore.errors import InvalidInputError

N, GENES, DA, DB = 500, 40, 12, 10


def _synthetic(seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N, DA)).astype(np.float32)
    b = rng.normal(size=(N, DB)).astype(np.float32)
    y = a @ rng.normal(size=(DA, GENES)) + b @ rng.normal(size=(DB, GENES)) + 0.1 * rng.normal(size=(N, GENES))
    present = np.ones((N, 2), dtype=bool)
    present[rng.random(N) < 0.3, 1] = False
    context = rng.integers(0, 2, N)
    return a, b, y.astype(np.float32), present, context


def _inputs(a, b, present, context, which=("A", "B")) -> FusionInputs:
    values = {"A": a, "B": b}
    cols = {"A": 0, "B": 1}
    return FusionInputs(list(which), [values[s] for s in which], present[:, [cols[s] for s in which]],
                        context, ["K562", "RPE1"])


FAST = dict(d_model=20, n_heads=5, depth=1, lr=3e-3, max_epochs=60, patience=8, dropout=0.0)


def _mse(pred, y):
    return float(((pred - y) ** 2).mean())


def test_fusion_beats_each_single_source_with_missing_values():
    a, b, y, present, context = _synthetic()
    is_test = np.arange(N) >= 400
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    both = _inputs(a, b, present, context)
    fused = FusionPredictor(FusionConfig(**FAST)).fit(both.subset(train), y[train])
    only_a = _inputs(a, b, present, context, ("A",))
    a_model = FusionPredictor(FusionConfig(**FAST)).fit(only_a.subset(train), y[train])
    assert _mse(fused.predict(both.subset(test)), y[test]) < 0.8 * _mse(a_model.predict(only_a.subset(test)), y[test])
    # B alone only serves the perturbations that have B: compare on those
    has_b = present[:, 1]
    only_b = FusionInputs(["B"], [b[has_b]], present[has_b][:, [1]], context[has_b], ["K562", "RPE1"])
    b_train, b_test = np.flatnonzero(~is_test[has_b]), np.flatnonzero(is_test[has_b])
    b_model = FusionPredictor(FusionConfig(**FAST)).fit(only_b.subset(b_train), y[has_b][b_train])
    rows = np.flatnonzero(has_b & is_test)
    b_mse = _mse(b_model.predict(only_b.subset(b_test)), y[has_b][b_test])
    assert _mse(fused.predict(both.subset(rows)), y[rows]) < 0.8 * b_mse


def test_absent_sources_are_masked_not_read():
    a, b, y, present, context = _synthetic(1)
    x = _inputs(a, b, present, context)
    model = FusionPredictor(FusionConfig(**FAST, seed=3)).fit(x, y)
    scrambled_b = b.copy()
    scrambled_b[~present[:, 1]] = 1e3  # garbage where B is absent
    p1 = model.predict(x)
    p2 = model.predict(_inputs(a, scrambled_b, present, context))
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInputError, match="no embedding from any source"):
        FusionInputs(["A"], [a], np.zeros((N, 1), dtype=bool), context, ["K562", "RPE1"])


def test_deterministic_under_seed_and_save_load(tmp_path):
    a, b, y, present, context = _synthetic(2)
    x = _inputs(a, b, present, context)
    cfg = FusionConfig(**{**FAST, "max_epochs": 5}, seed=11)
    p1 = FusionPredictor(cfg).fit(x, y).predict(x)
    model = FusionPredictor(cfg).fit(x, y)
    np.testing.assert_array_equal(p1, model.predict(x))
    model.save(tmp_path / "m")
    again = FusionPredictor.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(x), p1)
    assert again.meta["sources"] == ["A", "B"] and len(again.history) == len(model.history)


@pytest.mark.parametrize("variant", ["token", "full"])
def test_variants_train_and_predict_shapes(variant):
    a, b, y, present, context = _synthetic(3)
    x = _inputs(a, b, present, context)
    cfg = (FusionConfig.full(**{**FAST, "max_epochs": 3}) if variant == "full"
           else FusionConfig(**{**FAST, "max_epochs": 3}, context_injection="token"))
    model = FusionPredictor(cfg).fit(x, y)
    assert model.predict(x).shape == (N, GENES)
    assert model.history[0]["train_loss"] > model.history[-1]["train_loss"] * 0.5


def test_deg_variant_predicts_labels():
    a, b, y, present, context = _synthetic(4)
    labels = np.sign(np.round(y / 3)).astype(np.int8)
    x = _inputs(a, b, present, context)
    model = FusionPredictor(FusionConfig(**{**FAST, "max_epochs": 15}, task="deg")).fit(x.subset(np.arange(400)), labels[:400])
    pred = model.predict(x.subset(np.arange(400, N)))
    assert set(np.unique(pred)) <= {-1, 0, 1}
    prior = np.mean(labels[400:] == 0)  # always predicting "no change"
    assert np.mean(pred == labels[400:]) > prior + 0.05


def test_optuna_study_is_stored_and_resumed(tmp_path):
    a, b, y, present, context = _synthetic(5)
    x = _inputs(a, b, present, context).subset(np.arange(200))
    base = FusionConfig(**{**FAST, "max_epochs": 2})
    db = tmp_path / "study.db"
    best = tune(x, y[:200], base=base, n_trials=2, storage=db)
    assert 1 <= best["depth"] <= 8 and 1e-5 <= best["lr"] <= 1e-3
    import optuna

    assert len(optuna.load_study(study_name="fusion", storage=f"sqlite:///{db}").trials) == 2
    tune(x, y[:200], base=base, n_trials=3, storage=db)
    assert len(optuna.load_study(study_name="fusion", storage=f"sqlite:///{db}").trials) == 3
