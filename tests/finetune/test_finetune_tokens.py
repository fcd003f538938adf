"""LoRA fine-tuning over token checkpoints (Geneformer, scGPT): tiny random models built here.

The knock-out input and the Indexing states are checked against a brute force written here: each
cell tokenised and passed through the model on its own.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pertstore.consumers.finetune import FinetuneSettings, TokenInputs, cell_model, finetune_predict, lora_model
from pertstore.producers.expression.checkpoints import ScGPTConfig, ScGPTModel, load_adapter
from transformers import BertConfig, BertForMaskedLM

N_GENES = 30
GENES = [f"G{i}" for i in range(N_GENES)]
SILENT = 29
"""A gene no control cell expresses: it has no token anywhere."""


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """log1p counts per 10,000 of 40 cells; each gene is off in some cells, gene 29 in all."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0.5, 20, size=N_GENES), size=(40, N_GENES)).astype(np.float64)
    counts[:, SILENT] = 0
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)


@pytest.fixture(scope="module")
def geneformer(tmp_path_factory) -> Path:
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3} | {g: i + 4 for i, g in enumerate(GENES)}
    medians = {g: float(m) for g, m in zip(GENES, np.random.default_rng(1).uniform(0.5, 5, N_GENES))}
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    out = tmp_path_factory.mktemp("geneformer")
    BertForMaskedLM(config).save_pretrained(out)
    (out / "token_dictionary.pkl").write_bytes(pickle.dumps(tokens))
    (out / "gene_median_dictionary.pkl").write_bytes(pickle.dumps(medians))
    return out


@pytest.fixture(scope="module")
def scgpt(tmp_path_factory) -> Path:
    vocab = {t: i for i, t in enumerate(["<pad>", "<cls>", "<eoc>", *GENES])}
    torch.manual_seed(0)
    config = ScGPTConfig(vocab_size=len(vocab), d_model=16, nhead=2, d_hid=32, nlayers=2, dropout=0.0, n_bins=11)
    out = tmp_path_factory.mktemp("scgpt")
    ScGPTModel(config).save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps(vocab))
    return out


def _echo(**inputs) -> SimpleNamespace:
    """A stand-in model whose "hidden states" are its inputs, to read what the model was given."""
    return SimpleNamespace(last_hidden_state=torch.stack([v.float() for v in inputs.values()], dim=-1))


def test_geneformer_knock_out_deletes_exactly_the_perturbed_token(geneformer, cells):
    adapter = load_adapter("geneformer", str(geneformer), "cpu")
    inputs = TokenInputs(adapter, cells, "cpu", seed=0)
    ids, genes = inputs.profile["input_ids"][0], inputs.profile_genes[0]
    present = [int(g) for g in genes[genes >= 0][[0, 5, -1]]]  # first, middle and last gene tokens
    given, token_genes = inputs.knocked_out(_echo, torch.tensor([*present, SILENT]))
    assert inputs.coverable("isko")[present].all() and not inputs.coverable("isko")[SILENT]
    for row, gene in enumerate(present):
        keep = genes != gene
        assert torch.equal(given[row, :-1, 0].long(), ids[keep])  # the token gone, later ones moved up
        assert given[row, -1, 0] == adapter.pads["input_ids"] and given[row, -1, 1] == 0  # a pad, not attended
        assert torch.equal(token_genes[row, :-1], genes[keep]) and token_genes[row, -1] == -1
    assert torch.equal(given[-1, :, 0].long(), ids) and torch.equal(token_genes[-1], genes)  # no token: unchanged


def test_scgpt_knock_out_sets_the_gene_to_bin_zero(scgpt, cells):
    adapter = load_adapter("scgpt", str(scgpt), "cpu")
    inputs = TokenInputs(adapter, cells, "cpu", seed=0)
    values, genes = inputs.profile["values"][0], inputs.profile_genes[0]
    gene = int(genes[genes >= 0][3])
    given, token_genes = inputs.knocked_out(_echo, torch.tensor([gene]))
    names = list(inputs.profile)
    got = given[0, :, names.index("values")]
    at = genes == gene
    assert got[at].tolist() == [0.0] and torch.equal(got[~at], values[~at])
    assert torch.equal(given[0, :, names.index("input_ids")].long(), inputs.profile["input_ids"][0])
    assert torch.equal(token_genes[0], genes)


