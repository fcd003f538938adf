"""The fusion model against the reference's definitions (benchmark/fusion/) on small synthetic data.

Synthetic data (said so): y = A @ Wa + B @ Wb + noise, with source B missing for 30% of the
perturbations. Numbers the reference defines (gated attention, losses, class weights, validation
split) are checked against independent NumPy / scikit-learn computations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.consumers.fusion import (
    EncoderLayer,
    FusionConfig,
    FusionInputs,
    FusionPredictor,
    class_weights,
    deg_loss,
    lfc_loss,
    tune,
    validation_split,
)
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

from pertstore.errors import InvalidInputError

N, GENES, DA, DB = 300, 30, 12, 10
CONTEXTS = ["K562", "RPE1"]
FAST = {
    "d_model": 20,
    "n_heads": 5,
    "depth": 1,
    "lr": 1e-2,
    "max_epochs": 40,
    "patience": 8,
    "warmup_epochs": 1,
    "input_dropout": 0.0,
}


def _synthetic(seed: int = 0, n: int = N):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, DA)).astype(np.float32)
    b = rng.normal(size=(n, DB)).astype(np.float32)
    y = a @ rng.normal(size=(DA, GENES)) + b @ rng.normal(size=(DB, GENES)) + 0.1 * rng.normal(size=(n, GENES))
    present = np.ones((n, 2), dtype=bool)
    present[rng.random(n) < 0.3, 1] = False
    context = rng.integers(0, 2, n)
    return a, b, y.astype(np.float32), present, context


def _inputs(a, b, present, context, which=("A", "B"), features=None) -> FusionInputs:
    values, cols = {"A": a, "B": b}, {"A": 0, "B": 1}
    return FusionInputs(
        list(which), [values[s] for s in which], present[:, [cols[s] for s in which]], context, CONTEXTS, features
    )


def _l2(pred, y):
    return float(np.linalg.norm(pred - y, axis=1).mean())


def test_fusion_beats_each_single_source_with_missing_values():
    a, b, y, present, context = _synthetic()
    train, test = np.arange(240), np.arange(240, N)
    both = _inputs(a, b, present, context)
    fused = FusionPredictor(FusionConfig(**FAST)).fit(both.subset(train), y[train])
    only_a = _inputs(a, b, present, context, ("A",))
    a_model = FusionPredictor(FusionConfig(**FAST)).fit(only_a.subset(train), y[train])
    assert _l2(fused.predict(both.subset(test)), y[test]) < 0.9 * _l2(a_model.predict(only_a.subset(test)), y[test])


def _numpy_gated_layer(layer: EncoderLayer, x: np.ndarray, pad: np.ndarray, heads: int) -> np.ndarray:
    """encoder_layer.py's forward written out in NumPy: gated multi-head attention, post-LN, FFN 2d GELU."""
    from scipy.special import erf

    w = {k: v.detach().double().numpy() for k, v in layer.state_dict().items()}

    def lin(name, h):
        return h @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def ln(name, h):
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + 1e-5) * w[f"{name}.weight"] + w[f"{name}.bias"]

    b, n, d = x.shape
    hd = d // heads
    q, k, v = (lin(p, x).reshape(b, n, heads, hd).transpose(0, 2, 1, 3) for p in ("q_proj", "k_proj", "v_proj"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + np.where(pad, -np.inf, 0.0)[:, None, None, :]
    att = np.exp(scores - scores.max(-1, keepdims=True))
    att = (att / att.sum(-1, keepdims=True)) @ v
    att = att.transpose(0, 2, 1, 3).reshape(b, n, d)
    gate = 1 / (1 + np.exp(-lin("gate_linear", x)))  # Y' = Y * sigmoid(XW)
    x = ln("ln_attn", x + lin("out_proj", att * gate))
    hidden = lin("ffn.0", x)
    hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
    return ln("ln_ffn", x + lin("ffn.3", hidden))


def test_gated_attention_block_equals_the_reference_computation():
    torch.manual_seed(0)
    layer = EncoderLayer(20, 4, 0.0, gated=True, gelu=True, xavier=True).double().eval()
    with torch.no_grad():  # non-zero biases, so every term is exercised
        for p in layer.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.3)
    x = np.random.default_rng(1).normal(size=(3, 5, 20))
    pad = np.zeros((3, 5), dtype=bool)
    pad[0, 3:] = pad[2, 1] = True
    got = layer(torch.from_numpy(x), torch.from_numpy(pad)).detach().numpy()
    np.testing.assert_allclose(got, _numpy_gated_layer(layer, x, pad, 4), rtol=1e-10, atol=1e-10)
    assert layer.ffn[0].out_features == 40 and isinstance(layer.ffn[1], torch.nn.GELU)  # FFN 2d, GELU
    # a masked key changes nothing for the other positions
    x2 = x.copy()
    x2[0, 3:] = 1e3
    got2 = layer(torch.from_numpy(x2), torch.from_numpy(pad)).detach().numpy()
    np.testing.assert_allclose(got2[0, :3], got[0, :3], rtol=1e-10, atol=1e-10)


def test_losses_equal_the_reference_definitions():
    rng = np.random.default_rng(2)
    pred, y = rng.normal(size=(7, 11)), rng.normal(size=(7, 11))
    assert float(lfc_loss(torch.from_numpy(pred), torch.from_numpy(y))) == pytest.approx(
        np.mean([np.sqrt(((p - t) ** 2).sum()) for p, t in zip(pred, y)]), rel=1e-12
    )
    labels = rng.choice(3, size=(40, 5), p=[0.1, 0.8, 0.1])
    labels[:, 4] = 1  # a gene whose training labels are all "no change": weights 0, 1/3, 0
    weights = class_weights(labels)
    for g in range(5):
        counts = np.bincount(labels[:, g], minlength=3)
        expected = np.where(counts > 0, 40 / (3 * np.maximum(counts, 1)), 0.0)
        np.testing.assert_allclose(weights[g].numpy(), expected, rtol=1e-6)
    logits = rng.normal(size=(40, 5, 3))
    got = float(deg_loss(torch.from_numpy(logits), torch.from_numpy(labels), weights.double()))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    per_gene = [
        log_loss(labels[:, g], probs[:, g], sample_weight=weights[g].numpy()[labels[:, g]], labels=[0, 1, 2])
        for g in range(5)
    ]
    assert got == pytest.approx(np.mean(per_gene), rel=1e-9)


def test_validation_split_holds_out_genes():
    rng = np.random.default_rng(3)
    genes = np.array([f"ENSG{i:05d}" for i in rng.integers(0, 60, 200)], dtype=object)  # genes repeat over contexts
    train, val = validation_split(genes, 0.2, 42)
    assert not set(genes[train]) & set(genes[val])
    assert len(train) + len(val) == len(genes)
    unique = pd.unique(genes)
    _, held = train_test_split(unique, test_size=0.2, random_state=42, shuffle=True)
    assert set(genes[val]) == set(held) and len(set(held)) == int(np.ceil(0.2 * len(unique)))


def test_absent_sources_are_masked_not_read():
    a, b, y, present, context = _synthetic(1, 200)
    x = _inputs(a, b, present, context)
    cfg = FusionConfig(**{**FAST, "max_epochs": 3}, input_norm="zscore", reconstruction_weight=1.0)
    model = FusionPredictor(cfg).fit(x, y)
    garbage = b.copy()
    garbage[~present[:, 1]] = np.nan  # neither NaN nor huge values in absent rows reach the output
    np.testing.assert_array_equal(model.predict(x), model.predict(_inputs(a, garbage, present, context)))
    train, _ = validation_split(np.arange(200), 0.2, 42)
    rows = train[present[train, 1]]  # z-score statistics from the training rows that have the source
    np.testing.assert_allclose(model.model.std_1.numpy(), b[rows].std(axis=0, ddof=1), rtol=1e-4)
    refit = FusionPredictor(cfg).fit(_inputs(a, garbage, present, context), y)  # training never reads them either
    np.testing.assert_array_equal(refit.predict(x), model.predict(x))
    with pytest.raises(InvalidInputError, match="no embedding from any source"):
        FusionInputs(["A"], [a], np.zeros((200, 1), dtype=bool), context, CONTEXTS)


def test_fixed_seed_reproduces_a_run_bit_for_bit(tmp_path):
    a, b, y, present, context = _synthetic(2, 200)
    x = _inputs(a, b, present, context)
    cfg = FusionConfig.full(**{**FAST, "max_epochs": 4, "modality_dropout": 0.2, "dropout": 0.1})
    first, second = FusionPredictor(cfg).fit(x, y), FusionPredictor(cfg).fit(x, y)
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    np.testing.assert_array_equal(first.predict(x), second.predict(x))
    first.save(tmp_path / "m")
    again = FusionPredictor.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(x), first.predict(x))
    other = FusionPredictor(cfg.model_copy(update={"seed": 5})).fit(x, y)
    assert not np.array_equal(other.predict(x), first.predict(x))


