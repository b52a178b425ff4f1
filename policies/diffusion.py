"""A goal-conditioned diffusion policy on world-model latents, on diffusers' schedulers.

An MLP predicts the noise in a noisy action block `(frameskip * A,)` (normalised to [-1, 1] by the bounds) from
the block, its noise level and the latent features. Training is DDPM's noise-prediction loss (`DDPMScheduler`,
`train_timesteps` levels, squared-cosine schedule); acting runs a deterministic DDIM sampler (`DDIMScheduler`, eta 0)
for `act_steps` steps from an initial noise, which `act` takes as an explicit input: the same noise gives the same
block, and a steering policy (DSRL) acts by choosing it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from policies.features import LatentFeatures, mlp
from policies.protocol import PolicyConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding `(B, dim)` of integer noise levels `t (B,)`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiffusionPolicy(nn.Module):
    samples_noise = True  # a diffusion policy acts from freshly drawn initial noise

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.block = cfg.frameskip * cfg.action_dim
        self.features = LatentFeatures(cfg)
        self.time = nn.Sequential(nn.Linear(64, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.denoiser = mlp(self.block + 2 * cfg.width, cfg.width, cfg.depth + 1, self.block)
        schedule = {"num_train_timesteps": cfg.train_timesteps, "beta_schedule": "squaredcos_cap_v2"}
        self.train_scheduler = DDPMScheduler(**schedule, clip_sample=True, prediction_type="epsilon")
        self.sampler = DDIMScheduler(**schedule, clip_sample=True, prediction_type="epsilon")
        self.sampler.set_timesteps(cfg.act_steps)
        low = torch.tensor(cfg.action_low, dtype=torch.float32).repeat(cfg.frameskip)
        high = torch.tensor(cfg.action_high, dtype=torch.float32).repeat(cfg.frameskip)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def _eps(self, noisy: torch.Tensor, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.denoiser(torch.cat([noisy, features, self.time(timestep_embedding(t, 64))], dim=-1))

    def act(self, z_hist: torch.Tensor, z_goal: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, frameskip, A)` from the initial noise `noise (B, frameskip * A)` (None: zero noise), by `act_steps`
        DDIM steps; deterministic given the noise."""
        features = self.features(z_hist, z_goal)
        if noise is None:
            noise = torch.zeros((len(features), self.block), device=features.device)
        x = noise.to(features.dtype)
        for t in self.sampler.timesteps:
            level = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
            x = self.sampler.step(self._eps(x, level, features), int(t), x, eta=0.0).prev_sample
        blocks = (self.low + self.high) / 2 + (self.high - self.low) / 2 * x.clamp(-1, 1)
        return blocks.unflatten(-1, (self.cfg.frameskip, self.cfg.action_dim))

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """BC loss on `z_hist (B, T, N, D)`, `z_goal (B, N, D)`, `action (B, frameskip * A)`: DDPM's MSE between
        the added and the predicted noise."""
        target = ((batch["action"] - self.low) / (self.high - self.low) * 2 - 1).clamp(-1, 1)
        noise = torch.randn_like(target)
        t = torch.randint(0, self.cfg.train_timesteps, (len(target),), device=target.device)
        noisy = self.train_scheduler.add_noise(target, noise, t)
        loss = F.mse_loss(self._eps(noisy, t, self.features(batch["z_hist"], batch["z_goal"])), noise)
        return loss, {"loss": loss.detach()}
