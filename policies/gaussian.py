"""A goal-conditioned Gaussian policy on world-model latents (World4RL's BC policy, ready for PPO).

`mean = mid + half * tanh(MLP(features(z_hist, z_goal)))` keeps the mean inside the action bounds; the std is one
learned, state-independent parameter per action dim, clamped to `[exp(log_std_min), exp(log_std_max)]` (World4RL
caps it at e^0). The distribution is over one world-model block `(frameskip * A,)`; `log_prob` and `entropy`
sum over its dims. Behaviour cloning maximises the log-likelihood of the demonstrated blocks (`forward`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from policies.features import LatentFeatures, mlp
from policies.protocol import PolicyConfig


class GaussianPolicy(nn.Module):
    samples_noise = False  # noise None: the mean action

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        out = cfg.frameskip * cfg.action_dim
        self.features = LatentFeatures(cfg)
        self.mean_net = mlp(cfg.width, cfg.width, cfg.depth, out)
        self.log_std = nn.Parameter(torch.full((out,), float(cfg.log_std_init)))
        low = torch.tensor(cfg.action_low, dtype=torch.float32).repeat(cfg.frameskip)
        high = torch.tensor(cfg.action_high, dtype=torch.float32).repeat(cfg.frameskip)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def distribution(self, z_hist: torch.Tensor, z_goal: torch.Tensor) -> Normal:
        """Over blocks `(B, frameskip * A)`."""
        raw = self.mean_net(self.features(z_hist, z_goal))
        mean = (self.low + self.high) / 2 + (self.high - self.low) / 2 * torch.tanh(raw)
        std = self.log_std.clamp(self.cfg.log_std_min, self.cfg.log_std_max).exp()
        return Normal(mean, std.expand_as(mean), validate_args=False)  # NaN reaches the callers' checks

    def log_prob(self, z_hist: torch.Tensor, z_goal: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """Log-density `(B,)` of action blocks `(B, frameskip * A)`."""
        return self.distribution(z_hist, z_goal).log_prob(blocks).sum(-1)

    def entropy(self, z_hist: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        """`(B,)`."""
        return self.distribution(z_hist, z_goal).entropy().sum(-1)

    def act(self, z_hist: torch.Tensor, z_goal: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, frameskip, A)`: the mean, or `mean + std * noise` for standard normal `noise (B, frameskip * A)`,
        clipped to the bounds."""
        dist = self.distribution(z_hist, z_goal)
        blocks = dist.mean if noise is None else dist.mean + dist.stddev * noise
        return blocks.clamp(self.low, self.high).unflatten(-1, (self.cfg.frameskip, self.cfg.action_dim))

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """BC loss on `z_hist (B, T, N, D)`, `z_goal (B, N, D)`, `action (B, frameskip * A)`: the negative
        log-likelihood of the demonstrated block (metrics: also the mean's MSE and the std)."""
        dist = self.distribution(batch["z_hist"], batch["z_goal"])
        nll = -dist.log_prob(batch["action"]).sum(-1).mean()
        mse = ((dist.mean - batch["action"]) ** 2).mean()
        return nll, {"loss": nll.detach(), "mse": mse.detach(), "std": dist.stddev.mean().detach()}