def test_warmup_and_clipping_follow_the_trainer_config(monkeypatch):
    a, b, y, present, context = _synthetic(3, 200)
    x = _inputs(a, b, present, context)
    rates, norms = [], []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        norms.append(
            float(
                torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in self.param_groups[0]["params"] if p.grad is not None])
                )
            )
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    cfg = FusionConfig(**{**FAST, "max_epochs": 4, "patience": 10, "warmup_epochs": 2, "batch_size": 64, "lr": 1e-2})
    FusionPredictor(cfg).fit(x, y * 100)  # large targets: large gradients, clipped to norm 1
    per_epoch = 3  # 160 training rows / 64
    expected = [1e-2 * (1e-8 + (1 - 1e-8) * min(k, 2 * per_epoch) / (2 * per_epoch)) for k in range(len(rates))]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert max(norms) <= 1.0 + 1e-4


@pytest.mark.parametrize("variant", ["token", "full", "full-autoencoder", "final-cls"])
def test_variants_train_and_predict_shapes(variant):
    a, b, y, present, context = _synthetic(4, 200)
    features = None
    small = {**FAST, "max_epochs": 3}
    if variant == "token":
        cfg = FusionConfig(**small, context_injection="token")
    elif variant == "final-cls":
        cfg = FusionConfig(**small, final_layer_cls=True)
    elif variant == "full":
        cfg = FusionConfig.full(**small)
    else:
        features = np.abs(np.random.default_rng(0).normal(size=(2, 50))).astype(np.float32)
        cfg = FusionConfig.full(**small, cell_line="autoencoder", autoencoder_hidden=[32, 16])
    model = FusionPredictor(cfg).fit(_inputs(a, b, present, context, features=features), y)
    assert model.predict(_inputs(a, b, present, context, features=features)).shape == (200, GENES)
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]
    if variant == "full-autoencoder":
        assert model.history[0]["train_total_loss"] > model.history[0]["train_loss"]  # reconstruction + autoencoder


