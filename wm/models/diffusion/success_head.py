"""A small success classifier on frames, the reward of an imagined environment (as World4RL's frozen classifier).

The built-in envs chain random goals that are not drawn in the frame, so whether a frame is a success depends on
the goal: with `goal=True` the head reads the frame stacked with the goal image (the observation rendered at the
goal state, as planners are given it) and learns the env's success test between them; with `goal=False` it reads
the frame alone (fixed-task envs, World4RL's setting). Strided convolutions, then mean- and max-pooling (max
pooling keeps "these two things overlap somewhere" features), then a linear logit.
"""

from __future__ import annotations

import torch
from torch import nn


class SuccessHead(nn.Module):
    """`forward(frames (B, 3, H, W) in [-1, 1], goals (B, 3, H, W) or None) -> logits (B,)`."""

    def __init__(self, goal: bool = True, width: int = 32):
        super().__init__()
        self.goal = goal
        chans = [6 if goal else 3, width // 2, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(2 * chans[-1], 1)

    def forward(self, frames: torch.Tensor, goals: torch.Tensor | None = None) -> torch.Tensor:
        if self.goal:
            if goals is None:
                raise ValueError("this success head compares a frame with a goal image; pass goals")
            frames = torch.cat([frames, goals], dim=1)
        h = self.features(frames)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return self.out(pooled).squeeze(-1)
