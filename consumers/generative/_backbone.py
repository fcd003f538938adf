"""A DiT-style conditional backbone over a PCA vector (the reference's ``models.py``, written on torch.nn).

A latent cell ``[B, C, T]`` (``T`` PCA dimensions, ``C`` channels) is read as ``T`` tokens; each block is
self-attention and an MLP under adaptive layer norm with zero-initialised gates (adaLN-Zero), modulated
by the sum of a time embedding and a projection of the perturbation's embedding.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _sincos(positions: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features ``[N, dim]`` of ``positions`` ``[N]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Scalar time -> ``[B, hidden]`` (sinusoid, then a two-layer MLP with layer norms, as the reference)."""

    def __init__(self, hidden: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(
            nn.Linear(frequencies, hidden),
            nn.LayerNorm(hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(_sincos(t, self.frequencies))


class DiTBlock(nn.Module):
    """Attention + MLP, each gated and modulated by ``c`` (time) plus ``z`` (perturbation embedding)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, cond_dim: int, cond_dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-5)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-5)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden))
        self.time_mod = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.cond_mod = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * hidden))
        self.cond_dropout = nn.Dropout(cond_dropout)

    def forward(self, x: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mod = self.time_mod(c) + self.cond_dropout(self.cond_mod(z))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=1)
        h = _modulate(self.norm1(x), shift_a, scale_a)
        x = x + gate_a.unsqueeze(1) * self.attn(h, h, h, need_weights=False)[0]
        return x + gate_m.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))


class DiT(nn.Module):
    """Conditional DiT over ``[B, in_channels, tokens]``, returning ``[B, out_channels, tokens]``.

    Parameters
    ----------
    tokens
        Length of the latent vector (the PCA dimension).
    cond_dim
        Dimension of the perturbation embedding it is conditioned on.
    hidden, depth, heads, mlp_ratio, cond_dropout
        Transformer sizes (:class:`GenerativeConfig`).
    """

    def __init__(
        self,
        tokens: int,
        cond_dim: int,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        hidden: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        cond_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.embed = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
        )
        self.register_buffer("pos", _sincos(torch.arange(tokens), hidden)[None], persistent=False)
        self.time = TimeEmbedding(hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio, cond_dim, cond_dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-5)
        self.final_time = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.final_cond = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * hidden))
        self.out = nn.Linear(hidden, out_channels)
        self._init()

    def _init(self) -> None:
        """Xavier linears, zero modulations and output (adaLN-Zero: every block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for mod in (block.time_mod, block.cond_mod):
                nn.init.zeros_(mod[-1].weight)
                nn.init.zeros_(mod[-1].bias)
        for layer in (self.final_time[-1], self.final_cond[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, C, T]``, ``t`` ``[B]`` (or a scalar), ``z`` ``[B, cond_dim]``."""
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        h = self.embed(x.transpose(1, 2)) + self.pos
        c = self.time(t)
        for block in self.blocks:
            h = block(h, c, z)
        shift, scale = (self.final_time(c) + self.final_cond(z)).chunk(2, dim=1)
        return self.out(_modulate(self.final_norm(h), shift, scale)).transpose(1, 2)
