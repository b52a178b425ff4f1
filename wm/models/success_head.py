"""The latent success head of the JEPA / DINO world models: does a latent frame reach a goal latent?

`LatentSuccessHead(z (B, N, D), z_goal (B, N, D) or None) -> logits (B,)`. Each token of the frame is read with the
goal's token at the same place (and their difference), mapped by a shared MLP, pooled over tokens (mean and max:
"somewhere these two agree" survives pooling), then scored. With `goal=False` it reads the frame alone (fixed-task
envs, whose success needs no goal). It trains beside the world model on detached latents, so it never shapes the
latent space; `sigmoid(logits)` is the reward of an imagined env, as World4RL's frozen success classifier.
`SuccessEnsemble` holds several (`success_heads=5`), whose disagreement measures how little the data says.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentSuccessHead(nn.Module):
    def __init__(self, latent_dim: int, goal: bool = True, width: int = 128):
        super().__init__()
        self.goal = goal
        inputs = 3 * latent_dim if goal else latent_dim
        self.tokens = nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.out = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        if self.goal:
            if z_goal is None:
                raise ValueError("this success head compares a frame with a goal; pass z_goal")
            z = torch.cat([z, z_goal, z - z_goal], dim=-1)
        h = self.tokens(z)  # (B, N, width)
        return self.out(torch.cat([h.mean(1), h.amax(1)], dim=-1)).squeeze(-1)


class SuccessEnsemble(nn.Module):
    """`heads` success heads of one shape, each from its own initial weights, trained on the same batches: `forward`
    gives their mean logit, `members` each one's `(E, B)`. Where they disagree the data said little (MOPO's
    uncertainty): `wm refine`'s `uncertainty_penalty` charges imagined rewards for it."""

    def __init__(self, heads: int, latent_dim: int, goal: bool = True, width: int = 128):
        super().__init__()
        self.goal = goal
        self.heads = nn.ModuleList(LatentSuccessHead(latent_dim, goal, width) for _ in range(heads))

    def members(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([head(z, z_goal) for head in self.heads])

    def forward(self, z: torch.Tensor, z_goal: torch.Tensor | None = None) -> torch.Tensor:
        return self.members(z, z_goal).mean(0)


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with the classes weighted equally: each class's mean loss, averaged over the classes
    present in the batch (`logits`, `labels` of the same shape)."""
    labels = labels.float()
    losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_class = [losses[labels == c].mean() for c in (0.0, 1.0) if bool((labels == c).any())]
    return torch.stack(per_class).mean()
