"""Hindsight-relabelled goals for success heads: any frame of an episode is a goal for the frames around it.

`HindsightGoals` adds to each training window (see `wm.data.windows`) a goal frame from the same episode and a
label per window frame: `judge(state_t, goal_state)`, the env's own success test (`env.is_success`) on the
simulator states. Half the goals are drawn within `near` env steps of the window's last frame (mostly successes),
half anywhere in the episode (mostly failures); the head's loss balances the classes. The goal's proprio
velocities are zeroed, as the goals a planner or policy is given (a goal says where to be, not how fast to move).
Goals are a pure function of (seed, window index), so a resumed run sees the same pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from wm.data.windows import WindowDataset
from wm.errors import WMError

Judge = Callable[[np.ndarray, np.ndarray], bool]  # (state (S,), goal state (S,)) -> success


def env_judge(env_id: str | None) -> tuple[Judge, tuple[int, ...]] | None:
    """`(is_success, proprio velocity dims)` of env `env_id` when it judges success from simulator states: a
    built-in, or any env `make_env` makes (`module:factory`, an entry point, a gymnasium id) that has an
    `is_success(state, goal)` hook; None for an env without one or an id no env stands behind (an imported
    dataset's)."""
    from envs.registry import make_env

    if not env_id:
        return None
    try:
        env = make_env(env_id).unwrapped
    except WMError:
        return None
    if not callable(getattr(env, "is_success", None)) or not getattr(env, "has_success", True):
        env.close()
        return None
    return env.is_success, tuple(getattr(env, "proprio_velocity_dims", ()))


class HindsightGoals(Dataset):
    """Window items `{..., "state": (n, S)}` -> items with `goal_<name>` (the goal frame's value of each item name
    in `goal_keys`, e.g. rgb `(H, W, 3)` or features `(N, Dv)`, and proprio `(P,)`) and `success (n,)` bool; the
    window's states are dropped."""

    def __init__(
        self,
        windows: WindowDataset,
        judge: Judge,
        goal_keys: tuple[str, ...],
        velocity_dims: tuple[int, ...] = (),
        near: int = 10,
        seed: int = 0,
    ):
        self.windows, self.judge, self.goal_keys = windows, judge, goal_keys
        self.velocity_dims, self.near, self.seed = list(velocity_dims), near, seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.windows[index])
        pos, start = self.windows.locate(index)
        length = self.windows.episode_length(pos)
        last = start + self.windows.config.span - 1
        rng = np.random.default_rng([self.seed, index])
        if rng.random() < 0.5:
            goal = int(np.clip(last + rng.integers(-self.near, self.near + 1), 0, length - 1))
        else:
            goal = int(rng.integers(0, length))
        goal_state = self.windows.rows("state", pos, goal, goal + 1)[0]
        states = item.pop("state").numpy()
        item["success"] = torch.tensor([bool(self.judge(s, goal_state)) for s in states])
        source = {name: key for key, name in self.windows.rename.items()}  # item names -> store keys
        for name in self.goal_keys:
            value = np.array(self.windows.rows(source.get(name, name), pos, goal, goal + 1)[0])
            if name == "proprio":
                value[self.velocity_dims] = 0.0
            item[f"goal_{name}"] = torch.from_numpy(value)
        return item
