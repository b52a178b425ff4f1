"""Running a policy outside imagination: it sees observations, encodes them with its world model's encoder, and
acts one world-model block at a time.

`PolicyController` is a `Controller` (`envs.controller`), batched over B envs or robots like MPC: `reset(goal_obs
(B, ...))`, then `act(obs (B, ...)) -> (B, frameskip, A)`: it encodes the observation into its latent history (the
first frame repeated until `history` frames exist) and asks the policy for the next block. A policy that answers
NaN or inf stops the run with a one-line error rather than reaching an env. `act_block` is the one way every caller
(this controller, imagined evaluation) asks a policy for a block: it draws the noise a policy acts from.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from policies.protocol import Policy
from wm.device import module_device
from wm.errors import WMError
from wm.models.protocol import WorldModel


def act_block(policy: Policy, z_hist: torch.Tensor, z_goal: torch.Tensor, generator: torch.Generator,
              stochastic: bool = False) -> torch.Tensor:  # fmt: skip
    """The policy's block `(B, frameskip, A)` for `z_hist (B, T, N, D)`, `z_goal (B, N, D)`: from standard normal
    noise `(B, frameskip * A)` drawn from `generator` where the policy always samples (`samples_noise`) or where
    `stochastic`, else from its deterministic choice (noise None)."""
    noise = None
    if stochastic or policy.samples_noise:
        shape = (len(z_hist), policy.cfg.frameskip * policy.cfg.action_dim)
        noise = torch.randn(shape, generator=generator, device=z_hist.device)
    return policy.act(z_hist, z_goal, noise)


class PolicyController:
    def __init__(self, policy: Policy, model: WorldModel, device=None, seed: int = 0, stochastic: bool = False):
        """`stochastic`: sample the policy's noise (a diffusion policy always samples its initial noise) from a
        generator seeded with `seed`; otherwise a Gaussian policy acts with its mean. Observations go to `device`
        (default: the world model's)."""
        self.policy, self.model, self.device = policy, model, device or module_device(model)
        self.frameskip, self.history = policy.cfg.frameskip, policy.cfg.history
        self.stochastic, self.seed = stochastic, seed
        self.latencies: list[float] = []

    @property
    def chunk(self) -> int:
        """Actions per `act`: one world-model block."""
        return self.frameskip

    def encode_obs(self, obs: dict) -> torch.Tensor:
        batch = {k: torch.as_tensor(np.asarray(obs[k]), device=self.device)[:, None] for k in ("rgb", "proprio")}
        return self.model.encode(batch)[:, 0]  # (B, N, D)

    @torch.no_grad()
    def reset(self, goal_obs: dict) -> None:
        """Start episodes toward `goal_obs` (`rgb (B, H, W, 3)`, `proprio (B, P)`, velocities as given)."""
        self.z_goal = self.encode_obs(goal_obs)
        self.frames: list[torch.Tensor] = []
        self.latencies = []
        self.generator = torch.Generator(self.device).manual_seed(self.seed)

    @torch.no_grad()
    def act(self, obs: dict) -> torch.Tensor:
        """The next block of env actions `(B, frameskip, A)` for the current observations."""
        z = self.encode_obs(obs)
        self.frames = ([z] * self.history if not self.frames else self.frames + [z])[-self.history :]
        started = time.perf_counter()
        block = act_block(self.policy, torch.stack(self.frames, dim=1), self.z_goal, self.generator, self.stochastic)
        self.latencies.append(time.perf_counter() - started)
        if not bool(torch.isfinite(block).all()):
            raise WMError("the policy produced NaN or infinite actions; its checkpoint is damaged or diverged")
        return block

    def executed(self, step: int, obs: dict, sent: np.ndarray) -> None:
        """A policy reads its own latent history; what was sent does not change it."""
