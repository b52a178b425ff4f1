"""A pixel decoder for looking at latents: `(B, N, D)` tokens -> `(B, 3, S, S)` images in [0, 1].

Trained on detached latents (DINO-WM found that letting its loss reach the predictor hurts planning), so it
only ever explains what the world model imagines; it never shapes the latent space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _up(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout), nn.GELU()
    )


class LatentDecoder(nn.Module):
    """Tokens on a square grid (N = g*g). Small grids (g < 4, e.g. one JEPA token) go through a linear layer to
    a 4x4 map; patch grids are mapped per token by a 1x1 convolution. Transposed convolutions then double the
    map up to `image_size` (a final resize covers sizes that are not a power-of-two multiple)."""

    def __init__(self, latent_dim: int, num_tokens: int, image_size: int = 64, width: int = 128):
        super().__init__()
        grid = math.isqrt(num_tokens)
        if grid * grid != num_tokens:
            raise ValueError(f"decoder needs a square token grid, got N={num_tokens}")
        self.grid, self.width, self.image_size = grid, width, image_size
        if grid < 4:
            self.stem = nn.Linear(latent_dim * num_tokens, width * 16)
            size = 4
        else:
            self.stem = nn.Conv2d(latent_dim, width, 1)
            size = grid
        ups, ch = [], width
        while size * 2 <= image_size:
            ups.append(_up(ch, max(ch // 2, 16)))
            ch, size = max(ch // 2, 16), size * 2
        self.ups = nn.Sequential(*ups)
        self.head = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """`z (B, N, D)` -> `(B, 3, image_size, image_size)` in [0, 1]."""
        b = z.shape[0]
        if self.grid < 4:
            x = self.stem(z.flatten(1)).view(b, self.width, 4, 4)
        else:
            x = self.stem(z.transpose(1, 2).reshape(b, -1, self.grid, self.grid))
        x = self.head(self.ups(x))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)
