"""The world-model contract every model family meets, so any planner or controller can use any model."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class WorldModel(Protocol):
    """Shapes: B problems, S candidate sequences, T history frames, H horizon, N tokens, D latent width,
    A = frameskip * env action dims (actions are raw env actions stacked over frameskip)."""

    @property
    def spec(self) -> dict:
        """`action_dim`, `env_action_dim`, `frameskip`, `num_hist`, `image_size`, `tokens`, `latent_dim`, ..."""
        ...

    def encode(self, obs: dict) -> torch.Tensor:
        """`{"rgb": (B, T, H, W, 3) uint8, "proprio": (B, T, P)}` -> `z (B, T, N, D)`."""
        ...

    def rollout(self, z_hist: torch.Tensor, actions: torch.Tensor, past_actions=None) -> torch.Tensor:
        """`z_hist (B, T, N, D)`, `actions (B, [S,] H, A)`, `past_actions (B, T-1, A)` -> `(B, [S,] H, N, D)`."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """`(..., N, D)` -> images `(..., H, W, 3)` in [0, 1] (raises WMError when the model has no decoder)."""
        ...


def base_spec(cfg) -> dict:
    """The spec entries every model derives the same way from its config (`kind`, `frameskip`, `action_dim` = env
    action dims, `num_hist`, `image_size`); each model adds its latent layout (`tokens`, `latent_dim`, ...)."""
    return {
        "kind": cfg.kind,
        "action_dim": cfg.frameskip * cfg.action_dim,
        "env_action_dim": cfg.action_dim,
        "frameskip": cfg.frameskip,
        "num_hist": cfg.num_hist,
        "image_size": cfg.image_size,
    }
