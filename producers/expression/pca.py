"""``control-pca``: PCA of the control cells of one context, genes as samples (the paper's PCA baseline)."""

from __future__ import annotations

import numpy as np
from pertstore.producers._base import Batch, Producer
from pertstore.producers.expression._cells import CellSelection, open_control_cells
from pertstore.producers.expression._pca import gene_pca
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError


class ControlPCAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims: int = Field(128, ge=1, le=4096)
    control_column: str | None = "is_control"
    """obs column marking control cells (None: every cell is a control)."""
    control_value: str = "True"
    context_column: str | None = None
    """obs column holding the cell line; its value for this set is the recipe's context."""
    gene_column: str | None = None
    """var column with gene ids (default: the var index)."""
    layer: str | None = None
    min_cells: int = Field(50, ge=2)
    method: str = Field("auto", pattern="^(auto|exact|randomized)$")
    block_cells: int = Field(1024, ge=16)
    cache_mb: int = Field(2048, ge=0)
    """Randomized PCA: control cells whose sparse float32 copy fits in this many MB are read once
    and kept in memory between passes; larger inputs are streamed from the file on every pass."""
    seed: int = 0


class ControlPCAProducer(Producer):
    """Gene embeddings from the PCA of a context's control cells (normalised to 1e4, log1p).

    Streams the cells of a backed h5ad block by block, so files larger than memory work; whole
    numbers are taken as counts and normalised, log1p data is used as it is (see ``_cells.py``).
    Genes that resolve to no entity, or to an entity another column already gave, are recorded
    as failed.
    """

    name = "control-pca"
    kind = "gene"
    Params = ControlPCAParams
    inputs = {"cells": "file"}
    chunked = False
    description = "PCA (genes as samples) of the control cells of one context"

    def compute(self) -> Batch:
        p = self.params
        if p.context_column and not self.ctx.context:
            raise InvalidInputError(
                f"producer {self.name}: context_column {p.context_column!r} needs the recipe's context"
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
            dims = min(p.dims, cells.n_genes, cells.n_cells)  # fewer genes or cells than dims: fewer components
            result = gene_pca(
                lambda: cells.blocks(p.block_cells),
                cells.n_genes,
                dims,
                method=p.method,
                seed=p.seed,
                cache_bytes=p.cache_mb * 2**20,
            )
        finally:
            cells.close()
        res = self.ctx.resolve(cells.genes, "gene")
        ids, rows, failed = [], [], {}
        seen: set[str] = set()
        for row, (gene, entity) in enumerate(zip(cells.genes, res.ids)):
            if entity is None:
                failed[gene] = "ambiguous gene id" if gene in res.ambiguous else "gene id not in the registry"
            elif entity in seen:
                failed[f"{gene} (column {row})"] = f"a second column for entity {entity}"
            else:
                seen.add(entity)
                ids.append(entity)
                rows.append(row)
        return Batch(ids, result.scores[rows].astype(np.float32), failed)
