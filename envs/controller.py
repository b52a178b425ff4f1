"""The controller contract: what the goal-reaching evaluation drives envs with, and `wm validate` and the robot
control loop drive robots with. MPC (`planners.mpc.MPCController`), learned policies
(`policies.controller.PolicyController`), random and zero actions all meet it, so any of them runs anywhere.

Batched over B problems (one robot: B = 1). Observations are what a controller may see: `{"rgb": (B, H, W, 3)
uint8, "proprio": (B, P) float32, "step": int}`, `step` being the control step of the observation since the reset.

  reset(goal_obs)            start new episodes toward the goal observations `{"rgb": (B, H, W, 3), "proprio": (B, P)}`
  act(obs) -> (B, K, A)      a chunk of K >= 1 env actions per problem, action k meant for step `obs["step"] + k`
  executed(step, obs, sent)  after every step: the observation it acted on and the actions `(B, A)` really sent (after
                             clipping, rate limits or a hold), which a controller that keeps an action history
                             records instead of what it asked for
  latencies                  seconds of each decision (a replan, a policy call) since the reset
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Controller(Protocol):
    def reset(self, goal_obs: dict) -> None: ...

    def act(self, obs: dict) -> np.ndarray: ...

    def executed(self, step: int, obs: dict, sent: np.ndarray) -> None: ...

    @property
    def latencies(self) -> list[float]: ...


class ZeroActions:
    """The trivial baseline: a controller that never moves (one zero action per step)."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def reset(self, goal_obs: dict) -> None:
        self.batch = len(goal_obs["rgb"])

    def act(self, obs: dict) -> np.ndarray:
        return np.zeros((self.batch, 1, self.action_dim), np.float32)

    def executed(self, step: int, obs: dict, sent: np.ndarray) -> None:
        """Zero actions need no history."""

    @property
    def latencies(self) -> list[float]:
        return []


class RandomController:
    """The other trivial baseline: uniform random actions within `[low, high]`, `chunk` at a time, from a seeded
    generator."""

    def __init__(self, low, high, chunk: int = 5, seed: int = 0):
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.chunk = chunk
        self.rng = np.random.default_rng(seed)

    def reset(self, goal_obs: dict) -> None:
        self.batch = len(goal_obs["rgb"])

    def act(self, obs: dict) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, (self.batch, self.chunk, len(self.low))).astype(np.float32)

    def executed(self, step: int, obs: dict, sent: np.ndarray) -> None:
        """Random actions need no history."""

    @property
    def latencies(self) -> list[float]:
        return []
