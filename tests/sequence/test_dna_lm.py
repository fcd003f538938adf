"""dna-lm on the real genome fixture (hg19 chr17:1-40,000, read-only) with tiny random models built here.

The TSS rows written by these tests are synthetic positions inside the fixture (the shared TSS
table is GRCh38 and its genes lie elsewhere); the genes are real registry genes. The expected
windows are sliced from the FASTA text read by hand, not through pyfaidx.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pertstore.producers.sequence._genome import open_genome, window_sequence
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    EsmConfig,
    EsmModel,
    EsmTokenizer,
    PreTrainedTokenizerFast,
)

WINDOW = 200
CHAR_LIMIT = 38  # bases per model window of the character-level model: 40 positions less [CLS], [SEP]
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


@pytest.fixture(scope="module")
def genome(data_dir) -> Path:
    return data_dir / "genome" / "chr17.hg19.part.fa"


@pytest.fixture(scope="module")
def chr17(genome) -> str:
    lines = genome.read_text().split("\n")
    assert lines[0] == ">chr17"
    return "".join(lines[1:]).upper()


def _revcomp(seq: str) -> str:
    return "".join(COMPLEMENT[b] for b in reversed(seq))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A Nucleotide-Transformer-style EsmModel with a 3-mer vocabulary and a character-level BERT."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dna-models")
    kmer, char = root / "kmer", root / "char"
    kmer.mkdir()
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", *("".join(p) for p in itertools.product("ACGT", repeat=3)), *"ACGTN"]
    (root / "vocab.txt").write_text("\n".join(vocab))
    EsmTokenizer(str(root / "vocab.txt"), cls_token="<cls>", eos_token=None).save_pretrained(kmer)  # NT: <cls> only
    EsmModel(
        EsmConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=130,
            pad_token_id=1,
            mask_token_id=2,
            position_embedding_type="absolute",
        )
    ).save_pretrained(kmer)
    ids = {t: i for i, t in enumerate(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", *"ACGTN"])}
    tok = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    ).save_pretrained(char)
    BertModel(
        BertConfig(
            vocab_size=len(ids),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=CHAR_LIMIT + 2,
        )
    ).save_pretrained(char)
    return {"kmer": kmer, "char": char}


@pytest.fixture
def tss(tmp_path) -> Path:
    """Synthetic TSS rows inside the fixture, in the layout of genes/tss_grch38.tsv.gz."""
    rows = [
        ("ENSG00000141510", "TP53", "chr17", 1000, "+"),
        ("ENSG00000012048", "BRCA1", "17", 20000, "-"),  # the genome says chr17
        ("ENSG00000136997", "MYC", "chr17", 39950, "+"),  # window runs off the end
        ("", "STAT1", "chr2", 5000, "+"),  # a chromosome the genome lacks
        ("ENSG99999999999", "NOTAGENE", "chr17", 3000, "+"),
    ]  # no gene: logged, skipped
    path = tmp_path / "tss.tsv"
    pd.DataFrame(rows, columns=["ensembl_id", "symbol", "chromosome", "tss", "strand"]).to_csv(
        path, sep="\t", index=False
    )
    return path


def test_windows_follow_the_strand_and_the_read_only_fixture_stays_untouched(genome, chr17):
    before = sorted(os.listdir(genome.parent))
    with open_genome(genome) as g:
        plus, why = window_sequence(g, "chr17", 1000, "+", WINDOW)
        assert not why and plus == chr17[899:1099] and plus[100] == chr17[999]  # the TSS at index window // 2
        minus, why = window_sequence(g, "17", 20000, "-", WINDOW)
        assert not why and minus == _revcomp(chr17[19900:20100]) and minus[100] == COMPLEMENT[chr17[19999]]
        assert window_sequence(g, "chr17", 39950, "+", WINDOW) == (
            "",
            "window chr17:39850-40049 (+) runs off the contig (40,000 bp)",
        )
        assert window_sequence(g, "chr17", 50, "-", WINDOW)[1].endswith("runs off the contig (40,000 bp)")
        assert window_sequence(g, "chrX", 50, "+", WINDOW) == ("", "chromosome 'chrX' is not in the genome")
    assert sorted(os.listdir(genome.parent)) == before  # the index went to the cache
    assert any(n.startswith(genome.name) for n in os.listdir(Path(tempfile.gettempdir()) / "pertstore-faidx"))


def test_all_n_window_fails(tmp_path):
    fasta = tmp_path / "n.fa"
    fasta.write_text(">1\n" + "N" * 300 + "ACGT" * 50 + "\n")
    with open_genome(fasta) as g:
        assert window_sequence(g, "chr1", 101, "+", WINDOW) == ("", "window 1:1-200 (+) is all N")
        assert window_sequence(g, "chr1", 301, "+", WINDOW)[0].count("N") == 100  # some N: kept


def _direct(path: Path, text: str) -> np.ndarray:
    tok = AutoTokenizer.from_pretrained(path)
    model = (EsmModel if path.name == "kmer" else BertModel).from_pretrained(path).eval()
    ids = tok(text, return_tensors="pt")
    n_suffix = 0 if path.name == "kmer" else 1  # NT-style: <cls> only; BERT: [CLS] ... [SEP]
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0]
    return hidden[1 : len(hidden) - n_suffix].mean(0).numpy()


def test_dna_lm_through_the_store(store, genome, chr17, tss, checkpoints, caplog):
    path = checkpoints["kmer"]
    with caplog.at_level(logging.WARNING, logger="pertstore.producers.sequence"):
        card = store.produce(
            "dna-lm",
            source="nt",
            params={"model_path": str(path), "window": WINDOW},
            inputs={"genome": str(genome), "tss": str(tss)},
            max_failed_fraction=0.6,
        )
    assert "1 of 5 skipped" in caplog.text and "line 6 (ENSG99999999999)" in caplog.text
    genes = store.resolve(["TP53", "BRCA1", "MYC", "STAT1"]).ids
    assert card.n_rows == 2 and card.failed == {
        genes[2]: "window chr17:39850-40049 (+) runs off the contig (40,000 bp)",
        genes[3]: "chromosome 'chr2' is not in the genome",
    }
    got = store.get("nt", ["TP53", "BRCA1"]).values
    np.testing.assert_allclose(got[0], _direct(path, chr17[899:1099]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], _direct(path, _revcomp(chr17[19900:20100])), rtol=1e-4, atol=1e-5)


def test_windows_longer_than_the_model_are_split(store, genome, chr17, tss, checkpoints):
    path = checkpoints["char"]
    store.produce(
        "dna-lm",
        source="char",
        params={"model_path": str(path), "window": WINDOW},
        inputs={"genome": str(genome), "tss": str(tss)},
        max_failed_fraction=0.6,
    )
    text = chr17[899:1099]
    parts = [text[i : i + CHAR_LIMIT] for i in range(0, WINDOW, CHAR_LIMIT)]  # 5 x 38 + 10 bases
    want = np.average([_direct(path, p) for p in parts], axis=0, weights=[len(p) for p in parts])
    np.testing.assert_allclose(store.get("char", ["TP53"]).values[0], want, rtol=1e-4, atol=1e-5)
