"""What a fine-tuned cell model reads, per input encoding (see :mod:`pertstore.producers.expression._fm_adapters`).

- **dense** (AIDO.Cell-style, every gene at its own position): In-Silico KO sets the perturbed gene's
  value in the mean control profile to ``mask_value``; Indexing reads position ``g`` of each cell.
- **token** (``geneformer``, ``scgpt``: a cell is the tokens of the genes it expresses): In-Silico KO
  acts on the tokenised mean control profile. scGPT's tokens carry values: the perturbed gene's becomes
  bin 0 (a zero count), the dense formulation's mask. Geneformer's carry only their rank: the gene's
  token is deleted (Geneformer's in silico deletion: later tokens move up one place, a pad token fills
  the end), so the model gives no value for the perturbed gene itself, which keeps the train mean.
  Indexing averages the hidden state at the gene's token over the control cells whose sequence holds
  it. A gene has no state where no sequence holds it (not expressed, or cut by ``max_length``):
  :meth:`coverable` says which genes the model can speak for, and the evaluator gives the others the
  train mean, counted in its coverage.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class DenseInputs:
    """Dense cells ``[cells, G]`` (log1p of counts per 10,000, in the model's gene order)."""

    def __init__(self, cells: np.ndarray, device: str, mask_value: float) -> None:
        self.cells = torch.as_tensor(cells, dtype=torch.float32, device=device)
        self.profile = self.cells.mean(dim=0)
        self.mask_value = mask_value
        self.n_cells = len(self.cells)

    def coverable(self, mode: str) -> np.ndarray:
        return np.ones(self.cells.shape[1], dtype=bool)

    def knocked_out(self, model, genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``[n, G, d]`` of the mean profile with ``genes[i]`` masked, and each token's gene."""
        x = isko_input(self.profile, genes, self.mask_value)
        where = torch.arange(x.shape[1], device=x.device).expand(len(genes), -1)
        return model(values=x).last_hidden_state, where

    def gene_states(self, model, genes: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over ``cells`` of the state at each of ``genes`` ``[n, d]``, and how many cells gave one ``[n]``."""
        hidden = model(values=self.cells[cells]).last_hidden_state
        return hidden[:, genes].sum(dim=0), torch.full((len(genes),), float(len(cells)), device=hidden.device)


class TokenInputs:
    """Token cells: the adapter's encoding of each control cell and of their mean profile."""

    def __init__(self, adapter, cells: np.ndarray, device: str, seed: int) -> None:
        counts = np.expm1(np.asarray(cells, dtype=np.float64))  # back to counts per 10,000
        measured = np.ones(counts.shape[1], dtype=bool)
        rng = np.random.default_rng(seed)  # scGPT's ties between bins are split at random
        profile = adapter.encode(sp.csr_matrix(counts.mean(axis=0, keepdims=True)), measured, rng)
        each = adapter.encode(sp.csr_matrix(counts), measured, rng)
        self.pads = adapter.pads
        self.profile = {k: v.to(device) for k, v in profile.inputs.items()}
        self.profile_genes = profile.genes.to(device)
        self.cells = {k: v.to(device) for k, v in each.inputs.items()}
        self.cell_genes = each.genes.to(device)
        self.n_genes = len(adapter.genes)
        self.n_cells = counts.shape[0]

    def coverable(self, mode: str) -> np.ndarray:
        """Model genes with a token: in the mean profile (``isko``) or in some control cell (``indexing``)."""
        tokens = (self.profile_genes if mode == "isko" else self.cell_genes).cpu().numpy()
        out = np.zeros(self.n_genes, dtype=bool)
        out[tokens[tokens >= 0]] = True
        return out

    def knocked_out(self, model, genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``[n, T, d]`` of the mean profile with ``genes[i]`` knocked out, and each
        token's gene (-1: special or pad). With values (scGPT), the gene's value becomes bin 0, a
        zero count's; without (Geneformer), its token is deleted."""
        base = self.profile_genes[0]
        n, length = len(genes), len(base)
        hit = base[None, :] == genes[:, None]
        column = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), length)  # length: the gene has no token
        if "values" in self.profile:
            inputs = {k: v.expand(n, -1) for k, v in self.profile.items()}
            inputs["values"] = inputs["values"].masked_fill(hit, 0)
            return model(**inputs).last_hidden_state, base.expand(n, -1)
        j = torch.arange(length, device=base.device).expand(n, -1)
        index = (j + (j >= column[:, None]).long()).clamp(max=length - 1)
        padded = (j == length - 1) & (column[:, None] < length)
        inputs = {k: _delete(v.expand(n, -1), index, padded, self.pads[k]) for k, v in self.profile.items()}
        return model(**inputs).last_hidden_state, _delete(base.expand(n, -1), index, padded, -1)

    def gene_states(self, model, genes: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over ``cells`` of the state at each of ``genes``' tokens ``[n, d]``, and how many tokens gave one."""
        hidden = model(**{k: v[cells] for k, v in self.cells.items()}).last_hidden_state
        at = (self.cell_genes[cells][None] == genes[:, None, None]).to(hidden.dtype)  # [n, cells, tokens]
        return torch.einsum("nct,ctd->nd", at, hidden), at.sum(dim=(1, 2))


def _delete(x: torch.Tensor, index: torch.Tensor, padded: torch.Tensor, pad: float) -> torch.Tensor:
    return x.gather(1, index).masked_fill(padded, pad)


def isko_input(profile: torch.Tensor, genes: torch.Tensor, mask_value: float = 0.0) -> torch.Tensor:
    """``[len(genes), G]`` copies of the mean control ``profile`` ``[G]``, row i with gene ``genes[i]`` masked."""
    x = profile.unsqueeze(0).repeat(len(genes), 1)
    x[torch.arange(len(genes)), genes] = mask_value
    return x


def cell_inputs(adapter, cells: np.ndarray, device: str, *, mask_value: float, seed: int):
    """The inputs object for ``adapter``'s encoding (``dense`` or a token encoding)."""
    if adapter.name == "dense":
        return DenseInputs(cells, device, mask_value)
    return TokenInputs(adapter, cells, device, seed)
