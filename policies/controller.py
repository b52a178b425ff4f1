"""Running a policy outside imagination: it sees observations, encodes them with its world model's encoder, and
acts one world-model block at a time.

`PolicyController` is batched over B envs, like the MPC controller: `reset(goal_obs (B, ...))`, then
`act(obs (B, ...)) -> (B, A)` every env step; every `frameskip` steps it encodes the observation into its latent
history (the first frame repeated until `history` frames exist) and asks the policy for the next block. A policy
that answers NaN or inf stops the run with a one-line error rather than reaching an env. `RobotPolicy` drives one
robot with it (the control loop's `Controller`: `act(obs) -> (frameskip, A)`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from wm.device import module_device
from wm.errors import WMError
from wm.models.protocol import WorldModel


class PolicyController:
    def __init__(self, policy, model: WorldModel, device=None, seed: int = 0, stochastic: bool = False):
        """`stochastic`: sample the policy's noise (a diffusion policy always samples its initial noise) from a
        generator seeded with `seed`; otherwise a Gaussian policy acts with its mean. Observations go to `device`
        (default: the world model's)."""
        self.policy, self.model, self.device = policy, model, device or module_device(model)
        self.frameskip, self.history = policy.cfg.frameskip, policy.cfg.history
        self.stochastic, self.seed = stochastic, seed
        self.latencies: list[float] = []

    def encode_obs(self, obs: dict) -> torch.Tensor:
        batch = {k: torch.as_tensor(np.asarray(obs[k]), device=self.device)[:, None] for k in ("rgb", "proprio")}
        return self.model.encode(batch)[:, 0]  # (B, N, D)

    @torch.no_grad()
    def reset(self, goal_obs: dict) -> None:
        """Start episodes toward `goal_obs` (`rgb (B, H, W, 3)`, `proprio (B, P)`, velocities as given)."""
        self.z_goal = self.encode_obs(goal_obs)
        self.frames: list[torch.Tensor] = []
        self.queue: list[torch.Tensor] = []
        self.steps, self.latencies = 0, []
        self.generator = torch.Generator(self.device).manual_seed(self.seed)

    def next_block(self, z: torch.Tensor) -> torch.Tensor:
        """The next block `(B, frameskip, A)` from the newest latents `z (B, N, D)`."""
        self.frames = ([z] * self.history if not self.frames else self.frames + [z])[-self.history :]
        z_hist = torch.stack(self.frames, dim=1)
        started = time.perf_counter()
        if self.policy.cfg.kind == "diffusion":
            block = self.policy.act(z_hist, self.z_goal, generator=self.generator)
        else:
            noise = None
            if self.stochastic:
                shape = (len(z), self.frameskip * self.policy.cfg.action_dim)
                noise = torch.randn(shape, generator=self.generator, device=z.device)
            block = self.policy.act(z_hist, self.z_goal, noise)
        self.latencies.append(time.perf_counter() - started)
        if not bool(torch.isfinite(block).all()):
            raise WMError("the policy produced NaN or infinite actions; its checkpoint is damaged or diverged")
        return block

    @torch.no_grad()
    def act(self, obs: dict) -> torch.Tensor:
        """Next env actions `(B, A)` for the current observations."""
        if not self.queue:
            self.queue = list(self.next_block(self.encode_obs(obs)).unbind(1))
        self.steps += 1
        return self.queue.pop(0)


class RobotPolicy:
    """A policy for one robot: `reset(goal_obs)` with one goal observation, `act(obs) -> (frameskip, A)`."""

    def __init__(self, controller: PolicyController):
        self.controller = controller

    def reset(self, goal_obs: dict) -> None:
        self.controller.reset({k: np.asarray(v)[None] for k, v in goal_obs.items()})

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        z = self.controller.encode_obs({k: np.asarray(v)[None] for k, v in obs.items()})
        return self.controller.next_block(z)[0].cpu().numpy()

    @property
    def latencies(self) -> list[float]:
        return list(self.controller.latencies)
