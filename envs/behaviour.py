"""Behaviour policies of your own for `wm collect --policy package.module:factory`: scripted, teleoperated or learned.

The factory is called once per episode as `factory(action_space, rng)` (the env's `gymnasium.spaces.Box` and the
episode's own `numpy.random.Generator`, seeded from the collection's seed and the episode's index, so episodes do
not depend on the number of workers) and returns a `BehaviourPolicy`. Its `act(obs, info)` sees what the engine
records: `obs = {"rgb": (H, W, 3) uint8, "proprio": (P,) float32}` and the step's info (`"state"` where the env has
state hooks, `"goal"` and `"success"` for envs with goals); it returns an action `(A,)` that the collector clips to
the action bounds. `envs.reacher:reaching_policy` is an example.

Policies named here count as goal-directed: `wm bc` clones their episodes, and `wm plan` collects fresh goals with
the policy that collected a checkpoint's training data when that store is not on the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import gymnasium as gym
import numpy as np

from envs.entry_points import load_factory
from wm.errors import WMError

BUILTIN = ("random", "smooth", "expert")
"""The collector's own policies: i.i.d. uniform actions, time-correlated random actions, the noisy scripted expert."""
UNDIRECTED = ("random", "smooth")
"""Policies that pursue no goal: their episodes are not demonstrations."""


class BehaviourPolicy(Protocol):
    def act(self, obs: dict[str, np.ndarray], info: dict) -> np.ndarray:
        """`obs` (one env's `rgb` and `proprio`) and the step's `info` -> action `(A,)`."""
        ...


def is_goal_directed(policy: str) -> bool:
    """Whether episodes collected with `policy` pursue goals (the expert or a policy of your own; not a record that
    names no policy, such as an import's)."""
    return isinstance(policy, str) and policy not in UNDIRECTED


def load_behaviour(reference: str) -> Callable[[gym.spaces.Box, np.random.Generator], BehaviourPolicy]:
    """The factory `reference` (`package.module:factory`) names, for `wm collect --policy`."""
    if ":" not in reference:
        raise WMError(f"unknown policy {reference!r}; use one of {', '.join(BUILTIN)} or package.module:factory")
    return load_factory(reference, "--policy", "behaviour policy")


def start_episode(factory: Callable, reference: str, action_space: gym.spaces.Box,
                  rng: np.random.Generator) -> BehaviourPolicy:  # fmt: skip
    """`factory(action_space, rng)`, its failure a one-line error naming the factory."""
    try:
        policy = factory(action_space, rng)
    except Exception as e:
        raise WMError(
            f"the behaviour policy factory {reference}(action_space, rng) failed: {type(e).__name__}: {e}"
        ) from e
    if not callable(getattr(policy, "act", None)):
        raise WMError(f"{reference} returned {type(policy).__name__}, which has no act(obs, info); return a policy")
    return policy


def act(policy: BehaviourPolicy, reference: str, obs: dict, info: dict, action_space: gym.spaces.Box) -> np.ndarray:
    """The policy's action for one env, checked and clipped to the action bounds: `(A,)` float32."""
    try:
        action = np.asarray(policy.act(obs, info), dtype=np.float32)
    except Exception as e:
        raise WMError(f"the behaviour policy {reference} failed in act(obs, info): {type(e).__name__}: {e}") from e
    if action.shape != action_space.shape or not np.all(np.isfinite(action)):
        raise WMError(f"the behaviour policy {reference} returned an action of shape {action.shape} (finite: "
                      f"{bool(np.all(np.isfinite(action)))}); the env takes finite actions of shape "
                      f"{action_space.shape}")  # fmt: skip
    return np.clip(action, action_space.low, action_space.high)
