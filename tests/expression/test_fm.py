"""Single-cell foundation-model producers (scfm, scfm-positional) on tiny random models built here.

The cells are real: control cells of the Papalexi 2021 THP-1 screen. Each adapter's streamed,
batched result is checked against a brute force written independently here: every cell encoded
on its own from the published rules, passed through the model alone, and every gene's states
averaged in Python.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pertstore.producers.expression._fm_adapters import scgpt_bins
from pertstore.producers.expression._fm_models import (
    DenseCellConfig,
    DenseCellModel,
    ScGPTConfig,
    ScGPTModel,
    convert_scgpt_checkpoint,
)
from transformers import BertConfig, BertForMaskedLM

from pertstore.errors import InvalidInputError, PertstoreError

SCFM = "pertstore.producers.expression.fm:FMGeneProducer"
POSITIONAL = "pertstore.producers.expression.fm:FMPositionalProducer"
SPECIALS = ["<pad>", "<cls>", "<eoc>"]


@pytest.fixture(scope="module")
def controls(data_dir, tmp_path_factory):
    """The first 60 THP-1 control cells (real counts) as a small h5ad, and their counts in memory.

    Genes: those whose symbol is the current official one (each resolves to exactly one gene).
    """
    full = ad.read_h5ad(data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad")
    official = (full.var["ensembl_id_source"] == "symbol").to_numpy()
    small = full[np.flatnonzero(full.obs["is_control"].astype(bool))[:60]][:, official].copy()
    path = tmp_path_factory.mktemp("cells") / "controls.h5ad"
    small.write_h5ad(path)
    return path, small


def _model_genes(small) -> list[str]:
    """Model vocabulary: most of the file's genes (the last 20 left out) plus two the file lacks."""
    return list(small.var_names[:-20]) + ["TP53", "BRCA1"]


def _cp10k(small) -> np.ndarray:
    x = np.asarray(small.X.todense(), dtype=np.float64)
    return x / x.sum(1, keepdims=True) * 1e4


@pytest.fixture(scope="module")
def scgpt_dir(controls, tmp_path_factory):
    genes = _model_genes(controls[1])
    vocab = {t: i for i, t in enumerate(SPECIALS + genes)}
    torch.manual_seed(0)
    model = ScGPTModel(
        ScGPTConfig(
            vocab_size=len(vocab),
            d_model=16,
            nhead=2,
            d_hid=32,
            nlayers=2,
            dropout=0.0,
            pad_token_id=0,
            max_seq_len=400,
        )
    )
    out = tmp_path_factory.mktemp("scgpt")
    model.save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps(vocab))
    return out


@pytest.fixture(scope="module")
def geneformer_dir(controls, tmp_path_factory):
    small = controls[1]
    genes = [e for e in small.var.loc[_model_genes(small)[:-2], "ensembl_id"] if e.startswith("ENSG") and ";" not in e]
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3} | {g: i + 4 for i, g in enumerate(genes)}
    rng = np.random.default_rng(0)
    medians = {g: float(rng.uniform(0.5, 5)) for g in genes}
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    out = tmp_path_factory.mktemp("geneformer")
    BertForMaskedLM(config).save_pretrained(out)
    (out / "token_dictionary_test.pkl").write_bytes(pickle.dumps(tokens))
    (out / "gene_median_dictionary_test.pkl").write_bytes(pickle.dumps(medians))
    return out, tokens, medians


@pytest.fixture(scope="module")
def dense_dir(controls, tmp_path_factory):
    torch.manual_seed(0)
    model = DenseCellModel(
        DenseCellConfig(gene_names=_model_genes(controls[1]), d_model=16, nhead=2, d_hid=32, nlayers=2)
    )
    out = tmp_path_factory.mktemp("dense")
    model.save_pretrained(out)
    return out


def _produce(store, path, params, source="fm"):
    return store.produce(
        SCFM, source=source, params=params, inputs={"cells": str(path)}, context="THP-1", max_failed_fraction=0.5
    )


