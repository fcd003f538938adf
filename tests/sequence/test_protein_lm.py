"""protein-lm: tiny random ESM and T5 checkpoints built here, run through the store.

Every expected vector is a direct forward pass of the saved model on the text written out by
hand (residues for ESM, space-separated with rare letters as X for ProtT5), special tokens
dropped from the mean. The sequences are synthetic; the genes are real registry genes.
"""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest
import torch
from pertstore.producers.sequence._fasta import gene_keys, normalise, residue_problem
from pertstore.producers.sequence._lm import embed_tokens, load_model, windows
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    EsmConfig,
    EsmModel,
    EsmTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from pertstore.errors import InvalidInputError

AMINO = "ACDEFGHIKLMNPQRSTVWY"
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]
ESM_LIMIT = 30  # residues per window: 34 positions less the padding offset (2) and <cls>, <eos>
T5_LIMIT = 23  # 24 positions less </s>


def _protein(rng, n: int) -> str:
    return "".join(rng.choice(list(AMINO), n))


RNG = np.random.default_rng(0)
TP53_A, TP53_B, BRCA1, CD3E = _protein(RNG, 20), _protein(RNG, 15), _protein(RNG, 75), _protein(RNG, 12)
STAT1 = _protein(RNG, 8) + "U" + _protein(RNG, 6)
RECORDS = [
    ("sp|P04637|P53_HUMAN Cellular tumor antigen p53 OS=Homo sapiens OX=9606 GN=TP53 PE=1 SV=4", TP53_A),
    ("sp|P04637-2|P53_HUMAN Isoform 2 of Cellular tumor antigen p53 OS=Homo sapiens OX=9606 GN=TP53", TP53_B),
    (
        "ENSP00000269305.8 pep chromosome:GRCh38:17:7661779:7687538:-1 gene:ENSG00000141510.18 "
        "transcript:ENST00000269305.9 gene_symbol:TP53",
        TP53_A,
    ),  # the same protein again: counted once
    (
        "ENSP00000350283.3 pep chromosome:GRCh38:17:43044295:43125483:-1 gene:ENSG00000012048.23 gene_symbol:BRCA1",
        BRCA1,
    ),
    ("STAT1", STAT1 + "*"),
    ("sp|P17947|SPI1_HUMAN Transcription factor PU.1 OS=Homo sapiens OX=9606 GN=SPI1", "MEGJAL"),
    ("sp|P07766|CD3E_HUMAN T-cell surface glycoprotein CD3 epsilon chain OS=Homo sapiens GN=CD3E", CD3E),
    ("sp|P07766-2|CD3E_HUMAN Isoform 2 OS=Homo sapiens GN=CD3E", "MQSG-KQ"),
    ("NOTAGENE123 an id the registry does not know", "MKV"),
]


def _write_fasta(path, records=RECORDS):
    text = "".join(f">{h}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n" for h, s in records)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        f.write(text)
    return path


def _t5_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level over space-separated residues with a closing ``</s>``, as ProtT5's sentencepiece vocabulary."""
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *AMINO, "X"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("protein-models")
    esm, t5 = root / "esm", root / "t5"
    esm.mkdir()
    (root / "vocab.txt").write_text("\n".join(ESM_VOCAB))
    EsmTokenizer(str(root / "vocab.txt")).save_pretrained(esm)
    EsmModel(
        EsmConfig(
            vocab_size=len(ESM_VOCAB),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=ESM_LIMIT + 4,
            pad_token_id=1,
            mask_token_id=32,
            position_embedding_type="rotary",
        )
    ).save_pretrained(esm)
    tok = _t5_tokenizer()
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
            n_positions=T5_LIMIT + 1,
        )
    ).save_pretrained(t5)
    tok.save_pretrained(t5)
    return {"esm": esm, "t5": t5}


def _direct(path, text: str) -> np.ndarray:
    """Mean last hidden state of ``text`` run alone through the saved model, special tokens dropped."""
    tok = AutoTokenizer.from_pretrained(path)
    is_t5 = "t5" in path.name
    model = (T5EncoderModel if is_t5 else EsmModel).from_pretrained(path).eval()
    with torch.no_grad():
        hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
    return hidden[0 if is_t5 else 1 : -1].mean(0).numpy()


def _windowed(path, text: str, size: int) -> np.ndarray:
    """Non-overlapping windows of ``size`` residues embedded alone, averaged weighted by length."""
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    spaced = "t5" in path.name
    vectors = [_direct(path, " ".join(p) if spaced else p) for p in parts]
    return np.average(vectors, axis=0, weights=[len(p) for p in parts])


