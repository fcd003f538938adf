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
from pertstore.producers.expression._fm_adapters import load_adapter, scgpt_bins
from pertstore.producers.expression._fm_models import (
    DenseCellConfig,
    DenseCellModel,
    ScGPTConfig,
    ScGPTModel,
    convert_scgpt_checkpoint,
    load_scgpt_checkpoint,
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


def _published_scgpt(model: ScGPTModel, vocab_json: str, out) -> dict[str, torch.Tensor]:
    """``model`` written as scGPT publishes a flash-attention checkpoint; returns the state dict written."""
    out.mkdir()
    state = {k.replace(".self_attn.in_proj_", ".self_attn.Wqkv."): v for k, v in model.state_dict().items()}
    state |= {"decoder.fc.0.weight": torch.zeros(2, 2), "cls_decoder._decoder.0.bias": torch.zeros(3)}
    assert any(".Wqkv.weight" in k for k in state) and not any("in_proj" in k for k in state)
    torch.save(state, out / "best_model.pt")
    (out / "vocab.json").write_text(vocab_json)
    cfg = model.config
    args = {"embsize": cfg.d_model, "nheads": cfg.nhead, "d_hid": cfg.d_hid, "nlayers": cfg.nlayers, "dropout": 0.0}
    args |= {"n_bins": 51, "input_emb_style": "continuous", "pad_token": "<pad>", "pad_value": -2, "max_seq_len": 400}
    args |= {"fast_transformer": True, "pre_norm": False}
    (out / "args.json").write_text(json.dumps(args))
    return state


def _flash_layers_by_hand(state, nlayers: int, nhead: int, x: torch.Tensor) -> torch.Tensor:
    """scGPT's FlashTransformerEncoderLayer (post-norm) from the published keys: Wqkv split as (three, h, d)."""
    ln = torch.nn.functional.layer_norm
    for i in range(nlayers):
        p = {k.removeprefix(f"transformer_encoder.layers.{i}."): v for k, v in state.items()}
        b, n, d = x.shape
        qkv = (x @ p["self_attn.Wqkv.weight"].T + p["self_attn.Wqkv.bias"]).view(b, n, 3, nhead, d // nhead)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // nhead) ** 0.5, -1) @ v
        attn = attn.transpose(1, 2).reshape(b, n, d) @ p["self_attn.out_proj.weight"].T + p["self_attn.out_proj.bias"]
        x = ln(x + attn, (d,), p["norm1.weight"], p["norm1.bias"])
        ff = torch.relu(x @ p["linear1.weight"].T + p["linear1.bias"]) @ p["linear2.weight"].T + p["linear2.bias"]
        x = ln(x + ff, (d,), p["norm2.weight"], p["norm2.bias"])
    return x


def test_scgpt_published_flash_checkpoint_equals_the_flash_layer_formula(tmp_path):
    """scGPT's own layout (args.json, vocab.json, best_model.pt with Wqkv keys) loads as it is, no scgpt package."""
    torch.manual_seed(1)
    vocab = {t: i for i, t in enumerate(SPECIALS + [f"G{i}" for i in range(20)])}
    model = ScGPTModel(ScGPTConfig(vocab_size=len(vocab), d_model=16, nhead=4, d_hid=32, nlayers=2, dropout=0.0))
    state = _published_scgpt(model, json.dumps(vocab), tmp_path / "scGPT_human")
    adapter = load_adapter("scgpt", str(tmp_path / "scGPT_human"), "cpu")
    assert adapter.genes == [f"G{i}" for i in range(20)] and adapter.max_length == 400
    ids, values = torch.randint(3, len(vocab), (3, 9)), torch.randint(0, 51, (3, 9)).float()
    with torch.no_grad():
        got = adapter.model(input_ids=ids, values=values).last_hidden_state
        emb = torch.nn.functional.embedding(ids, state["encoder.embedding.weight"])
        x = torch.nn.functional.layer_norm(emb, (16,), state["encoder.enc_norm.weight"], state["encoder.enc_norm.bias"])
        x = x + model.value_encoder(values)  # the value encoder's own keys are unchanged by the layout
        want = _flash_layers_by_hand(state, 2, 4, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(adapter.table(), state["encoder.embedding.weight"][3:].numpy())
    args = json.loads((tmp_path / "scGPT_human" / "args.json").read_text())
    (tmp_path / "scGPT_human" / "args.json").write_text(json.dumps({k: v for k, v in args.items() if k != "embsize"}))
    with pytest.raises(InvalidInputError, match="args.json or vocab.json lacks 'embsize'"):
        load_adapter("scgpt", str(tmp_path / "scGPT_human"), "cpu")


def test_scgpt_published_checkpoint_through_the_producer(store, controls, scgpt_dir, tmp_path):
    """The producer given scGPT's directory gives the transformers-format checkpoint's numbers exactly."""
    path, _ = controls
    published = tmp_path / "published"
    _published_scgpt(ScGPTModel.from_pretrained(scgpt_dir), (scgpt_dir / "vocab.json").read_text(), published)
    params = {"adapter": "scgpt", "min_cells": 10, "seed": 3}
    _produce(store, path, params | {"model_path": str(scgpt_dir)}, source="fm-hf")
    _produce(store, path, params | {"model_path": str(published)}, source="fm-published")
    hf, pub = store.get("fm-hf", context="THP-1"), store.get("fm-published", context="THP-1")
    assert list(hf.entity.values) == list(pub.entity.values) and hf.shape[0] > 100
    np.testing.assert_allclose(pub.values, hf.values, atol=1e-6)
    # a checkpoint missing one encoder weight is an error naming it, never random weights
    state = torch.load(published / "best_model.pt", weights_only=True)
    del state["transformer_encoder.layers.1.self_attn.Wqkv.weight"]
    torch.save(state, published / "best_model.pt")
    with pytest.raises(InvalidInputError, match=r"missing \['transformer_encoder.layers.1.self_attn.in_proj_weight"):
        load_scgpt_checkpoint(published)
    with pytest.raises(InvalidInputError, match="args.json, vocab.json and best_model.pt"):
        _produce(store, path, params | {"model_path": str(tmp_path / "none")}, source="fm-none")


def _aido_checkpoint(root, genes: list[str], hidden: int = 8, prefix: str = "bert.") -> torch.Tensor:
    """A tiny checkpoint laid out as AIDO.Cell publishes it, with modelgenerator's gene-list file (rows shuffled)."""
    from safetensors.torch import save_file

    root.mkdir()
    config = {"model_type": "cellfoundation", "hidden_size": hidden, "num_hidden_layers": 1}
    config |= {"max_position_embeddings": len(genes), "position_embedding_type": "absolute", "bin_num": 10}
    (root / "config.json").write_text(json.dumps(config))
    table = torch.randn(len(genes) + 2, hidden)  # + the two read-depth positions
    weights = {
        f"{prefix}position_embedding.weight": table,
        f"{prefix}gene_embedding.lookup_table.weight": torch.ones(10, hidden),
    }
    save_file(weights, str(root / "model.safetensors"))
    order = np.random.default_rng(0).permutation(len(genes))
    lines = ["gene_name\tindex"] + [f"{genes[i]}\t{i}" for i in order]
    (root / "OS_scRNA_gene_index.19264.tsv").write_text("\n".join(lines) + "\n")
    return table


def test_aido_cell_positional_is_the_position_embedding_in_gene_order(store, tmp_path):
    torch.manual_seed(4)
    genes = ["TP53", "BRCA1", "MYC", "EGFR", "NOT_A_GENE", "GAPDH"]
    table = _aido_checkpoint(tmp_path / "AIDO.Cell-3M", genes)
    card = store.produce(
        POSITIONAL,
        source="aido-pos",
        params={"adapter": "aido-cell", "model_path": str(tmp_path / "AIDO.Cell-3M")},
        max_failed_fraction=0.2,
    )
    assert (card.dim, card.n_rows) == (8, 5)
    want = table[[0, 3, 5, 2]].numpy()
    np.testing.assert_array_equal(store.get("aido-pos", ["TP53", "EGFR", "GAPDH", "MYC"]).values, want)
    # unprefixed weights (the base model saved alone) and a gene list named in the recipe
    other = tmp_path / "base"
    table = _aido_checkpoint(other, genes, prefix="")
    (other / "OS_scRNA_gene_index.19264.tsv").rename(tmp_path / "genes.tsv")
    params = {"adapter": "aido-cell", "model_path": str(other), "gene_list": str(tmp_path / "genes.tsv")}
    store.produce(POSITIONAL, source="aido-pos2", params=params, max_failed_fraction=0.2)
    np.testing.assert_array_equal(store.get("aido-pos2", ["BRCA1"]).values[0], table[1].numpy())


def test_aido_cell_checkpoint_errors_name_what_to_provide(store, controls, tmp_path):
    root = tmp_path / "aido"
    _aido_checkpoint(root, ["TP53", "MYC"])
    params = {"adapter": "aido-cell", "model_path": str(root)}
    (root / "OS_scRNA_gene_index.19264.tsv").unlink()
    with pytest.raises(InvalidInputError, match="modelgenerator's OS_scRNA_gene_index.19264.tsv"):
        store.produce(POSITIONAL, source="aido-x", params=params)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps(config | {"position_embedding_type": "rope"}))
    with pytest.raises(InvalidInputError, match="'rope' positions"):
        store.produce(POSITIONAL, source="aido-x", params=params)
    with pytest.raises(InvalidInputError, match="modelgenerator's CellFoundation model"):
        _produce(store, controls[0], params | {"min_cells": 10}, source="aido-x")
    with pytest.raises(InvalidInputError, match="needs config.json, model.safetensors"):
        store.produce(POSITIONAL, source="aido-x", params=params | {"model_path": str(tmp_path / "none")})
    assert "aido-x" not in set(store.ls().source)


@pytest.mark.slow  # a local Dask cluster: ~60 s on the loaded 2-core machine
def test_published_checkpoints_through_the_cli(store, scgpt_dir, tmp_path):
    """The README's path: a recipes file naming scGPT's and AIDO.Cell's published directories, `pertstore jobs submit`."""
    from typer.testing import CliRunner

    from pertstore import Store
    from pertstore.cli import app

    _published_scgpt(ScGPTModel.from_pretrained(scgpt_dir), (scgpt_dir / "vocab.json").read_text(), tmp_path / "scgpt")
    table = _aido_checkpoint(tmp_path / "aido", ["TP53", "MYC", "EGFR"])
    recipes = tmp_path / "r.yaml"
    recipes.write_text(
        f"""recipes:
  - producer: scfm-positional
    source: scgpt-positional
    params: {{adapter: scgpt, model_path: "{tmp_path / "scgpt"}"}}
    max_failed: 0.2
  - producer: scfm-positional
    source: aido-positional
    params: {{adapter: aido-cell, model_path: "{tmp_path / "aido"}"}}
"""
    )
    root = str(store.storage.path(""))
    store.close()
    runner = CliRunner()
    run = runner.invoke(app, ["jobs", "submit", str(recipes), "--store", root, "--no-progress", "--workers", "1"])
    assert run.exit_code == 0, run.output
    with Store.open(root) as s:
        np.testing.assert_array_equal(s.get("aido-positional", ["MYC"]).values[0], table[1].numpy())
        want = ScGPTModel.from_pretrained(scgpt_dir).encoder.embedding.weight.detach().numpy()
        vocab = json.loads((scgpt_dir / "vocab.json").read_text())
        np.testing.assert_array_equal(s.get("scgpt-positional", ["TP53"]).values[0], want[vocab["TP53"]])
