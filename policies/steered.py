"""A diffusion policy steered through its initial noise (DSRL, Wagenmaker et al. 2025), as one policy.

The base `DiffusionPolicy` stays frozen (its weights never change); a `GaussianPolicy` over the noise, bounded to
`[-noise_bound, noise_bound]` (DSRL: 1.5), picks the initial noise of the base's deterministic DDIM sampler from
the same latents. `act` runs both: the noise the steering policy chooses, then the base's action block from it.
Refinement (`policies.refine`) trains only the steering policy, in imagination.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from policies.diffusion import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.protocol import PolicyConfig


def steering_config(cfg: PolicyConfig) -> PolicyConfig:
    """The Gaussian steering policy's settings: the same latents, actions = noise blocks within the bound."""
    bound = [-cfg.noise_bound] * cfg.action_dim, [cfg.noise_bound] * cfg.action_dim
    return replace(cfg, kind="gaussian", base=None, action_low=bound[0], action_high=bound[1])


class SteeredPolicy(nn.Module):
    samples_noise = False  # noise None: the base's block from the steering policy's mean noise

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.base = DiffusionPolicy(PolicyConfig(**cfg.base))
        self.base.requires_grad_(False)
        self.steer = GaussianPolicy(steering_config(cfg))

    def train(self, mode: bool = True) -> SteeredPolicy:
        super().train(mode)
        self.base.eval()  # frozen
        return self

    def act(self, z_hist: torch.Tensor, z_goal: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, frameskip, A)`: the base's block from the noise the steering policy picks (its mean, or `mean +
        std * noise` for a standard normal `noise (B, frameskip * A)`)."""
        chosen = self.steer.act(z_hist, z_goal, noise).flatten(1)
        return self.base.act(z_hist, z_goal, noise=chosen)
