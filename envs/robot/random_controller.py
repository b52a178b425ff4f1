"""The trivial baseline controller: uniform random actions within the robot's bounds, a chunk at a time."""

from __future__ import annotations

import numpy as np

from envs.robot.protocol import Feature


class RandomController:
    """`act(obs) -> (chunk, A)` uniform in `[action.low, action.high]`, from a seeded generator."""

    def __init__(self, action: Feature, chunk: int = 5, seed: int = 0):
        self.low, self.high = np.asarray(action.low, np.float32), np.asarray(action.high, np.float32)
        self.chunk = chunk
        self.rng = np.random.default_rng(seed)

    def reset(self, goal_obs: dict) -> None:
        """Random actions ignore the goal."""

    def act(self, obs: dict) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, (self.chunk, len(self.low))).astype(np.float32)

    @property
    def latencies(self) -> list[float]:
        return []
