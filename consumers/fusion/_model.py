"""The fusion network of the paper's reference code (``benchmark/fusion/model/``), one token per source.

Each source's embedding is normalised (none, L2 or z-score), projected by its own ``Linear(d_s, d)``
(optionally LayerNorm) and dropped out; tokens of absent sources are masked in attention (never
read). A cell-line vector, from a learnt embedding or from an autoencoder over the context's control
expression, is added to every token (``context_injection="add"``), joins as a token (``"token"``) or
is appended after the encoder (``"late"``, the full model). A CLS token (``randn``) is prepended and
post-LN encoder layers (FFN 2d, GELU, optional gated attention ``sigmoid(XW) * attention``) attend.
A head on the CLS output (with the cell-line vector in ``"late"``) predicts every gene.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pertstore.errors import InvalidInputError

#: The reference's tuned values (``config/essential_{lfc,deg}_simple.yaml``, ``essential_lfc_full.yaml``).
SIMPLE_LFC = dict(depth=4, lr=0.0009931092550184934, max_epochs=75)
SIMPLE_DEG = dict(depth=7, lr=4.586815929703627e-05, max_epochs=200, input_layer_norm=True, head_hidden=128)
FULL_LFC = dict(
    depth=8,
    n_heads=10,
    batch_size=32,
    lr=0.0005279141172671998,
    dropout=0.08363894748770867,
    head_layers=2,
    gated=True,
    reconstruction_weight=9.411605826543548,
    autoencoder_weight=9.560603499734986,
    modality_dropout=0.00434180445161718,
    context_injection="late",
    input_norm="zscore",
    input_dropout=0.0,
)


class FusionConfig(BaseModel):
    """Architecture and training settings; the defaults are the reference's simple LFC model."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["lfc", "deg"] = "lfc"
    d_model: int = Field(100, ge=2)
    n_heads: int = Field(5, ge=1)
    depth: int = Field(4, ge=1, le=32)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout in the encoder layers (attention, FFN) and the head."""
    use_gelu: bool = True
    xavier_init: bool = True
    gated: bool = False
    """Gated attention: ``out_proj(sigmoid(X W_g) * attention)`` (the full model)."""
    final_layer_cls: bool = False
    """Prepend the CLS token only before one last (ungated) layer."""
    context_injection: Literal["add", "token", "late"] = "add"
    """Cell line added to every token, as a token of its own, or appended after the encoder."""
    input_norm: Literal["none", "l2", "zscore"] = "none"
    """Per-source input normalisation; z-score statistics come from the training rows that have the source."""
    input_layer_norm: bool = False
    input_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout of the source tokens and of the cell-line embedding."""
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Training: each source token of each perturbation is zeroed with this probability (reference)."""
    reconstruction_weight: float = Field(0.0, ge=0.0)
    """Weight of the MSE from encoded source tokens back to the normalised inputs."""
    head_layers: int = Field(0, ge=0)
    head_hidden: int = Field(400, ge=1)
    cell_line: Literal["embedding", "autoencoder"] = "embedding"
    """``autoencoder``: the cell-line vector is the latent of an autoencoder over per-context control
    features (``FusionInputs.context_features``), trained jointly with ``autoencoder_weight``."""
    autoencoder_hidden: list[int] = Field(default_factory=lambda: [1024, 256])
    autoencoder_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    autoencoder_weight: float = Field(0.0, ge=0.0)
    autoencoder_log1p: bool = True
    """log1p before the z-score of the control features (the reference's control means are counts)."""
    # training (config/trainer/{lfc,deg}_trainer.yaml, fusion_model.py)
    lr: float = Field(SIMPLE_LFC["lr"], gt=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(75, ge=1)
    patience: int = Field(25, ge=1)
    warmup_epochs: int = Field(5, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of the training perturbations' genes (split groups) held out for early stopping."""
    val_seed: int = 42
    seed: int = 123

    @classmethod
    def simple(cls, task: str = "lfc", **overrides) -> FusionConfig:
        """The reference's simple model with its tuned values for ``task``."""
        return cls(**{**(SIMPLE_DEG if task == "deg" else SIMPLE_LFC), "task": task, **overrides})

    @classmethod
    def full(cls, task: str = "lfc", **overrides) -> FusionConfig:
        """The reference's full model (``essential_lfc_full.yaml``); the cell-line autoencoder is opt-in."""
        return cls(**{**FULL_LFC, "task": task, **overrides})

    @classmethod
    def preset(cls, variant: str = "simple", task: str = "lfc", **overrides) -> FusionConfig:
        if variant not in ("simple", "full"):
            raise InvalidInputError(f"fusion variant must be 'simple' or 'full', not {variant!r}")
        return (cls.simple if variant == "simple" else cls.full)(task, **overrides)


def _xavier(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class EncoderLayer(nn.Module):
    """Post-LN transformer layer of ``model/fusion/encoder_layer.py`` (batch first), optionally gated."""

    def __init__(self, d: int, heads: int, dropout: float, *, gated: bool, gelu: bool, xavier: bool) -> None:
        super().__init__()
        if d % heads:
            raise InvalidInputError(f"d_model {d} must be divisible by n_heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.gate_linear = nn.Linear(d, d) if gated else None
        self.ln_attn, self.ln_ffn = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU() if gelu else nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * d, d)
        )
        self.drop_attn, self.drop_ffn = nn.Dropout(dropout), nn.Dropout(dropout)
        if xavier:
            self.apply(_xavier)

    def attention(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``out_proj`` of (gated) multi-head attention; ``pad[b, j]`` masks key ``j``."""
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        mask = torch.zeros(b, 1, 1, n, dtype=x.dtype, device=x.device).masked_fill(pad[:, None, None, :], float("-inf"))
        att = F.scaled_dot_product_attention(
            split(self.q_proj(x)),
            split(self.k_proj(x)),
            split(self.v_proj(x)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        att = att.transpose(1, 2).reshape(b, n, d)
        if self.gate_linear is not None:
            att = att * torch.sigmoid(self.gate_linear(x))
        return self.out_proj(att)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = self.ln_attn(x + self.drop_attn(self.attention(x, pad)))
        return self.ln_ffn(x + self.drop_ffn(self.ffn(x)))


def _mlp(d_in: int, d_out: int, layers: int, hidden: int, dropout: float, gelu: bool) -> nn.Sequential:
    dims = [d_in] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), nn.GELU() if gelu else nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods, nn.Linear(dims[-1], d_out))


class CellLineAutoencoder(nn.Module):
    """``CellLineAutoencoderInputTransform``: z-scored (log1p) control features -> latent (L2-normalised)."""

    def __init__(self, features: torch.Tensor, latent: int, hidden: list[int], dropout: float, log1p: bool) -> None:
        super().__init__()
        self.log1p = log1p
        self.register_buffer("features", features.clone())
        x = torch.log1p(features) if log1p else features
        self.register_buffer("mean", x.mean(dim=0))
        self.register_buffer("std", x.std(dim=0).nan_to_num(0.0).clamp(min=1e-8))

        def stack(dims):
            mods: list[nn.Module] = []
            for a, b in zip(dims[:-2], dims[1:-1]):
                mods += [nn.Linear(a, b), nn.ReLU(), nn.LayerNorm(b), nn.Dropout(dropout)]
            return nn.Sequential(*mods, nn.Linear(dims[-2], dims[-1]))

        dims = [features.shape[1], *hidden, latent]
        self.encoder, self.decoder = stack(dims), stack(dims[::-1])

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, reconstruction loss)`` for the contexts of a batch."""
        x = self.features[context]
        x = ((torch.log1p(x) if self.log1p else x) - self.mean) / self.std
        z = self.encoder(x)
        loss = F.mse_loss(self.decoder(z), x)
        return z / (1e-8 + torch.linalg.norm(z, dim=1, keepdim=True)), loss


class FusionModel(nn.Module):
    """Predicts a response vector per perturbation from any subset of embedding sources."""

    def __init__(
        self,
        source_dims: list[int],
        n_contexts: int,
        n_genes: int,
        config: FusionConfig,
        context_features: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config, self.source_dims, self.n_genes = config, list(source_dims), n_genes
        d, c = config.d_model, config
        self.project = nn.ModuleList(nn.Linear(dim, d) for dim in source_dims)
        self.input_ln = nn.ModuleList(nn.LayerNorm(d) for _ in source_dims) if c.input_layer_norm else None
        self.input_dropout = nn.Dropout(c.input_dropout)
        for i, dim in enumerate(source_dims):  # z-score statistics, set by the trainer from training rows
            self.register_buffer(f"mean_{i}", torch.zeros(dim))
            self.register_buffer(f"std_{i}", torch.ones(dim))
        if c.cell_line == "autoencoder":
            if context_features is None or len(context_features) != n_contexts:
                raise InvalidInputError(
                    "the cell-line autoencoder needs control features for every context (FusionInputs.context_features)"
                )
            self.autoencoder = CellLineAutoencoder(
                context_features, d, c.autoencoder_hidden, c.autoencoder_dropout, c.autoencoder_log1p
            )
            self.cell_embedding = None
        else:
            self.autoencoder = None
            self.cell_embedding = nn.Sequential(
                nn.Embedding(n_contexts, d), nn.LayerNorm(d), nn.Dropout(c.input_dropout)
            )
        self.cls_token = nn.Parameter(torch.randn(1, d))
        layer = dict(gelu=c.use_gelu, xavier=c.xavier_init)
        self.layers = nn.ModuleList(
            EncoderLayer(d, c.n_heads, c.dropout, gated=c.gated, **layer) for _ in range(c.depth)
        )
        self.final_layer = EncoderLayer(d, c.n_heads, c.dropout, gated=False, **layer) if c.final_layer_cls else None
        late = c.context_injection == "late" and c.task == "lfc"  # the DEG head reads the CLS token only
        out = n_genes * 3 if c.task == "deg" else n_genes
        self.head = _mlp(2 * d if late else d, out, c.head_layers, c.head_hidden, c.dropout, c.use_gelu)
        if c.xavier_init:
            self.head.apply(_xavier)
        self.reconstruct = (
            nn.ModuleList(nn.Linear(d, dim) for dim in source_dims) if c.reconstruction_weight > 0 else None
        )

    def normalise(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """Source ``s``'s inputs as the model sees them (``LinearInputTransform._normalize``)."""
        if self.config.input_norm == "l2":
            return x / (1e-8 + torch.linalg.norm(x, dim=1, keepdim=True))
        if self.config.input_norm == "zscore":
            return (x - getattr(self, f"mean_{s}")) / getattr(self, f"std_{s}")
        return x

    def forward(
        self, sources: list[torch.Tensor], present: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``sources[s]``: ``[batch, d_s]``; ``present``: ``[batch, S]`` bool; ``context``: ``[batch]`` long.

        Returns the prediction (``[batch, genes]``, or ``[batch, genes, 3]`` logits for DEG) and the
        auxiliary losses of training (reconstruction, autoencoder; zero when switched off).
        """
        c = self.config
        if not bool(present.any(dim=1).all()):
            raise InvalidInputError("a perturbation has no embedding from any source; fusion needs at least one")
        normed = [torch.where(present[:, s, None], self.normalise(s, x), 0.0) for s, x in enumerate(sources)]
        tokens = []
        for s, x in enumerate(normed):
            t = self.project[s](x)
            if self.input_ln is not None:
                t = self.input_ln[s](t)
            tokens.append(self.input_dropout(t))
        tokens = torch.stack(tokens, dim=1)  # [batch, S, d]
        tokens = torch.where(present[..., None], tokens, 0.0)  # absent: masked below, and never read
        if self.training and c.modality_dropout > 0:
            keep = torch.bernoulli(torch.full((*present.shape, 1), 1.0 - c.modality_dropout, device=tokens.device))
            tokens = tokens * keep
        zero = torch.tensor(0.0)
        if self.autoencoder is not None:
            cell, ae_loss = self.autoencoder(context)
        else:
            cell, ae_loss = self.cell_embedding(context), zero
        batch = tokens.shape[0]
        no_pad = torch.zeros(batch, 1, dtype=torch.bool, device=tokens.device)
        cls = self.cls_token.expand(batch, -1)[:, None]
        seq, pad = tokens, ~present
        if c.context_injection == "token":
            seq, pad = torch.cat([seq, cell[:, None]], dim=1), torch.cat([pad, no_pad], dim=1)
        if self.final_layer is None:
            seq, pad = torch.cat([cls, seq], dim=1), torch.cat([no_pad, pad], dim=1)
        if c.context_injection == "add":
            seq = seq + cell[:, None]
        for layer in self.layers:
            seq = layer(seq, pad)
        if self.final_layer is not None:
            cls = cls + cell[:, None] if c.context_injection == "add" else cls
            seq, pad = torch.cat([cls, seq], dim=1), torch.cat([no_pad, pad], dim=1)
            seq = self.final_layer(seq, pad)
        pooled = seq[:, 0]
        if c.context_injection == "late" and c.task == "lfc":
            pooled = torch.cat([pooled, cell], dim=1)
        out = self.head(pooled)
        if c.task == "deg":
            out = out.view(batch, self.n_genes, 3)
        rec = zero
        if self.reconstruct is not None:  # encoded source tokens back to their (normalised) inputs, present rows
            losses = [
                F.mse_loss(head(seq[present[:, s], 1 + s]), normed[s][present[:, s]])
                for s, head in enumerate(self.reconstruct)
                if present[:, s].any()
            ]
            rec = torch.stack(losses).mean()
        return out, {"reconstruction": rec, "autoencoder": ae_loss}
