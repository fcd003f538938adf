"""The three generative methods over a normalised PCA latent space: loss and sampler of each.

Every method maps a control cell ``x0`` ``[B, T]`` and a perturbation embedding ``z`` ``[B, D]`` to a
perturbed cell ``x1``; the backbone is a :class:`~._backbone.DiT`.

- :class:`FlowMatching`: conditional OT flow matching (``flow_matching``: ``AffineProbPath`` with
  ``CondOTScheduler``; ``ODESolver`` midpoint sampling), the reference's ``flow.py``.
- :class:`Diffusion`: DDPM noise prediction on the target, the control stacked as a second channel,
  ancestral sampling with ``x0`` clipped to the training range (the reference's ``diffusion.py``; no maintained DDPM
  package is installed here, and the schedule is a few lines).
- :class:`SchrodingerBridge`: ``torchcfm``'s SB-CFM (entropic OT coupling, flow + score matching),
  sampled with ``torchsde`` (SDE) or ``torchdiffeq`` (ODE; the reference's ``torchdyn``), the reference's
  ``schrodinger.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

TIME_SCALE = 1000.0
"""Continuous times in [0, 1] are fed to the sinusoidal time embedding as ``t * TIME_SCALE``."""


class FlowMatching:
    """Conditional OT flow matching from controls to perturbed cells (one channel in and out)."""

    in_channels, out_channels = 1, 1

    def __init__(self, step_size: float = 0.05) -> None:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        self.path = AffineProbPath(scheduler=CondOTScheduler())
        self.step_size = step_size

    def loss(
        self, model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, z: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        t = torch.rand(x0.shape[0], generator=gen)
        sample = self.path.sample(t=t, x_0=x0, x_1=x1)
        pred = model(sample.x_t[:, None], sample.t * TIME_SCALE, z)[:, 0]
        return ((pred - sample.dx_t) ** 2).mean()

    @torch.no_grad()
    def sample(self, model: nn.Module, x0: torch.Tensor, z: torch.Tensor, seed: int) -> torch.Tensor:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class Velocity(ModelWrapper):
            def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
                return self.model(x[:, None], t * TIME_SCALE, extras["z"])[:, 0]

        return ODESolver(velocity_model=Velocity(model)).sample(
            x_init=x0, step_size=self.step_size, method="midpoint", z=z
        )


def _betas(timesteps: int, schedule: str) -> torch.Tensor:
    """The reference's beta schedules (cosine: Nichol & Dhariwal, s = 0.008; linear: DDPM's, rescaled)."""
    if schedule == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + 0.008) / 1.008 * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


class Diffusion:
    """DDPM in the latent space: noise prediction, the control as a second input channel."""

    in_channels, out_channels = 2, 2
    clip: tuple[float, float] = (-1.0, 1.0)
    """Range the ``x0`` estimate is clipped to while sampling (the training latents' normalised range)."""

    def __init__(self, timesteps: int = 1000, schedule: str = "cosine", source_channel: bool = True) -> None:
        betas = _betas(timesteps, schedule)
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        self.timesteps = timesteps
        self.source_channel = source_channel

        def f(v: torch.Tensor) -> torch.Tensor:
            return v.to(torch.float32)

        self.sqrt_ac, self.sqrt_1m_ac = f(alphas_cumprod.sqrt()), f((1 - alphas_cumprod).sqrt())
        self.sqrt_recip_ac, self.sqrt_recipm1_ac = f((1 / alphas_cumprod).sqrt()), f((1 / alphas_cumprod - 1).sqrt())
        var = betas * (1 - prev) / (1 - alphas_cumprod)
        self.post_log_var = f(torch.log(var.clamp(min=1e-20)))
        self.post_c1 = f(betas * prev.sqrt() / (1 - alphas_cumprod))
        self.post_c2 = f((1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod))

    def _input(self, xt: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return torch.stack([xt, x0 if self.source_channel else torch.zeros_like(x0)], dim=1)

    def loss(
        self, model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, z: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        t = torch.randint(0, self.timesteps, (x1.shape[0],), generator=gen)
        noise = torch.randn(x1.shape, generator=gen)
        xt = self.sqrt_ac[t, None] * x1 + self.sqrt_1m_ac[t, None] * noise
        pred = model(self._input(xt, x0), t.float(), z)[:, 0]
        return ((pred - noise) ** 2).mean()

    @torch.no_grad()
    def sample(self, model: nn.Module, x0: torch.Tensor, z: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(x0.shape, generator=gen)
        for step in reversed(range(self.timesteps)):
            t = torch.full((x.shape[0],), step, dtype=torch.long)
            noise_pred = model(self._input(x, x0), t.float(), z)[:, 0]
            start = (self.sqrt_recip_ac[step] * x - self.sqrt_recipm1_ac[step] * noise_pred).clamp(*self.clip)
            mean = self.post_c1[step] * start + self.post_c2[step] * x
            x = mean + (0.5 * self.post_log_var[step]).exp() * torch.randn(x.shape, generator=gen) if step else mean
        return x


class SchrodingerBridge:
    """SB-CFM: velocity and score heads (two output channels), trained on entropic-OT couplings.

    The coupling is drawn per minibatch by torchcfm's ``guided_sample_location_and_conditional_flow``,
    which carries each target's label (here its row, hence its embedding) through the OT plan; the
    reference's unguided call re-pairs targets without their embeddings.
    """

    in_channels, out_channels = 1, 2

    def __init__(self, sigma: float = 1.0, steps: int = 250, sde: bool = True) -> None:
        from torchcfm.conditional_flow_matching import SchrodingerBridgeConditionalFlowMatcher

        self.matcher = SchrodingerBridgeConditionalFlowMatcher(sigma=sigma)
        self.sigma, self.steps, self.sde = sigma, steps, sde

    def loss(
        self, model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, z: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        rows = torch.arange(x0.shape[0])
        t, xt, ut, _, rows1, eps = self.matcher.guided_sample_location_and_conditional_flow(
            x0, x1, y0=rows, y1=rows, return_noise=True
        )
        lam = self.matcher.compute_lambda(t)
        velocity, score = model(xt[:, None], t * TIME_SCALE, z[rows1]).unbind(1)
        return ((velocity - ut) ** 2).mean() + ((lam[:, None] * score + eps) ** 2).mean()

    @torch.no_grad()
    def sample(self, model: nn.Module, x0: torch.Tensor, z: torch.Tensor, seed: int) -> torch.Tensor:
        ts = torch.linspace(0, 1, self.steps + 1)
        if self.sde:
            import torchsde

            class SDE(nn.Module):
                noise_type, sde_type = "diagonal", "ito"

                def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # drift: velocity + score
                    return model(y[:, None], t * TIME_SCALE, z).sum(1)

                def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                    return torch.full_like(y, sigma)

            sigma = self.sigma
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=x0.shape, entropy=seed)
            return torchsde.sdeint(SDE(), x0, ts, bm=bm, method="euler", dt=1.0 / self.steps)[-1]
        from torchdiffeq import odeint

        def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # velocity head only
            return model(x[:, None], t * TIME_SCALE, z)[:, 0]

        return odeint(field, x0, ts, method="euler")[-1]


def make_method(name: str, config) -> FlowMatching | Diffusion | SchrodingerBridge:
    """The method ``name`` (``flow``, ``diffusion``, ``schrodinger``) with ``config``'s settings."""
    if name == "flow":
        return FlowMatching(step_size=config.step_size)
    if name == "diffusion":
        return Diffusion(config.timesteps, config.beta_schedule, config.source_channel)
    if name == "schrodinger":
        return SchrodingerBridge(config.sigma, config.sb_steps, config.sde)
    raise ValueError(f"unknown generative method {name!r}")


def seeded_numpy(seed: int):
    """Context manager: numpy's global RNG seeded (torchcfm's OT sampler draws from it), restored after."""
    from contextlib import contextmanager

    @contextmanager
    def scope():
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)

    return scope()
