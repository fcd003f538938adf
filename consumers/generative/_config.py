"""Settings of the generative baselines: CPU-sized defaults and the reference's (paper) sizes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["flow", "diffusion", "schrodinger"]
METHODS: tuple[str, ...] = ("flow", "diffusion", "schrodinger")


class GenerativeConfig(BaseModel):
    """Latent space, DiT backbone, training and sampling settings of one generative model.

    The defaults are CPU-sized (minutes on the shared Perturb-seq data); :meth:`paper` gives the
    reference's sizes (``train_generative/configs``: PCA 50, DiT depth 4 / hidden 128 / 4 heads,
    100 epochs of batch 256, 250 SDE steps, DDPM with 1000 steps).
    """

    model_config = ConfigDict(extra="forbid")

    pca_dim: int = Field(32, ge=1)
    """Dimensions of the PCA latent space (StandardScaler then PCA, fitted on the fold's training cells)."""
    latent_scale: Literal["std", "minmax"] = "std"
    """Latent normalisation: each PCA dimension z-scored over the training cells, or the reference's global
    min/max to [-1, 1] (on log1p data one outlying cell can squeeze every other latent into a sliver)."""
    hidden: int = Field(64, ge=4)
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    cond_dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the embedding's adaLN modulation (the reference's ``z_emb_dropout``)."""
    epochs: int = Field(20, ge=1)
    """An epoch draws as many (control, perturbed) pairs as the context has training cells (the reference's)."""
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    """EMA of the weights, updated every step; the EMA model samples (the reference: 0.995 every 10 steps)."""
    step_size: float = Field(0.05, gt=0, le=1)
    """Flow: midpoint ODE step (flow_matching's ODESolver); the reference's 0.05 = 20 steps."""
    sb_steps: int = Field(50, ge=2)
    """Schrodinger bridge: Euler steps of the SDE / ODE on [0, 1] (the reference: 250)."""
    timesteps: int = Field(100, ge=2)
    """DDPM diffusion steps (training and ancestral sampling)."""
    beta_schedule: Literal["cosine", "linear"] = "cosine"
    source_channel: bool = True
    """DDPM: stack the control cell as a second input channel (the reference's docstring; its code zeroes it)."""
    sigma: float = Field(1.0, gt=0)
    """Schrodinger bridge noise (torchcfm SB-CFM)."""
    sde: bool = True
    """Schrodinger bridge: sample with the SDE (torchsde) or the velocity ODE (torchdiffeq, Euler)."""
    cells_per_batch: int = Field(64, ge=1)
    """Prediction: control cells drawn (without replacement) in each batch and carried through the model."""
    seed: int = 0

    @classmethod
    def paper(cls, **overrides) -> GenerativeConfig:
        """The reference's sizes (a GPU run: about 1000 GPU-hours for the paper's full sweep)."""
        return cls(
            **{
                "pca_dim": 50,
                "hidden": 128,
                "depth": 4,
                "heads": 4,
                "epochs": 100,
                "batch_size": 256,
                "ema_decay": 0.9995,
                "sb_steps": 250,
                "timesteps": 1000,
                "cells_per_batch": 256,
                **overrides,
            }
        )