def _got(store, source, symbols):
    return store.get(source, symbols, context="THP-1").values


def _compare(store, source, expected: dict[str, np.ndarray]):
    symbols = list(expected)
    got = _got(store, source, symbols)
    want = np.stack([expected[s] for s in symbols])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_geneformer_equals_per_cell_brute_force(store, controls, geneformer_dir):
    path, small = controls
    out, tokens, medians = geneformer_dir
    card = _produce(
        store,
        path,
        {
            "adapter": "geneformer",
            "model_path": str(out),
            "min_cells": 10,
            "batch_cells": 16,
            "gene_column": "ensembl_id",
        },
    )
    model = BertForMaskedLM.from_pretrained(out).bert.eval()
    ens = small.var["ensembl_id"].to_numpy()
    states = defaultdict(list)
    for cell in _cp10k(small):
        ranked = sorted(
            ((cell[j] / medians[e], -j, e) for j, e in enumerate(ens) if e in medians and cell[j] > 0), reverse=True
        )[:62]  # 64 positions minus <cls> and <eos>
        ids = [2] + [tokens[e] for _, _, e in ranked] + [3]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-2][0]
        for k, (_, _, e) in enumerate(ranked, start=1):
            states[e].append(hidden[k].numpy())
    expected = {e: np.mean(v, axis=0) for e, v in states.items()}
    _compare(store, "fm", expected)
    assert card.n_rows == len(expected) and card.dim == 16
    assert sum("not in the model's vocabulary" in r for r in card.failed.values()) == 20  # the 20 left out


def test_scgpt_bins_follow_scgpt_binning():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.1, 5, 200)  # no ties: bins are np.digitize over the quantile edges
    edges = np.quantile(values, np.linspace(0, 1, 50))
    assert np.array_equal(scgpt_bins(values, 51, np.random.default_rng(0)), np.digitize(values, edges))
    tied = np.array([1.0, 1.0, 1.0, 2.0, 3.0, 3.0])  # ties land on either side of the tied edge
    bins = scgpt_bins(tied, 5, np.random.default_rng(0))
    edges = np.quantile(tied, np.linspace(0, 1, 4))
    lo, hi = np.digitize(tied, edges, right=True), np.digitize(tied, edges)
    assert np.all((bins >= lo) & (bins <= hi)) and bins.min() >= 0 and bins.max() <= 4


def test_scgpt_streaming_equals_per_cell_brute_force(store, controls, scgpt_dir):
    path, small = controls
    _produce(
        store, path, {"adapter": "scgpt", "model_path": str(scgpt_dir), "min_cells": 10, "batch_cells": 7, "seed": 3}
    )
    vocab = json.loads((scgpt_dir / "vocab.json").read_text())
    model = ScGPTModel.from_pretrained(scgpt_dir).eval()
    rng = np.random.default_rng(3)
    symbols = np.array(small.var_names)
    in_vocab = np.array([s in vocab for s in symbols])
    states = defaultdict(list)
    for cell in _cp10k(small):
        expressed = np.flatnonzero(in_vocab & (cell > 0))  # genes in file order, as the stream sees them
        bins = scgpt_bins(np.log1p(cell[expressed]), 51, rng)  # <= 399 genes: no sampling
        ids = [vocab["<cls>"]] + [vocab[s] for s in symbols[expressed]]
        with torch.no_grad():
            hidden = model(
                input_ids=torch.tensor([ids]), values=torch.tensor([[-2.0] + list(bins)]), output_hidden_states=True
            ).hidden_states[-1][0]
        for k, s in enumerate(symbols[expressed], start=1):
            states[s].append(hidden[k].numpy())
    _compare(store, "fm", {s: np.mean(v, axis=0) for s, v in states.items()})


