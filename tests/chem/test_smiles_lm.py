"""SMILES transformers: tiny random RoBERTa and T5 checkpoints built here, run through the real code path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.producers.chem.smiles_lm import token_batches
from rdkit import Chem
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel, T5Config, T5EncoderModel

from pertstore.errors import InvalidInputError

DRUGS = pd.DataFrame(
    {
        "name": ["aspirin", "caffeine", "imatinib", "ibuprofen", "broken"],
        "smiles": [
            "CC(=O)Oc1ccccc1C(=O)O",
            "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
            "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
            "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
            "",
        ],
    }
)
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]


def _tokenizer(leading: bool) -> PreTrainedTokenizerFast:
    """A character-level SMILES tokenizer; with ``leading``, ``<s> ... </s>`` like RoBERTa, else ``... </s>`` like T5."""
    chars = sorted(set("".join(DRUGS.smiles)) | set("[]@+-=#/\\%0123456789"))
    vocab = {t: i for i, t in enumerate(SPECIAL + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    single = "<s> $A </s>" if leading else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    extra = {"cls_token": "<s>", "bos_token": "<s>"} if leading else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>", **extra
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("smiles-models")
    roberta, t5 = root / "roberta", root / "t5"
    tok = _tokenizer(leading=True)
    RobertaModel(
        RobertaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=130,
            pad_token_id=0,
        )
    ).save_pretrained(roberta)
    tok.save_pretrained(roberta)
    tok = _tokenizer(leading=False)
    T5EncoderModel(
        T5Config(
            vocab_size=len(tok),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            decoder_start_token_id=0,
        )
    ).save_pretrained(t5)
    tok.save_pretrained(t5)
    return roberta, t5


@pytest.fixture
def mol_store(store):
    store.register_molecules(DRUGS[DRUGS.smiles != ""])
    return store


def _by_hand(path, model_cls, smiles, *, drop_first: bool):
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = model_cls.from_pretrained(path).eval()
    ids = tok(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)), return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0]
    return hidden[1 if drop_first else 0 : -1].mean(0).numpy()  # special tokens excluded


@pytest.mark.parametrize("which", ["roberta", "t5"])
def test_mean_pooling_equals_a_hand_computation(mol_store, checkpoints, which):
    path = checkpoints[0] if which == "roberta" else checkpoints[1]
    card = mol_store.produce("smiles-lm", source=f"lm-{which}", params={"model_path": str(path), "max_tokens": 64})
    assert card.dim == 16 and card.n_rows == 4
    got = mol_store.get(f"lm-{which}", ["imatinib", "aspirin"]).values
    cls = RobertaModel if which == "roberta" else T5EncoderModel
    for row, name in zip(got, ["imatinib", "aspirin"]):
        want = _by_hand(path, cls, DRUGS.set_index("name").smiles[name], drop_first=which == "roberta")
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)
    # packing by tokens changes the batches, never the numbers
    mol_store.produce("smiles-lm", source=f"lm-{which}-big", params={"model_path": str(path), "max_tokens": 100_000})
    np.testing.assert_allclose(
        mol_store.get(f"lm-{which}-big", DRUGS.name[:4]).values,
        mol_store.get(f"lm-{which}", DRUGS.name[:4]).values,
        atol=1e-5,
    )


def test_cls_pooling_and_layer(mol_store, checkpoints):
    path = checkpoints[0]
    mol_store.produce("smiles-lm", source="lm-cls", params={"model_path": str(path), "pooling": "cls", "layer": 0})
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = RobertaModel.from_pretrained(path).eval()
    smiles = Chem.MolToSmiles(Chem.MolFromSmiles(DRUGS.smiles[1]))
    with torch.no_grad():
        want = model(**tok(smiles, return_tensors="pt"), output_hidden_states=True).hidden_states[0][0, 0].numpy()
    np.testing.assert_allclose(mol_store.get("lm-cls", ["caffeine"]).values[0], want, rtol=1e-4, atol=1e-5)


def test_missing_checkpoint_is_a_clear_error(mol_store, tmp_path):
    with pytest.raises(InvalidInputError, match="needs config.json"):
        mol_store.produce("smiles-lm", source="lm-none", params={"model_path": str(tmp_path / "nothing")})
    assert "lm-none" not in set(mol_store.ls().source)


def test_token_batches_respect_the_budget():
    lengths = [5, 50, 7, 49, 3, 20]
    batches = token_batches(lengths, 100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(max(lengths[i] for i in b) * len(b) <= 100 or len(b) == 1 for b in batches)
