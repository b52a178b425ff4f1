"""The policy contract, and the settings every policy shares.

A policy maps world-model latents to one world-model block of env actions, with one signature for every kind:
`act(z_hist (B, T, N, D), z_goal (B, N, D), noise=None) -> (B, frameskip, A)`, T = `history` frames (the newest
last). `noise` is the policy's source of randomness made explicit, a standard normal `(B, frameskip * A)`: for a
Gaussian policy the sample around its mean (None: the mean action), for a diffusion policy the initial noise of its
sampler (None: zero noise), which is what a DSRL steering policy chooses. `samples_noise` says whether the policy
is meant to act from freshly drawn noise every time (a diffusion policy) or from its deterministic choice unless
asked to sample (`policies.controller.act_block` draws it either way). The kinds are registered in
`policies.registry`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import torch

from wm.errors import WMError
from wm.models.protocol import ModelSpec


@dataclass
class PolicyConfig:
    kind: str = "gaussian"  # a kind of `policies.registry.POLICIES`
    history: int = 1  # latent frames the policy reads (the newest last)
    frameskip: int = 5  # env actions per world-model block: the chunk one act() returns
    action_dim: int = 2  # env action dims
    action_low: list = field(default_factory=lambda: [-1.0, -1.0])  # env action bounds
    action_high: list = field(default_factory=lambda: [1.0, 1.0])
    tokens: int = 1  # N of the world model's latents
    latent_dim: int = 74  # D
    image_size: int = 64  # for pixel latents (N = image_size^2, D = 3): read by a CNN
    pixels: bool = False
    width: int = 256
    depth: int = 2
    log_std_min: float = -5.0  # Gaussian: log std bounds; World4RL caps the std at e^0
    log_std_max: float = 0.0
    log_std_init: float = -1.0
    train_timesteps: int = 100  # diffusion: DDPM noise levels in training
    act_steps: int = 8  # diffusion: DDIM steps when acting (DSRL: 8)
    noise_bound: float = 1.5  # steered: the steering policy's noise stays in [-bound, bound] (DSRL: 1.5)
    base: dict | None = None  # steered: the frozen diffusion policy's config

    def __post_init__(self) -> None:
        if self.history < 1 or self.width < 1 or self.depth < 1:
            raise WMError("policy history, width and depth must be >= 1")
        if not self.log_std_min < self.log_std_max:
            raise WMError("policy log_std_min must be below log_std_max")

    @classmethod
    def for_world_model(cls, spec: ModelSpec, action_low, action_high, **settings) -> PolicyConfig:
        """Settings with the shapes of a world model's latents (its `spec`) and the env's action bounds."""
        pixels = spec.latent_dim == 3 and spec.tokens == spec.image_size**2
        shapes = {
            "frameskip": spec.frameskip,
            "action_dim": spec.action_dim,
            "tokens": spec.tokens,
            "latent_dim": spec.latent_dim,
            "image_size": spec.image_size,
            "pixels": pixels,
            "action_low": list(map(float, action_low)),
            "action_high": list(map(float, action_high)),
        }
        try:
            return cls(**{**shapes, **settings})
        except TypeError as e:
            raise WMError(f"bad policy setting: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Policy(Protocol):
    cfg: PolicyConfig
    samples_noise: bool  # True: acts from fresh noise every time; False: noise None gives its deterministic choice

    def act(self, z_hist: torch.Tensor, z_goal: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T, N, D)`, `(B, N, D)`, noise `(B, frameskip * A)` -> env actions `(B, frameskip, A)` inside the
        action bounds."""
        ...
