"""The fusion network: attention over one token per available embedding source.

Simple fusion (the paper): each source's embedding goes through its own ``Linear(d_s, d)`` and
dropout; a learnable cell-line vector (LayerNorm, dropout) is added to every token (or joins as a
token of its own); a CLS token is prepended; a transformer encoder attends with a key-padding mask so
missing sources are ignored, never zero-filled; a head on the CLS output predicts every gene.

Full fusion adds the options the paper's authors explored: a learned gate per source token, a final
layer in which only the CLS token attends, modality dropout during training, and a reconstruction
loss that decodes each token back to its source embedding.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pertstore.errors import InvalidInputError


class FusionConfig(BaseModel):
    """Architecture and training settings (defaults: the paper's simple fusion)."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(100, ge=5)
    n_heads: int = Field(5, ge=1)
    depth: int = Field(2, ge=1, le=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    context_injection: Literal["add", "token"] = "add"
    task: Literal["lfc", "deg"] = "lfc"
    # full fusion
    gated: bool = False
    cls_only_layer: bool = False
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    reconstruction_weight: float = Field(0.0, ge=0.0)
    # training
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(10, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    @classmethod
    def full(cls, **overrides) -> "FusionConfig":
        """The full-fusion variant: gating, CLS-only last layer, modality dropout, reconstruction."""
        base = dict(gated=True, cls_only_layer=True, modality_dropout=0.1, reconstruction_weight=0.1)
        return cls(**{**base, **overrides})


class _ClsOnlyLayer(nn.Module):
    """A final attention layer whose only query is the CLS token."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        cls = tokens[:, :1]
        out, _ = self.attn(cls, tokens, tokens, key_padding_mask=pad, need_weights=False)
        cls = self.norm1(cls + out)
        return self.norm2(cls + self.ff(cls))[:, 0]


class FusionModel(nn.Module):
    """Predicts a response vector per perturbation from any subset of embedding sources."""

    def __init__(self, source_dims: list[int], n_contexts: int, n_genes: int, config: FusionConfig) -> None:
        super().__init__()
        if config.d_model % config.n_heads:
            raise InvalidInputError(f"d_model {config.d_model} must be divisible by n_heads {config.n_heads}")
        self.config = config
        self.source_dims = list(source_dims)
        d = config.d_model
        self.project = nn.ModuleList(nn.Linear(dim, d) for dim in source_dims)
        self.source_dropout = nn.Dropout(config.dropout)
        self.context = nn.Sequential(nn.Embedding(n_contexts, d), nn.LayerNorm(d), nn.Dropout(config.dropout))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.cls, std=0.02)
        self.gate = nn.ModuleList(nn.Linear(d, 1) for _ in source_dims) if config.gated else None
        layer = nn.TransformerEncoderLayer(d, config.n_heads, dim_feedforward=4 * d, dropout=config.dropout,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.cls_layer = _ClsOnlyLayer(d, config.n_heads, config.dropout) if config.cls_only_layer else None
        out = n_genes * 3 if config.task == "deg" else n_genes
        self.head = nn.Linear(d, out)
        self.n_genes = n_genes
        self.reconstruct = (nn.ModuleList(nn.Linear(d, dim) for dim in source_dims)
                            if config.reconstruction_weight > 0 else None)

    def forward(self, sources: list[torch.Tensor], present: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``sources[s]``: ``[batch, d_s]``; ``present``: ``[batch, S]`` bool; ``context``: ``[batch]`` long.

        Returns the prediction (``[batch, genes]``, or ``[batch, genes, 3]`` logits for DEG) and
        the source tokens (for the reconstruction loss).
        """
        if not bool(present.any(dim=1).all()):
            raise InvalidInputError("a perturbation has no embedding from any source; fusion needs at least one")
        present = present.clone()
        if self.training and self.config.modality_dropout > 0:
            drop = torch.rand(present.shape, device=present.device) < self.config.modality_dropout
            keep_one = present & ~drop
            # never drop every source of a perturbation
            present = torch.where(keep_one.any(dim=1, keepdim=True), keep_one, present)
        tokens = torch.stack([self.source_dropout(proj(x)) for proj, x in zip(self.project, sources)], dim=1)
        if self.gate is not None:
            gates = torch.cat([torch.sigmoid(g(tokens[:, i])) for i, g in enumerate(self.gate)], dim=1)
            tokens = tokens * gates.unsqueeze(-1)
        ctx = self.context(context).unsqueeze(1)
        batch = tokens.shape[0]
        cls = self.cls.expand(batch, -1, -1)
        pad = ~present
        if self.config.context_injection == "add":
            seq = torch.cat([cls, tokens], dim=1) + ctx
            pad = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        else:
            seq = torch.cat([cls, ctx, tokens], dim=1)
            pad = torch.cat([torch.zeros(batch, 2, dtype=torch.bool, device=pad.device), pad], dim=1)
        hidden = self.encoder(seq, src_key_padding_mask=pad)
        pooled = self.cls_layer(hidden, pad) if self.cls_layer is not None else hidden[:, 0]
        out = self.head(pooled)
        if self.config.task == "deg":
            out = out.view(batch, self.n_genes, 3)
        return out, tokens