def test_presets_carry_the_reference_tuned_values():
    lfc, deg, full = FusionConfig.simple("lfc"), FusionConfig.simple("deg"), FusionConfig.full()
    assert (lfc.depth, lfc.lr, lfc.max_epochs, lfc.dropout, lfc.batch_size) == (4, 0.0009931092550184934, 75, 0.0, 64)
    assert (deg.depth, deg.lr, deg.max_epochs, deg.patience) == (7, 4.586815929703627e-05, 200, 25)
    assert (full.gated, full.context_injection, full.reconstruction_weight, full.head_layers) == (
        True,
        "late",
        9.411605826543548,
        2,
    )


def test_deg_variant_predicts_labels():
    a, b, y, present, context = _synthetic(5)
    labels = np.sign(np.round(y / 3)).astype(np.int8)
    x = _inputs(a, b, present, context)
    cfg = FusionConfig.simple("deg", **{**FAST, "max_epochs": 15, "lr": 3e-3})
    model = FusionPredictor(cfg).fit(x.subset(np.arange(240)), labels[:240])
    pred = model.predict(x.subset(np.arange(240, N)))
    assert set(np.unique(pred)) <= {-1, 0, 1}
    assert (
        np.mean(pred[labels[240:] != 0] == labels[240:][labels[240:] != 0]) > 0.4
    )  # class-weighted: changes found (always "no change" scores 0)


def test_optuna_study_is_stored_and_resumed(tmp_path):
    a, b, y, present, context = _synthetic(6, 150)
    x = _inputs(a, b, present, context)
    base = FusionConfig(**{**FAST, "max_epochs": 2})
    db = tmp_path / "study.db"
    best = tune(x, y, base=base, n_trials=2, storage=db)
    assert 1 <= best["depth"] <= 8 and 1e-5 <= best["lr"] <= 1e-2 and best["context_injection"] in ("add", "token")
    import optuna

    assert len(optuna.load_study(study_name="fusion", storage=f"sqlite:///{db}").trials) == 2
    tune(x, y, base=base, n_trials=3, storage=db)
    assert len(optuna.load_study(study_name="fusion", storage=f"sqlite:///{db}").trials) == 3


def test_control_means_table_gives_the_context_features(tmp_path):
    from pertstore.consumers.fusion import control_features_from_table

    table = pd.DataFrame({"context": ["RPE1", "K562"], "g2": [5.0, 6.0], "g1": [1.0, 2.0], "other": [0.0, 0.0]})
    table.to_csv(tmp_path / "means.tsv", sep="\t", index=False)
    got = control_features_from_table(tmp_path / "means.tsv", ["g1", "g2", "g3"], CONTEXTS)
    np.testing.assert_array_equal(got, [[2.0, 6.0], [1.0, 5.0]])  # contexts in the model's order, task genes
    with pytest.raises(InvalidInputError, match="no row for context"):
        control_features_from_table(tmp_path / "means.tsv", ["g1"], ["HepG2"])
    with pytest.raises(InvalidInputError, match="cell-line autoencoder needs control features"):
        a, b, y, present, context = _synthetic(7, 50)
        FusionPredictor(FusionConfig(**FAST, cell_line="autoencoder")).fit(_inputs(a, b, present, context), y)
