"""Noisy scripted experts: privileged controllers that make collected data cover goal-reaching behaviour.

Random actions alone are known to cripple planning on PushT-like tasks (DINO-WM trains on noisy expert replays),
so every built-in env has a scripted controller `act(state, goal) -> (A,)` in [-1, 1] that reads the simulator
state. `NoisyExpert` adds Gaussian action noise (and occasional random actions) from a per-episode generator,
so episodes differ and cover recoveries from mistakes. Experts only ever run during data collection.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from envs.point_mass import PointMassArenaEnv
from wm.errors import WMError


class Expert(Protocol):
    def act(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """`state (S,)`, `goal (S,)` float64 -> action `(A,)` float32 in [-1, 1]."""
        ...


class PointMassExpert:
    """Follows the shortest grid path to the goal: along the line between cell centres, then straight in."""

    def __init__(self, env: PointMassArenaEnv, line_gain: float = 3.0, goal_gain: float = 3.0):
        self.env = env
        self.line_gain = line_gain
        self.goal_gain = goal_gain

    def act(self, state, goal) -> np.ndarray:
        env = self.env
        pos, target = np.asarray(state[:2]), np.asarray(goal[:2])
        path = env.shortest_path(env.cell_of(pos), env.cell_of(target))
        if len(path) == 1:
            velocity = self.goal_gain * (target - pos) / env.cell
        else:
            here, nxt = env.cell_center(*path[0]), env.cell_center(*path[1])
            direction = (nxt - here) / np.linalg.norm(nxt - here)
            offset = pos - here
            off_line = offset - offset.dot(direction) * direction
            velocity = direction - self.line_gain * off_line / env.cell
        return np.clip(velocity, -1.0, 1.0).astype(np.float32)


class NoisyExpert:
    """`expert` + N(0, noise_std) action noise; with probability `random_prob` a uniform random action instead."""

    def __init__(self, expert: Expert, rng: np.random.Generator, noise_std: float = 0.3, random_prob: float = 0.05):
        self.expert = expert
        self.rng = rng
        self.noise_std = noise_std
        self.random_prob = random_prob

    def act(self, state, goal) -> np.ndarray:
        action = self.expert.act(state, goal)
        if self.rng.random() < self.random_prob:
            action = self.rng.uniform(-1.0, 1.0, size=action.shape)
        else:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_expert(env_id: str, env) -> Expert:
    """The scripted expert for a built-in env id; `env` is an unwrapped instance used for geometry only."""
    if env_id in ("wm/PointMaze-v0", "wm/Wall-v0"):
        return PointMassExpert(env)
    if env_id == "wm/PushT-v0":
        from envs.push_t_expert import PushTExpert

        return PushTExpert(env)
    raise WMError(f"no scripted expert for {env_id!r}; collect with --policy random, smooth or module:factory")
