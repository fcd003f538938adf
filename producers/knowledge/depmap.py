"""``depmap``: a gene's column of a DepMap cell-line x gene effect matrix (e.g. CRISPRGeneEffect.csv).

The file is a CSV (or parquet) as DepMap publishes it: the first column holds cell-line ids
(``ModelID``), every other column is a gene headed ``SYMBOL (ENTREZ)``. A column is resolved to a
canonical gene by its Entrez id, else by its symbol; the embedding of a gene is its column (one
dimension per cell line, in the file's row order). Missing values: a gene missing in more than
``max_missing`` of the cell lines is a failure; otherwise its missing entries are filled with the
gene's mean over the other cell lines. With ``standardize`` each column is centred and scaled to
unit variance first. Columns that resolve to no gene, or to a gene an earlier column already took,
are failures keyed by their header.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pertstore.producers._base import Batch, Producer
from pydantic import BaseModel, ConfigDict, Field

from pertstore.errors import InvalidInputError

HEADER = re.compile(r"^\s*(?P<symbol>[^()]*?)\s*(?:\((?P<entrez>\d+)\))?\s*$")


class DepMapParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    standardize: bool = False
    """Centre and scale each gene's column over the cell lines."""
    max_missing: float = Field(0.2, ge=0, le=1)
    """Largest fraction of cell lines a gene may miss; its missing values get the gene's mean."""


def read_effects(path: str | Path) -> pd.DataFrame:
    """The effect matrix: cell lines as the index, one float column per gene header."""
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise InvalidInputError(f"{path}: not a readable CSV/parquet effect matrix: {e}") from e
    if table.shape[1] < 2:
        raise InvalidInputError(f"{path}: expected a cell-line id column and gene columns, got {list(table.columns)}")
    table = table.set_index(table.columns[0])
    if table.index.duplicated().any():
        dup = sorted(set(table.index[table.index.duplicated()]))[:5]
        raise InvalidInputError(f"{path}: duplicate cell-line ids {dup}")
    for col in table.columns:
        if not pd.api.types.is_numeric_dtype(table[col]):
            bad = table.index[pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()]
            raise InvalidInputError(f"{path}: column {col!r} has non-numeric values (cell line {bad[0]!r})")
    return table.astype(np.float64)


def parse_header(header: str) -> tuple[str, str | None]:
    """``"TP53 (7157)"`` -> ``("TP53", "7157")``; a bare symbol -> ``(symbol, None)``."""
    m = HEADER.match(str(header))
    return (m["symbol"], m["entrez"]) if m else (str(header), None)


def gene_vectors(x: np.ndarray, standardize: bool) -> np.ndarray:
    """Rows ``[genes, cell lines]`` with missing values set to the gene's mean, optionally standardised."""
    if not len(x):
        return x
    x = np.where(np.isnan(x), np.nanmean(x, axis=1, keepdims=True), x)
    if standardize:
        std = x.std(axis=1, keepdims=True)
        x = (x - x.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    return x


class DepMapProducer(Producer):
    """Columns of a DepMap gene-effect matrix as gene embeddings."""

    name = "depmap"
    kind = "gene"
    Params = DepMapParams
    inputs = {"effects": "file"}
    chunked = False
    description = "a gene's column of a DepMap cell-line x gene effect matrix"

    def _resolve(self, headers: list[str]) -> list[str | None]:
        parsed = [parse_header(h) for h in headers]
        by_entrez = self.ctx.resolve([e or "" for _, e in parsed], "gene").ids
        by_symbol = self.ctx.resolve([s for s, _ in parsed], "gene").ids
        return [e if (entrez and e) else s for (_, entrez), e, s in zip(parsed, by_entrez, by_symbol)]

    def compute(self) -> Batch:
        table = read_effects(self.ctx.path("effects"))
        values = table.to_numpy()
        failed: dict[str, str] = {}
        ids, cols, taken = [], [], set()
        for j, (header, entity) in enumerate(zip(table.columns, self._resolve(list(table.columns)))):
            missing = np.isnan(values[:, j]).mean()
            if entity is None:
                failed[str(header)] = f"column {header!r}: not in the gene registry"
            elif entity in taken:
                failed[str(header)] = f"column {header!r}: {entity} already taken by an earlier column"
            elif missing > self.params.max_missing or missing == 1:
                limit = self.params.max_missing
                failed[entity] = f"column {header!r}: {missing:.0%} of cell lines missing (> {limit:.0%})"
            else:
                ids.append(entity)
                cols.append(j)
            taken.add(entity)
        x = gene_vectors(values[:, cols].T, self.params.standardize)
        return Batch(ids, x.astype(np.float32).reshape(len(ids), values.shape[0]), failed)
