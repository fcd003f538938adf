"""``go-vae``: GenotypeVAE-style gene embeddings, a VAE on binary GO-annotation vectors.

Each gene is a binary vector over GO terms (annotations, optionally propagated to ancestor terms
through ``is_a``/``part_of``; terms kept when at least ``min_genes`` genes carry them). A VAE
(encoder ``terms -> hidden -> (mu, log var)``, decoder ``latent -> hidden -> terms`` logits;
loss: Bernoulli reconstruction summed over terms plus ``beta`` x KL to N(0, I)) is trained on all
annotated genes; a gene's embedding is its posterior mean ``mu``. Genes of the registry without an
annotation (after filtering) are failures. Deterministic under ``seed`` on CPU.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pertstore.producers._base import Batch, Producer
from pertstore.producers.graph._seeding import seeded
from pertstore.producers.knowledge._go import gene_term_matrix, read_annotations, read_parents


class GOVAEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent: int = Field(128, ge=1, le=2048)
    hidden: int = Field(512, ge=1)
    ontologies: list[str] = Field(default_factory=lambda: ["BP", "MF", "CC"])
    exclude_evidence: list[str] = Field(default_factory=lambda: ["ND"])
    """Evidence codes to drop (ND: no biological data, an annotation to the ontology's root)."""
    propagate: bool = True
    """Annotate genes to every ancestor of their terms (needs the ``terms`` input)."""
    min_genes: int = Field(20, ge=1)
    beta: float = Field(1.0, ge=0)
    epochs: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)
    gene_types: list[str] = Field(default_factory=lambda: ["protein-coding"])
    """Registered gene types to embed (empty: every registered gene)."""
    seed: int = 0


class VAE(nn.Module):
    """A two-layer Bernoulli VAE."""

    def __init__(self, n_in: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, n_in))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def loss(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """Negative ELBO per gene: reconstruction (BCE summed over terms) + ``beta`` KL."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = nn.functional.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (recon + beta * kl) / len(x)


def train_vae(matrix: sp.csr_matrix, params: GOVAEParams) -> np.ndarray:
    """Posterior means ``[genes, latent]`` of a VAE trained on the binary rows of ``matrix``."""
    with seeded(params.seed):
        model = VAE(matrix.shape[1], params.hidden, params.latent)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        order = torch.Generator().manual_seed(params.seed)
        model.train()
        for _ in range(params.epochs):
            for batch in torch.randperm(matrix.shape[0], generator=order).split(params.batch_size):
                x = torch.from_numpy(matrix[batch.numpy()].toarray())
                optimizer.zero_grad()
                model.loss(x, params.beta).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            rows = [model.encode(torch.from_numpy(matrix[i: i + 4096].toarray()))[0]
                    for i in range(0, matrix.shape[0], 4096)]
        return torch.cat(rows).numpy()


class GOVAEProducer(Producer):
    """VAE embeddings of genes' GO annotations (posterior means)."""

    name = "go-vae"
    kind = "gene"
    Params = GOVAEParams
    inputs = {"annotations": "file", "terms": "file"}
    chunked = False
    description = "VAE (latent 128) on binary GO-annotation vectors, propagated to ancestors; posterior means"

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
        failed = {g: "no GO annotation" if g in without else f"no GO term with >= {p.min_genes} genes"
                  for i, g in enumerate(genes) if matrix.indptr[i + 1] == matrix.indptr[i]}
        values = train_vae(matrix[annotated], p)
        return Batch([genes[i] for i in annotated], values.astype(np.float32), failed)