def test_dense_is_the_mean_over_all_cells(store, controls, dense_dir):
    path, small = controls
    card = _produce(store, path, {"adapter": "dense", "model_path": str(dense_dir), "min_cells": 10})
    model = DenseCellModel.from_pretrained(dense_dir).eval()
    genes = model.config.gene_names
    col = {s: j for j, s in enumerate(small.var_names)}
    cp10k = _cp10k(small)
    values = np.zeros((len(cp10k), len(genes)), dtype=np.float32)
    for g, s in enumerate(genes):
        if s in col:
            values[:, g] = np.log1p(cp10k[:, col[s]])
    with torch.no_grad():
        hidden = model(values=torch.from_numpy(values)).last_hidden_state.mean(0).numpy()
    expected = {s: hidden[g] for g, s in enumerate(genes) if s in col}
    _compare(store, "fm", expected)
    assert card.n_rows == len(expected)  # TP53 and BRCA1 are not measured: no rows, not failures
    assert np.isnan(_got(store, "fm", ["TP53"])).all()


def test_batching_and_log1p_files_do_not_change_results(store, controls, scgpt_dir, tmp_path):
    path, small = controls
    logged = small.copy()
    logged.X = sp.csr_matrix(np.log1p(_cp10k(small)))  # the same cells, already log-normalised
    logged_path = tmp_path / "logged.h5ad"
    logged.write_h5ad(logged_path)
    base = {"adapter": "scgpt", "model_path": str(scgpt_dir), "min_cells": 10}
    _produce(store, path, base | {"batch_cells": 1}, source="one")
    _produce(store, logged_path, base | {"batch_cells": 60}, source="all")
    symbols = list(small.var_names[:30])
    np.testing.assert_allclose(_got(store, "one", symbols), _got(store, "all", symbols), atol=1e-5)


def test_long_cells_are_sampled_to_max_length(store, controls, scgpt_dir):
    path, small = controls
    card = _produce(
        store,
        path,
        {"adapter": "scgpt", "model_path": str(scgpt_dir), "min_cells": 10, "max_length": 20, "min_gene_cells": 1},
    )
    assert card.n_rows > 0
    assert card.recipe.params["max_length"] == 20


def test_positional_variant_is_the_embedding_table(store, controls, scgpt_dir, geneformer_dir):
    card = store.produce(
        POSITIONAL,
        source="scgpt-pos",
        params={"adapter": "scgpt", "model_path": str(scgpt_dir)},
        max_failed_fraction=0.2,
    )
    vocab = json.loads((scgpt_dir / "vocab.json").read_text())
    table = ScGPTModel.from_pretrained(scgpt_dir).encoder.embedding.weight.detach().numpy()
    genes = ["TP53", "BRCA1", controls[1].var_names[0]]
    np.testing.assert_allclose(store.get("scgpt-pos", genes).values, table[[vocab[g] for g in genes]], atol=1e-6)
    assert card.n_rows >= len(vocab) - len(SPECIALS) - 0.2 * len(vocab)
    out, tokens, _ = geneformer_dir
    store.produce(
        POSITIONAL, source="gf-pos", params={"adapter": "geneformer", "model_path": str(out)}, max_failed_fraction=0.2
    )
    bert = BertForMaskedLM.from_pretrained(out).bert.embeddings.word_embeddings.weight.detach().numpy()
    ens = next(iter(g for g in tokens if g.startswith("ENSG")))
    np.testing.assert_allclose(store.get("gf-pos", [ens]).values[0], bert[tokens[ens]], atol=1e-6)


def test_real_papalexi_controls_end_to_end(store, data_dir, controls, scgpt_dir):
    """All 1,912 THP-1 control cells x 299 genes; the vocabulary covers 212 of the genes."""
    path = data_dir / "perturb" / "papalexi2021_thp1_crispr_ko.h5ad"
    card = _produce(store, path, {"adapter": "scgpt", "model_path": str(scgpt_dir), "batch_cells": 256})
    vocab = _model_genes(controls[1])[:-2]
    assert card.context == "THP-1" and card.n_rows == len(vocab)
    assert not np.isnan(store.get("fm", vocab, context="THP-1").values).any()
    assert len(card.failed) == 299 - len(vocab)  # every other gene of the file: out of vocabulary or unresolved
    assert {"not in the model's vocabulary", "gene id not in the registry"} <= set(card.failed.values())


