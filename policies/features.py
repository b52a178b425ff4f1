"""What a policy reads of the latents: `LatentFeatures(z_hist (B, T, N, D), z_goal (B, N, D)) -> (B, width)`.

Token latents (JEPA, DINO) are flattened: the history, the goal and the goal's difference from the newest frame,
layer-normalised, through a linear layer. Pixel latents (the diffusion model's frames, N = H*W, D = 3) are stacked
on channels with the goal image and read by a small strided CNN.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.protocol import PolicyConfig


class LatentFeatures(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.pixels:
            chans = [3 * (cfg.history + 1), 32, 64, 128, 128]
            layers: list[nn.Module] = []
            for cin, cout in zip(chans[:-1], chans[1:], strict=True):
                layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
            self.net = nn.Sequential(*layers)
            self.out = nn.Linear(2 * chans[-1], cfg.width)
        else:
            inputs = (cfg.history + 2) * cfg.tokens * cfg.latent_dim
            self.net = nn.Sequential(nn.LayerNorm(inputs), nn.Linear(inputs, cfg.width), nn.GELU())

    def forward(self, z_hist: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        z_hist, z_goal = z_hist.float(), z_goal.float()
        if not self.cfg.pixels:
            return self.net(torch.cat([z_hist.flatten(1), z_goal.flatten(1), (z_goal - z_hist[:, -1]).flatten(1)], 1))
        size = self.cfg.image_size
        frames = torch.cat([z_hist, z_goal[:, None]], dim=1)  # (B, T+1, H*W, 3) in [-1, 1]
        images = frames.reshape(frames.shape[0], -1, size, size, 3).permute(0, 1, 4, 2, 3).flatten(1, 2)
        h = self.net(images)
        return self.out(torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1))


def mlp(inputs: int, width: int, depth: int, outputs: int) -> nn.Sequential:
    """`depth` hidden layers of `width` (LayerNorm + SiLU), then a linear output."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.LayerNorm(width), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(width, outputs))