def test_indexing_states_equal_each_cell_on_its_own(geneformer, cells):
    adapter = load_adapter("geneformer", str(geneformer), "cpu")
    inputs = TokenInputs(adapter, cells, "cpu", seed=0)
    wanted = torch.tensor([0, 7, SILENT])
    some = torch.arange(0, 40, 3)
    with torch.no_grad():
        total, count = inputs.gene_states(adapter.model, wanted, some)
    expect_total, expect_count = torch.zeros(3, adapter.hidden_size), torch.zeros(3)
    for c in some.tolist():
        one = adapter.encode(sp.csr_matrix(np.expm1(cells[c : c + 1].astype(np.float64))), np.ones(N_GENES, bool),
                             np.random.default_rng(0))  # fmt: skip
        with torch.no_grad():
            hidden = adapter.model(**one.inputs).last_hidden_state[0]
        for i, g in enumerate(wanted.tolist()):
            at = one.genes[0] == g
            expect_total[i] += hidden[at].sum(dim=0)
            expect_count[i] += at.sum()
    assert expect_count[0] > 0 and expect_count[2] == 0 and not inputs.coverable("indexing")[SILENT]
    torch.testing.assert_close(count, expect_count)
    torch.testing.assert_close(total, expect_total, atol=1e-5, rtol=1e-4)


def test_lora_on_bert_wraps_attention_output_and_feed_forward(geneformer):
    settings = FinetuneSettings(adapter="geneformer")
    model = lora_model(str(geneformer), settings)
    named = dict(model.named_parameters())
    lora = {n for n in named if "lora_" in n}
    assert not any(p.requires_grad for n, p in named.items() if n not in lora)
    wrapped = sorted({n.split(".lora_")[0].split("encoder.layer.")[1] for n in lora})
    assert wrapped == [f"{i}.{m}" for i in range(2) for m in ("attention.output.dense", "intermediate.dense",
                                                              "output.dense")]  # fmt: skip


@pytest.mark.parametrize("adapter", ["scgpt", "geneformer"])
def test_token_models_fine_tune_on_a_learnable_signal(adapter, scgpt, geneformer, cells):
    """Knocking a gene out lowers that gene by 2 and its neighbour by 1 (plus noise)."""
    path = {"scgpt": scgpt, "geneformer": geneformer}[adapter]
    rng = np.random.default_rng(1)
    y = (
        np.diag(np.full(N_GENES, -2.0))
        + np.diag(np.full(N_GENES - 1, -1.0), 1)
        + 0.05 * rng.normal(size=(N_GENES,) * 2)
    )
    covered = np.arange(N_GENES) != SILENT
    test = (np.arange(N_GENES) % 5 == 0) & covered
    train = ~test & covered
    settings = FinetuneSettings(mode="isko", adapter=adapter, epochs=40, learning_rates=(1e-2,), seed=0)
    model = cell_model(str(path), cells, settings)
    pred, chosen = finetune_predict(model, np.flatnonzero(train), y[train], np.flatnonzero(test), settings)
    assert pred.shape == (test.sum(), N_GENES) and chosen["lr"] == 1e-2
    own = pred[np.arange(test.sum()), np.flatnonzero(test)]
    if adapter == "geneformer":  # the deleted gene has no token: no value for it, every other gene one
        assert np.isnan(own).all() and np.isfinite(np.delete(pred, np.flatnonzero(test), axis=1)[:, :-1]).all()
    else:
        assert np.isfinite(pred[:, covered]).all()
    mean = y[train].mean(axis=0)
    scored = np.isfinite(pred)
    fine = np.mean((pred - y[test])[scored] ** 2)
    baseline = np.mean((mean - y[test])[scored] ** 2)
    print(f"{adapter} ISKO MSE {fine:.4f} vs train mean {baseline:.4f}")
    # scGPT sees the knocked-out gene's own token at bin 0; Geneformer only the others' changed context
    assert fine < {"scgpt": 0.5, "geneformer": 0.95}[adapter] * baseline, (fine, baseline)