def test_esm_isoforms_windows_and_failures(store, checkpoints, tmp_path, caplog):
    fasta = _write_fasta(tmp_path / "proteins.fa")
    path = checkpoints["esm"]
    with caplog.at_level(logging.WARNING, logger="pertstore.producers.sequence"):
        card = store.produce(
            "protein-lm",
            source="esm",
            params={"model_path": str(path), "max_tokens": 64},
            inputs={"fasta": str(fasta)},
            max_failed_fraction=0.5,
        )
    assert "NOTAGENE123" in caplog.text and "1 of 9 skipped" in caplog.text  # unmapped: logged, no failure
    assert card.dim == 16 and card.n_rows == 4
    spi1, cd3e_2 = "sp|P17947|SPI1_HUMAN", "sp|P07766-2|CD3E_HUMAN"
    assert card.failed == {
        f"{spi1} (fasta record 6)": f"FASTA record {spi1}: invalid letter 'J' at residue 4",
        f"{cd3e_2} (fasta record 8)": f"FASTA record {cd3e_2}: invalid letter '-' at residue 5",
        store.resolve(["SPI1"]).ids[0]: f"no valid isoform: {spi1}: invalid letter 'J' at residue 4",
    }
    genes = ["TP53", "BRCA1", "STAT1", "CD3E"]
    got = dict(zip(genes, store.get("esm", genes).values))
    tol = {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(got["TP53"], (_direct(path, TP53_A) + _direct(path, TP53_B)) / 2, **tol)
    np.testing.assert_allclose(got["BRCA1"], _windowed(path, BRCA1, ESM_LIMIT), **tol)  # 30 + 30 + 15 residues
    np.testing.assert_allclose(got["STAT1"], _direct(path, STAT1), **tol)  # terminal * dropped, U kept
    np.testing.assert_allclose(got["CD3E"], _direct(path, CD3E), **tol)  # the invalid isoform left out


def test_prott5_spaced_residues_from_a_gzipped_fasta(store, checkpoints, tmp_path):
    fasta = _write_fasta(tmp_path / "proteins.fa.gz", RECORDS[:5])
    path = checkpoints["t5"]
    card = store.produce("protein-lm", source="t5", params={"model_path": str(path)}, inputs={"fasta": str(fasta)})
    assert card.n_rows == 3 and not card.failed
    got = store.get("t5", ["STAT1", "BRCA1"]).values
    tol = {"rtol": 1e-4, "atol": 1e-5}
    np.testing.assert_allclose(got[0], _direct(path, " ".join(STAT1.replace("U", "X"))), **tol)
    np.testing.assert_allclose(got[1], _windowed(path, BRCA1, T5_LIMIT), **tol)  # 23 + 23 + 23 + 6 residues


def test_overlapping_windows_are_weighted_by_length(checkpoints):
    assert windows(75, 40, 20) == [(0, 40), (20, 60), (40, 75)]
    assert windows(75, 30, 30) == [(0, 30), (30, 60), (60, 75)] and windows(5, 30, 30) == [(0, 5)]
    path = checkpoints["esm"]
    sm = load_model(str(path), "cpu", who="test", example="-")
    tokens = sm.tokenizer([BRCA1], add_special_tokens=False)["input_ids"]
    got = embed_tokens(sm, tokens, size=40, stride=20, layer=-1, max_tokens=100, device="cpu")[0]
    parts = [BRCA1[0:40], BRCA1[20:60], BRCA1[40:75]]
    want = np.average([_direct(path, p) for p in parts], axis=0, weights=[40, 40, 35])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidInputError, match="stride 50"):
        windows(75, 40, 50)


def test_missing_checkpoint_fails_before_reading_the_fasta(store, tmp_path):
    not_fasta = tmp_path / "proteins.fa"
    not_fasta.write_text("this is not a FASTA file\n")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with pytest.raises(InvalidInputError, match=r"lacks the weights .*save_pretrained.* ESM2"):
        store.produce(
            "protein-lm", source="none", params={"model_path": str(tmp_path / "ckpt")}, inputs={"fasta": str(not_fasta)}
        )
    with pytest.raises(InvalidInputError, match="lacks config.json and the weights"):
        store.produce(
            "protein-lm",
            source="none",
            params={"model_path": str(tmp_path / "nothing")},
            inputs={"fasta": str(not_fasta)},
        )
    assert "none" not in set(store.ls().source)


def test_header_forms_and_residue_checks():
    assert gene_keys(RECORDS[0][0]) == ["TP53", "P04637"]
    assert gene_keys(RECORDS[3][0]) == ["ENSG00000012048.23", "BRCA1", "ENSP00000350283.3"]
    assert gene_keys("tr|A0A024R161|A0A024R161_HUMAN Guanine nucleotide-binding protein OS=Homo sapiens") == [
        "A0A024R161"
    ]
    assert gene_keys("7157") == ["7157"] and gene_keys("") == []
    assert normalise("mkv*") == "MKV" and residue_problem("MKV") is None and residue_problem("MUZOBX") is None
    assert residue_problem("MK*V") == "invalid letter '*' at residue 3" and residue_problem("") == "empty sequence"
