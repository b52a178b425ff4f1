"""Action encoders for the diffusion denoiser: raw env actions `(B, L)` -> an embedding `(B, E)`.

  "two_hot"  World4RL: each action value is spread over its two nearest of `bins` evenly spaced bins between the
             env's bounds (weights sum to 1, so the code is piecewise linear in the action: small changes give
             small, nonzero changes and gradients), then a 2-layer MLP over the concatenated codes.
  "mlp"      the value normalised by the training data's mean/std, then a 2-layer MLP.
L = (frames of conditioning) x frameskip x env action dims; bounds and statistics are per env dim, tiled over L.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODINGS = ("two_hot", "mlp")


def two_hot(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int) -> torch.Tensor:
    """`x (B, L)` in `[low, high]` (clamped) -> `(B, L, bins)`, two nonzero weights per value summing to 1."""
    pos = ((x - low) / (high - low)).clamp(0, 1) * (bins - 1)
    lower = pos.detach().floor().clamp(max=bins - 2)
    frac = pos - lower  # in [0, 1]; carries the gradient
    idx = lower.long().unsqueeze(-1)
    code = torch.zeros(*x.shape, bins, device=x.device, dtype=x.dtype)
    code = code.scatter(-1, idx, (1 - frac).unsqueeze(-1))
    return code.scatter(-1, idx + 1, frac.unsqueeze(-1))


class ActionEncoder(nn.Module):
    """`forward(actions (B, L)) -> (B, out_dim)`. `low/high/mean/std` are per env action dim `(A,)`."""

    def __init__(
        self,
        kind: str,
        length: int,
        out_dim: int,
        low: torch.Tensor,
        high: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        bins: int = 21,
    ):
        super().__init__()
        if kind not in ENCODINGS:
            raise ValueError(f"unknown action encoding {kind!r}; use one of {', '.join(ENCODINGS)}")
        reps = length // len(low)
        self.kind, self.bins = kind, bins
        for name, value in (("low", low), ("high", high), ("mean", mean), ("std", std)):
            self.register_buffer(name, value.float().repeat(reps))
        width = length * bins if kind == "two_hot" else length
        self.mlp = nn.Sequential(nn.Linear(width, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if self.kind == "two_hot":
            code = two_hot(actions, self.low, self.high, self.bins).flatten(1)
        else:
            code = (actions - self.mean) / self.std
        return self.mlp(code)
