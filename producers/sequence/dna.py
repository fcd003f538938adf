"""``dna-lm``: gene embeddings from DNA language models over a window centred on each gene's TSS.

Inputs: ``genome`` (a genome FASTA read through pyfaidx; see :mod:`._genome` for its index and
chromosome names) and ``tss`` (columns ensembl_id, symbol, chromosome, tss (1-based), strand, as
``genes/tss_grch38.tsv.gz``). Each row is mapped to a gene by its Ensembl id, else its symbol;
a gene's window is ``window`` bases with the TSS at index ``window // 2``, reverse-complemented
on the minus strand. The embedding is the mean of the model's hidden states (``layer``) over the
window's tokens, special tokens and padding excluded; windows longer than the model takes are
cut into ``model_window``-token pieces averaged weighted by length (see :mod:`._lm`).

Models: any transformers ``AutoModel`` (or ``AutoModelForMaskedLM``) with its tokenizer:
Nucleotide Transformer (``EsmModel`` with a 6-mer tokenizer), character-level models, and, with
``trust_remote_code``, models whose code ships with the checkpoint (HyenaDNA, Caduceus).

Failures: a window that runs off its contig, holds only N, or lies on a chromosome the genome
lacks. Rows that map to no gene (or repeat an earlier row's gene) have no row to give: a warning
in the job's log counts them.
"""

from __future__ import annotations

import logging

from pertstore.producers._base import Batch, Producer
from pertstore.producers.sequence._genes import log_unmapped, resolve_first
from pertstore.producers.sequence._genome import open_genome, read_tss, window_sequence
from pertstore.producers.sequence._lm import (
    Dtype,
    check_checkpoint,
    embed_tokens,
    lm_libraries,
    load_model,
    window_size,
)
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError

log = logging.getLogger(__name__)
EXAMPLE = "a Nucleotide Transformer (InstaDeepAI/nucleotide-transformer-500m-human-ref) or another DNA model"


class DNALMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str
    """Local checkpoint directory (config.json, weights, tokenizer files)."""
    window: int = Field(4000, ge=2)
    """Bases around the TSS."""
    model_window: int | None = Field(None, ge=1)
    """Tokens per model pass (default: the model's positions less its special tokens)."""
    stride: int | None = Field(None, ge=1)
    """Tokens between model-window starts (default ``model_window``: non-overlapping)."""
    layer: int = -1
    """Hidden layer to pool (index into the model's hidden states; -1 = last)."""
    max_tokens: int = Field(16384, ge=64)
    """Tokens per batch (rows x padded length)."""
    dtype: Dtype = "float32"
    trust_remote_code: bool = False
    """Run model code shipped in the checkpoint directory (HyenaDNA, Caduceus need it)."""


class DNALMProducer(Producer):
    """DNA language-model embeddings of the window around each gene's TSS, by a local checkpoint."""

    name = "dna-lm"
    kind = "gene"
    Params = DNALMParams
    inputs = {"genome": "file", "tss": "file"}
    description = "DNA language-model embeddings of a window centred on each gene's TSS (strand-aware)"
    chunk_size = 512

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return lm_libraries()

    def _sites(self) -> tuple[dict[str, tuple[str, int, str]], list[tuple[str, str]], int]:
        """Gene -> (chromosome, tss, strand); the skipped rows with why; the number of rows."""
        table = read_tss(self.ctx.path("tss"))
        genes = resolve_first(self.ctx, [[e, s] for e, s in zip(table.ensembl_id, table.symbol)])
        sites: dict[str, tuple[str, int, str]] = {}
        skipped = []
        for row, (gene, why) in zip(table.itertuples(), genes):
            label = f"line {row.Index + 2} ({row.ensembl_id or row.symbol})"
            if gene is None:
                skipped.append((label, why))
            elif gene in sites:
                skipped.append((label, f"a second row for {gene}"))
            else:
                sites[gene] = (row.chromosome, row.tss, row.strand)
        return sites, skipped, len(table)

    def entities(self) -> list[str]:
        check_checkpoint(self.params.model_path, self.name, EXAMPLE)  # before any work
        sites, skipped, n_rows = self._sites()
        name = self.ctx.path("tss").name
        log_unmapped(log, f"{name}: TSS rows that give no gene", skipped, n_rows)
        if not sites:
            raise InvalidInputError(
                f"{name}: none of its {n_rows} rows maps to a gene of the registry"
                + (f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else "")
            )
        return list(sites)

    def compute_chunk(self, ids: list[str]) -> Batch:
        p = self.params
        sites, _, _ = self._sites()
        failed: dict[str, str] = {}
        ok, texts = [], []
        with open_genome(self.ctx.path("genome")) as genome:
            for entity in ids:
                if entity not in sites:
                    failed[entity] = "no row in the TSS table"
                    continue
                sequence, why = window_sequence(genome, *sites[entity], p.window)
                if why:
                    failed[entity] = why
                else:
                    ok.append(entity)
                    texts.append(sequence)
        if not ok:
            return Batch.empty(0, failed)
        sm = load_model(
            p.model_path,
            self.ctx.device,
            who=self.name,
            example=EXAMPLE,
            dtype=p.dtype,
            trust_remote_code=p.trust_remote_code,
        )
        tokens = sm.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        size = window_size(sm, p.model_window, who=self.name, param="model_window")
        values = embed_tokens(
            sm,
            tokens,
            size=size,
            stride=p.stride or size,
            layer=p.layer,
            max_tokens=p.max_tokens,
            device=self.ctx.device,
        )
        return Batch(ok, values, failed)
