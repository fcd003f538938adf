"""Contextual gene embeddings streamed from a foundation model, at memory independent of the cells.

Control cells are read ``batch_cells`` at a time from the backed file, encoded by an adapter and
passed through the model; the hidden state of every token that encodes a gene is added to that
gene's running sum (``index_add_``) and the gene's count goes up by one. A gene's embedding is its
sum over its count: for a fixed gene set (dense models) the mean over all cells, for variable gene
sets (scGPT's expressed genes, Geneformer's top ranks) the mean over the cells that encoded it.
Only one ``[batch, tokens, d]`` block of hidden states exists at a time, never
``[cells, genes, d]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from pertstore.producers.expression._cells import ControlCells
from pertstore.producers.expression._fm_adapters import CellModelAdapter


@dataclass
class GeneSums:
    """Per-gene sums of hidden states and how many cells encoded each gene."""

    sums: np.ndarray
    counts: np.ndarray
    n_cells: int

    def means(self) -> np.ndarray:
        """``sums / counts`` (NaN rows for genes no cell encoded)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]


def column_map(n_file_genes: int, pairs: list[tuple[int, int]], n_model_genes: int) -> sp.csr_matrix:
    """A 0/1 matrix taking file columns onto model genes: ``block @ map`` is ``[cells, model genes]``."""
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_file_genes, n_model_genes))


def normalised_counts(raw: sp.csr_matrix, scale: str, target_sum: float = 1e4) -> sp.csr_matrix:
    """Counts per ``target_sum`` of each cell's total over all its genes (log1p data: ``expm1``)."""
    if scale == "log1p":
        out = raw.copy()
        np.expm1(out.data, out=out.data)
        return out
    totals = np.asarray(raw.sum(axis=1)).ravel()
    factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = raw.copy()
    out.data *= np.repeat(factor, np.diff(out.indptr))
    return out


def stream_gene_sums(
    cells: ControlCells,
    adapter: CellModelAdapter,
    to_model: sp.csr_matrix,
    *,
    layer: int,
    batch_cells: int,
    device: str,
    seed: int = 0,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> GeneSums:
    """Sum the ``layer`` states of every encoded gene over the control cells of ``cells``.

    ``to_model`` maps the file's gene columns onto the adapter's genes (:func:`column_map`).
    """
    n_genes, d = len(adapter.genes), adapter.hidden_size
    sums = torch.zeros((n_genes, d), dtype=torch.float64, device=device)
    counts = torch.zeros(n_genes, dtype=torch.int64, device=device)
    measured = np.asarray(to_model.sum(axis=0)).ravel() > 0
    rng = np.random.default_rng(seed)
    blocks: Iterable[sp.csr_matrix] = cells.raw_blocks(batch_cells)
    if progress is not None:
        blocks = progress(blocks, -(-cells.n_cells // batch_cells))
    for raw in blocks:
        cp10k = sp.csr_matrix(normalised_counts(raw, cells.scale, cells.target_sum) @ to_model)
        cp10k.sort_indices()
        encoded = adapter.encode(cp10k, measured, rng)
        encoded.inputs = {k: v.to(device) for k, v in encoded.inputs.items()}
        hidden = adapter.hidden(encoded, layer)
        genes = encoded.genes.to(device)
        keep = genes >= 0
        sums.index_add_(0, genes[keep], hidden[keep].double())
        counts += torch.bincount(genes[keep], minlength=n_genes)
    return GeneSums(sums.cpu().numpy(), counts.cpu().numpy(), cells.n_cells)
