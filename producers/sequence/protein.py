"""``protein-lm``: gene embeddings from protein language models (ESM2, ProtT5) over a protein FASTA.

Each record of the ``fasta`` input (UniProt or Ensembl pep, plain or gzipped; header forms in
:mod:`._fasta`) is mapped to a gene through the store's registry. A sequence's embedding is the
mean of the hidden states (``layer``) of its residues, special tokens and padding excluded;
proteins longer than ``max_residues`` are cut into windows (see :mod:`._lm`) whose means are
averaged weighted by length. A gene's embedding is the mean over its distinct valid isoform
sequences. ESM checkpoints (``EsmModel``) take the residues as they are; T5 checkpoints
(ProtT5, through ``T5EncoderModel``) take them space-separated with U/Z/O/B mapped to X.

Failures: a record with a letter outside the 20 amino acids and X/U/Z/O/B (a terminal ``*`` is
dropped) fails as ``"<record id> (fasta record <n>)"``; a gene left with no valid isoform fails.
Records that map to no gene, or to several, have no row to give: a warning in the job's log
counts them (they are not failures, so they do not count against ``--max-failed``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from pertstore.producers._base import Batch, Producer
from pertstore.producers.sequence._fasta import gene_keys, normalise, read_fasta, record_id, residue_problem
from pertstore.producers.sequence._genes import log_unmapped, resolve_first
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
EXAMPLE = "ESM2 (facebook/esm2_t33_650M_UR50D) or ProtT5 (Rostlab/prot_t5_xl_half_uniref50-enc)"
_RARE = re.compile(r"[UZOB]")


class ProteinLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str
    """Local checkpoint directory (config.json, weights, tokenizer files)."""
    layer: int = -1
    """Hidden layer to pool (index into the model's hidden states; -1 = last)."""
    max_residues: int | None = Field(None, ge=1)
    """Residues per model window (default: the model's positions less its special tokens; ESM2 1,022)."""
    stride: int | None = Field(None, ge=1)
    """Residues between window starts (default ``max_residues``: non-overlapping windows)."""
    max_tokens: int = Field(16384, ge=64)
    """Tokens per batch (rows x padded length)."""
    dtype: Dtype = "float32"


@dataclass
class _Record:
    number: int
    rid: str
    gene: str | None
    unmapped: str
    problem: str | None
    sequence: str

    @property
    def key(self) -> str:
        """The failure-ledger id of an invalid record."""
        return f"{self.rid} (fasta record {self.number})"


class ProteinLMProducer(Producer):
    """Per-residue embeddings of a gene's protein isoforms, mean-pooled, by a local ESM2/ProtT5 checkpoint."""

    name = "protein-lm"
    kind = "gene"
    Params = ProteinLMParams
    inputs = {"fasta": "file"}
    description = "protein language-model embeddings (ESM2, ProtT5) of a gene's isoforms from a protein FASTA"
    chunk_size = 1024

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return lm_libraries()

    def _records(self, keep_sequences: bool) -> list[_Record]:
        path = self.ctx.path("fasta")
        headers, problems, sequences = [], [], []
        for header, raw in read_fasta(path):
            sequence = normalise(raw)
            headers.append(header)
            problems.append(residue_problem(sequence))
            sequences.append(sequence if keep_sequences else "")
        if not headers:
            raise InvalidInputError(f"{path.name}: no FASTA records")
        genes = resolve_first(self.ctx, [gene_keys(h) for h in headers])
        return [
            _Record(n, record_id(h), gene, why, problem, seq)
            for n, (h, (gene, why), problem, seq) in enumerate(zip(headers, genes, problems, sequences), 1)
        ]

    def entities(self) -> list[str]:
        check_checkpoint(self.params.model_path, self.name, EXAMPLE)  # before any work
        records = self._records(keep_sequences=False)
        name = self.ctx.path("fasta").name
        unmapped = [(r.rid, r.unmapped) for r in records if r.gene is None]
        log_unmapped(log, f"{name}: FASTA records that map to no gene", unmapped, len(records))
        genes = list(dict.fromkeys(r.gene for r in records if r.gene))
        if not genes:
            raise InvalidInputError(
                f"{name}: none of its {len(records)} records maps to a gene of the registry "
                f"(e.g. {unmapped[0][0]}: {unmapped[0][1]})"
            )
        return genes + [r.key for r in records if r.gene and r.problem]

    def compute_chunk(self, ids: list[str]) -> Batch:
        p = self.params
        records = self._records(keep_sequences=True)
        invalid = {r.key: r for r in records if r.gene and r.problem}
        isoforms: dict[str, list[_Record]] = {}
        for r in records:
            if r.gene:
                isoforms.setdefault(r.gene, []).append(r)
        failed: dict[str, str] = {}
        owners, texts = [], []
        for entity in ids:
            if entity in invalid:
                failed[entity] = f"FASTA record {invalid[entity].rid}: {invalid[entity].problem}"
                continue
            found = isoforms.get(entity, [])
            distinct = list(dict.fromkeys(r.sequence for r in found if r.problem is None))
            if not distinct:
                failed[entity] = (
                    "no valid isoform: " + "; ".join(f"{r.rid}: {r.problem}" for r in found)
                    if found
                    else "no record in the FASTA file"
                )
            owners += [entity] * len(distinct)
            texts += distinct
        if not texts:
            return Batch.empty(0, failed)
        sm = load_model(p.model_path, self.ctx.device, who=self.name, example=EXAMPLE, dtype=p.dtype)
        if sm.is_t5:  # ProtT5's input: space-separated residues, rare amino acids as X
            texts = [" ".join(_RARE.sub("X", t)) for t in texts]
        tokens = sm.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        size = window_size(sm, p.max_residues, who=self.name, param="max_residues")
        vectors = embed_tokens(
            sm,
            tokens,
            size=size,
            stride=p.stride or size,
            layer=p.layer,
            max_tokens=p.max_tokens,
            device=self.ctx.device,
        )
        genes = list(dict.fromkeys(owners))
        row = {g: i for i, g in enumerate(genes)}
        sums, counts = np.zeros((len(genes), vectors.shape[1])), np.zeros(len(genes))
        np.add.at(sums, [row[g] for g in owners], vectors)
        np.add.at(counts, [row[g] for g in owners], 1)
        return Batch(genes, sums / counts[:, None], failed)
