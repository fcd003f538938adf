"""``scfm`` and ``scfm-positional``: gene embeddings from single-cell foundation models.

``scfm`` (one set per context): the control cells of the context stream through the model
(``_fm_stream``) and each gene's embedding is the mean of its contextual hidden states over the
cells that encoded it. ``scfm-positional``: the model's own input embedding of each gene (no cells).
Checkpoints are local directories in transformers format; see ``docs/models.md`` for scGPT,
Geneformer and AIDO.Cell-style models. Model genes are matched to the file's genes through the
gene registry (symbols, Ensembl ids and aliases alike).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from pertstore.producers._base import Batch, Producer
from pertstore.producers.expression._cells import CellSelection, open_control_cells
from pertstore.producers.expression._fm_adapters import CellModelAdapter, load_adapter
from pertstore.producers.expression._fm_stream import column_map, stream_gene_sums
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError

log = logging.getLogger(__name__)


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(pattern="^(scgpt|geneformer|dense)$")
    """Input encoding: ``scgpt`` (vocabulary + binned values), ``geneformer`` (rank values), ``dense``."""
    model_path: str
    """Local checkpoint directory in transformers format."""
    token_dictionary: str | None = None
    """Geneformer: the token dictionary (default: the one ``token_dictionary*.pkl`` in ``model_path``)."""
    gene_medians: str | None = None
    """Geneformer: the gene median dictionary (default: ``gene_median_dictionary*.pkl`` in ``model_path``)."""


class ContextualParams(ModelParams):
    hidden_layer: int | None = None
    """Hidden state to average (index into the model's hidden states; default: the adapter's, -1 or -2)."""
    max_length: int | None = Field(None, ge=4)
    """Tokens per cell (default: the model's: scGPT 1,200, Geneformer its position limit)."""
    control_column: str | None = "is_control"
    control_value: str = "True"
    context_column: str | None = None
    gene_column: str | None = None
    layer: str | None = None
    """Data matrix: None for X, ``raw`` or a layer name (counts or log1p-normalised)."""
    min_cells: int = Field(50, ge=1)
    min_gene_cells: int = Field(1, ge=1)
    """Genes encoded in fewer control cells are recorded as failed."""
    batch_cells: int = Field(64, ge=1)
    seed: int = 0


def _resolve_model_genes(producer: Producer, adapter: CellModelAdapter) -> tuple[dict[str, int], dict[str, str]]:
    """Entity id -> model gene index, and the failures of model genes that resolve to no single entity."""
    res = producer.ctx.resolve(adapter.genes, "gene")
    entity_row, failed = {}, {}
    for row, (gene, entity) in enumerate(zip(adapter.genes, res.ids)):
        if entity is None:
            failed[gene] = (
                "model gene is ambiguous in the registry" if gene in res.ambiguous else "model gene not in the registry"
            )
        elif entity in entity_row:
            failed[f"{gene} (model gene {row})"] = f"a second model gene for entity {entity}"
        else:
            entity_row[entity] = row
    return entity_row, failed


class FMGeneProducer(Producer):
    """Contextual gene embeddings: hidden states averaged over a context's control cells."""

    name = "scfm"
    kind = "gene"
    Params = ContextualParams
    inputs = {"cells": "file"}
    chunked = False
    description = "single-cell foundation-model gene embeddings (scGPT, Geneformer, dense) over control cells"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        import torch
        import transformers

        return {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}

    def compute(self) -> Batch:
        p = self.params
        if p.context_column and not self.ctx.context:
            raise InvalidInputError(
                f"producer {self.name}: context_column {p.context_column!r} needs the recipe's context"
            )
        adapter = load_adapter(
            p.adapter,
            p.model_path,
            self.ctx.device,
            max_length=p.max_length,
            token_dictionary=p.token_dictionary,
            gene_medians=p.gene_medians,
        )
        selection = CellSelection(
            control_column=p.control_column,
            control_value=p.control_value,
            context_column=p.context_column,
            context_value=self.ctx.context or None,
            layer=p.layer,
            gene_column=p.gene_column,
        )
        cells = open_control_cells(self.ctx.path("cells"), selection)
        try:
            if cells.n_cells < p.min_cells:
                raise InvalidInputError(
                    f"{cells.path.name}: context {self.ctx.context or '(all)'} has {cells.n_cells} "
                    f"control cells; at least {p.min_cells} are needed"
                )
            entity_row, _ = _resolve_model_genes(self, adapter)  # model genes the cells lack are not candidates
            pairs, failed = self._match_columns(cells.genes, entity_row)
            if not pairs:
                raise InvalidInputError(
                    f"{cells.path.name}: none of its {cells.n_genes} genes is in the {p.adapter} model's vocabulary"
                )
            layer = adapter.default_layer if p.hidden_layer is None else p.hidden_layer
            sums = stream_gene_sums(
                cells,
                adapter,
                column_map(cells.n_genes, pairs, len(adapter.genes)),
                layer=layer,
                batch_cells=p.batch_cells,
                device=self.ctx.device,
                seed=p.seed,
                progress=self._log_progress,
            )
        finally:
            cells.close()
        means = sums.means()
        ids, rows = [], []
        measured = {model_row for _, model_row in pairs}
        for entity, row in entity_row.items():
            if row not in measured:
                continue
            if sums.counts[row] < p.min_gene_cells:
                failed[entity] = f"encoded in {sums.counts[row]} control cells (min_gene_cells {p.min_gene_cells})"
            else:
                ids.append(entity)
                rows.append(row)
        return Batch(ids, means[rows].astype(np.float32) if rows else np.zeros((0, adapter.hidden_size)), failed)

    def _match_columns(self, file_genes: list[str], entity_row: dict[str, int]):
        """(file column, model gene) pairs through the registry, and the file genes outside the vocabulary."""
        res = self.ctx.resolve(file_genes, "gene")
        pairs, failed, taken = [], {}, set()
        for col, (gene, entity) in enumerate(zip(file_genes, res.ids)):
            if entity is None:
                failed[f"{gene} (cells)"] = (
                    "ambiguous gene id" if gene in res.ambiguous else "gene id not in the registry"
                )
            elif entity not in entity_row:
                failed[f"{gene} (cells)"] = "not in the model's vocabulary"
            elif entity in taken:
                failed[f"{gene} (cells column {col})"] = f"a second column for entity {entity}"
            else:
                taken.add(entity)
                pairs.append((col, entity_row[entity]))
        return pairs, failed

    def _log_progress(self, blocks: Iterable, total: int) -> Iterable:
        step = max(1, total // 10)
        for i, block in enumerate(blocks, 1):
            yield block
            if i % step == 0 or i == total:
                log.info("%s %s: %d/%d cell batches", self.name, self.ctx.context, i, total)


class FMPositionalProducer(Producer):
    """The "positional" variant: each gene's row of the model's input embedding table."""

    name = "scfm-positional"
    kind = "gene"
    Params = ModelParams
    chunked = False
    description = "a single-cell foundation model's gene-embedding table (scGPT, Geneformer, dense)"

    libraries = FMGeneProducer.libraries

    def compute(self) -> Batch:
        p = self.params
        adapter = load_adapter(
            p.adapter, p.model_path, "cpu", token_dictionary=p.token_dictionary, gene_medians=p.gene_medians
        )
        entity_row, failed = _resolve_model_genes(self, adapter)
        table = adapter.table()
        rows = list(entity_row.values())
        return Batch(list(entity_row), table[rows], failed)
