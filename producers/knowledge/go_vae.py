"""``go-vae``: gene embeddings from a VAE on binary GO-annotation vectors, as PerturbNet's GenotypeVAE.

Each gene is a binary vector over GO terms (annotations, optionally propagated to ancestor terms
through ``is_a``/``part_of``; terms kept when at least ``min_genes`` genes carry them). The VAE
follows ``welch-lab/PerturbNet`` (``perturbnet/genotypevae/genotypeVAE.py``, ``GenotypeVAE_Customize``
and ``GenotypeVAETrain.train_np``):

- encoder ``terms -> 512 -> 256`` and decoder ``latent -> 256 -> 512 -> terms``, each hidden layer
  ``Linear -> BatchNorm -> LeakyReLU(0.2) -> Dropout(0.2)``; two linear heads give ``mu`` and
  ``log var``; the decoder ends in a sigmoid;
- reparameterisation with damped noise ``z = mu + exp(log var / 2) * 0.01 * eps``;
- loss summed over the batch: binary cross-entropy summed over terms plus ``beta`` (1) x KL to N(0, I);
- Adam, lr 1e-4, batch 128; genes split 80:20 (seed 123), training steps draw random training genes
  and, with probability 0.5, use the element-wise OR of two random batches (two-gene perturbations).

A gene's embedding is its posterior mean ``mu`` in evaluation mode (BatchNorm running statistics,
no dropout), for every annotated gene (held-out genes included). Deterministic under ``seed`` on CPU.
"""

from __future__ import annotations

import logging
import math
from itertools import pairwise

import numpy as np
import scipy.sparse as sp
import torch
from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._seeding import seeded
from pertstore.producers.knowledge._go import gene_term_matrix, read_annotations, read_parents
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pertstore.errors import InvalidInputError

log = logging.getLogger(__name__)


class GOVAEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent: int = Field(256, ge=1, le=4096)
    """Latent size (the paper's set ``GenotypeVAE_(D=256)``; PerturbNet's fixed ``GenotypeVAE`` uses 10)."""
    hidden: list[int] = Field(default_factory=lambda: [512, 256], min_length=1)
    """Encoder layer sizes; the decoder mirrors them (PerturbNet: 512, 256)."""
    negative_slope: float = Field(0.2, ge=0)
    """LeakyReLU slope."""
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_norm: bool = True
    noise_scale: float = Field(1e-2, gt=0)
    """Scale of the reparameterisation noise (PerturbNet draws ``1e-2 * N(0, 1)``)."""
    beta: float = Field(1.0, ge=0)
    """Weight of the KL term."""
    epochs: int = Field(300, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    """Optimiser steps per epoch (default: training genes / batch size, rounded up)."""
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(128, ge=2)
    or_probability: float = Field(0.5, ge=0, le=1)
    """Probability that a step trains on the OR of two random batches."""
    holdout: float = Field(0.2, ge=0, lt=1)
    """Fraction of genes held out of training (their validation loss is logged; they are embedded)."""
    split_seed: int = 123
    ontologies: list[str] = Field(default_factory=lambda: ["BP", "MF", "CC"])
    exclude_evidence: list[str] = Field(default_factory=lambda: ["ND"])
    """Evidence codes to drop (ND: no biological data, an annotation to the ontology's root)."""
    propagate: bool = True
    """Annotate genes to every ancestor of their terms (needs the ``terms`` input)."""
    min_genes: int = Field(20, ge=1)
    gene_types: list[str] = Field(default_factory=lambda: ["protein-coding"])
    """Registered gene types to embed (empty: every registered gene)."""
    seed: int = 0


def _block(n_in: int, n_out: int, p: GOVAEParams) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if p.batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    return layers + [nn.LeakyReLU(p.negative_slope), nn.Dropout(p.dropout)]


class GenotypeVAE(nn.Module):
    """PerturbNet's GenotypeVAE with configurable sizes: a Bernoulli VAE with damped sampling noise."""

    def __init__(self, n_in: int, p: GOVAEParams) -> None:
        super().__init__()
        sizes = [n_in, *p.hidden]
        self.encoder = nn.Sequential(*[m for a, b in pairwise(sizes) for m in _block(a, b, p)])
        self.mu = nn.Linear(sizes[-1], p.latent)
        self.logvar = nn.Linear(sizes[-1], p.latent)
        back = [p.latent, *reversed(p.hidden)]
        self.decoder = nn.Sequential(
            *[m for a, b in pairwise(back) for m in _block(a, b, p)], nn.Linear(back[-1], n_in), nn.Sigmoid()
        )
        self.noise_scale = p.noise_scale
        self.beta = p.beta

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Term probabilities, ``mu`` and ``log var``; ``eps`` is the standard normal draw (default: fresh)."""
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu) if eps is None else eps
        z = mu + torch.exp(0.5 * logvar) * (self.noise_scale * eps)
        return self.decoder(z), mu, logvar

    def loss(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """PerturbNet's ``vae_loss``: BCE summed over terms and genes plus ``beta`` x the summed KL."""
        probs, mu, logvar = self(x, eps)
        recon = nn.functional.binary_cross_entropy(probs, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return recon + self.beta * kl


def training_rows(
    rng: np.random.Generator, n_train: int, batch_size: int, or_probability: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices of one step: ``(first, second)`` to OR together, or ``(rows, None)``; drawn without replacement."""
    if rng.random() < or_probability and n_train >= 4:
        b = min(batch_size, n_train // 2)
        rows = rng.choice(n_train, 2 * b, replace=False)
        return rows[:b], rows[b:]
    return rng.choice(n_train, min(batch_size, n_train), replace=False), None


def _dense(matrix: sp.csr_matrix, rows: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(matrix[rows].toarray()).to(device)


def train_vae(matrix: sp.csr_matrix, params: GOVAEParams, device: str = "cpu") -> np.ndarray:
    """Posterior means ``[genes, latent]`` of a GenotypeVAE trained on the binary rows of ``matrix``."""
    p = params
    n = matrix.shape[0]
    order = np.random.RandomState(p.split_seed).permutation(n)
    n_train = n - round(n * p.holdout) if p.holdout else n
    if n_train < 2:
        raise InvalidInputError(f"go-vae: {n} annotated genes leave {n_train} for training; BatchNorm needs 2")
    train, held = matrix[order[:n_train]].tocsr(), matrix[order[n_train:]].tocsr()
    steps = p.steps_per_epoch or math.ceil(n_train / p.batch_size)
    with seeded(p.seed):
        model = GenotypeVAE(matrix.shape[1], p).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
        rng = np.random.default_rng(p.seed)
        model.train()
        for _ in range(p.epochs):
            for _ in range(steps):
                first, second = training_rows(rng, n_train, p.batch_size, p.or_probability)
                x = _dense(train, first, device)
                if second is not None:
                    x = torch.maximum(x, _dense(train, second, device))
                optimizer.zero_grad()
                model.loss(x).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            if held.shape[0]:
                val = sum(
                    float(model.loss(_dense(held, np.arange(i, min(i + 4096, held.shape[0])), device)))
                    for i in range(0, held.shape[0], 4096)
                )
                log.info(
                    "go-vae: validation loss %.3f per held-out gene (%d genes)", val / held.shape[0], held.shape[0]
                )
            rows = [
                model.encode(_dense(matrix, np.arange(i, min(i + 4096, n)), device))[0].cpu() for i in range(0, n, 4096)
            ]
        return torch.cat(rows).numpy()


class GOVAEProducer(Producer):
    """GenotypeVAE embeddings of genes' GO annotations (posterior means)."""

    name = "go-vae"
    kind = "gene"
    Params = GOVAEParams
    inputs = {"annotations": "file", "terms": "file"}
    chunked = False
    code_version = "2"
    description = "PerturbNet GenotypeVAE (512-256, latent 256) on binary GO-annotation vectors; posterior means"

    @classmethod
    def libraries(cls) -> dict[str, str]:
        return {"torch": torch.__version__}

    def _genes(self) -> list[str]:
        reg = self.ctx.registry("gene")
        if self.params.gene_types:
            reg = reg[reg["gene_type"].isin(self.params.gene_types)]
        return reg["entity_id"].astype(str).tolist()

    def compute(self) -> Batch:
        p = self.params
        pairs = read_annotations(self.ctx.path("annotations"), p.ontologies, p.exclude_evidence)
        ids = pairs.entrez_id.unique().tolist()
        mapping = dict(zip(ids, self.ctx.resolve(ids, "gene").ids))
        pairs = pairs.assign(gene=pairs.entrez_id.map(mapping)).dropna(subset=["gene"])
        genes = self._genes()
        parents = read_parents(self.ctx.path("terms")) if p.propagate else None
        matrix, _ = gene_term_matrix(pairs[["gene", "go_id"]], genes, parents, p.min_genes)
        annotated = np.flatnonzero(matrix.getnnz(axis=1) > 0)
        without = set(genes) - set(pairs.gene)
        failed = {
            g: "no GO annotation" if g in without else f"no GO term with >= {p.min_genes} genes"
            for i, g in enumerate(genes)
            if matrix.indptr[i + 1] == matrix.indptr[i]
        }
        values = train_vae(matrix[annotated], p, self.ctx.device)
        return Batch([genes[i] for i in annotated], values.astype(np.float32), failed)