def test_bad_inputs_are_clear_errors(store, controls, scgpt_dir, tmp_path):
    path, small = controls
    with pytest.raises(InvalidInputError, match="not a model checkpoint directory; it needs config.json"):
        _produce(store, path, {"adapter": "scgpt", "model_path": str(tmp_path / "nothing")})
    with pytest.raises(InvalidInputError, match="60 control cells; at least 500"):
        _produce(store, path, {"adapter": "scgpt", "model_path": str(scgpt_dir), "min_cells": 500})
    with pytest.raises(InvalidInputError, match="obs has no control column 'perturbed'"):
        _produce(store, path, {"adapter": "scgpt", "model_path": str(scgpt_dir), "control_column": "perturbed"})
    other = small[:, -20:].copy()  # only the genes outside the vocabulary
    other_path = tmp_path / "other.h5ad"
    other.write_h5ad(other_path)
    with pytest.raises(InvalidInputError, match="none of its 20 genes is in the scgpt model's vocabulary"):
        _produce(store, other_path, {"adapter": "scgpt", "model_path": str(scgpt_dir), "min_cells": 10})
    with pytest.raises((InvalidInputError, PertstoreError)):
        _produce(store, path, {"adapter": "geneformer", "model_path": str(scgpt_dir), "min_cells": 10})
    assert "fm" not in set(store.ls().source)


def test_convert_scgpt_checkpoint(tmp_path, scgpt_dir):
    """A checkpoint laid out as scGPT publishes it (args.json, vocab.json, best_model.pt) converts losslessly."""
    model = ScGPTModel.from_pretrained(scgpt_dir)
    src = tmp_path / "scGPT_human"
    src.mkdir()
    state = {k: v for k, v in model.state_dict().items()} | {"decoder.fc.0.weight": torch.zeros(2, 2)}
    torch.save(state, src / "best_model.pt")
    (src / "vocab.json").write_text((scgpt_dir / "vocab.json").read_text())
    cfg = model.config
    (src / "args.json").write_text(
        json.dumps(
            {
                "embsize": cfg.d_model,
                "nheads": cfg.nhead,
                "d_hid": cfg.d_hid,
                "nlayers": cfg.nlayers,
                "dropout": 0.0,
                "n_bins": 51,
                "input_emb_style": "continuous",
                "pad_token": "<pad>",
                "pad_value": -2,
                "max_seq_len": 1200,
            }
        )
    )
    out = convert_scgpt_checkpoint(src, tmp_path / "converted")
    again = ScGPTModel.from_pretrained(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    (src / "best_model.pt").unlink()
    with pytest.raises(InvalidInputError, match="missing best_model.pt"):
        convert_scgpt_checkpoint(src, tmp_path / "again")


def test_model_layers_equal_torch_transformer_encoder():
    """The SDPA layer path gives nn.TransformerEncoder's own numbers, padding included."""
    torch.manual_seed(0)
    model = ScGPTModel(ScGPTConfig(vocab_size=50, d_model=16, nhead=4, d_hid=32, nlayers=3, dropout=0.0)).eval()
    ids = torch.randint(3, 50, (5, 12))
    mask = torch.ones(5, 12, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    values = torch.randint(0, 51, (5, 12)).float()
    with torch.no_grad():
        got = model(input_ids=ids, values=values, attention_mask=mask).last_hidden_state
        x = model.encoder(ids) + model.value_encoder(values)
        want = model.transformer_encoder(x, src_key_padding_mask=~mask.bool())
    keep = mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=1e-5)
