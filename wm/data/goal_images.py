"""Goal images for success heads trained on the store's recorded `success`: the observation rendered at each
frame's goal state.

The built-in envs chain random goals that are not drawn in the frames, so the success head compares each frame
with an image of its goal: the env's observation rendered at the goal state (`env.observe_state(goal)`, exactly
what a planner is given as a goal image). Goal images are rendered once per distinct goal and cached in memory.
Stores from other envs (no goal states or no renderer) train a frame-only head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from wm.data.store import EpisodeStore


class GoalImages:
    """`render(goals (n, S) float64) -> (n, H, W, 3) uint8`: observations at goal states, one render per goal."""

    def __init__(self, env_id: str, image_size: int):
        from envs.registry import make_env

        self.env = make_env(env_id, image_size).unwrapped
        self.env.reset(seed=0)
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, goals: np.ndarray) -> np.ndarray:
        out = []
        for goal in np.asarray(goals, dtype=np.float64):
            key = goal.tobytes()
            if key not in self.cache:
                self.cache[key] = self.env.observe_state(goal)["rgb"]
            out.append(self.cache[key])
        return np.stack(out)


class WithGoalImages(Dataset):
    """A window dataset whose `goal (n, S)` states are replaced by `goal_rgb (n, H, W, 3)` images."""

    def __init__(self, windows: Dataset, render: GoalImages):
        self.windows, self.render = windows, render

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.windows[index])
        item["goal_rgb"] = torch.from_numpy(self.render(item.pop("goal").numpy()))
        return item


def goal_renderer(store: EpisodeStore, image_size: int) -> GoalImages | None:
    """A goal renderer when the store holds goal states of a built-in env, else None."""
    from envs.registry import is_builtin

    env_id = store.spec.get("env", {}).get("id")
    if not (store.has("goal") and env_id and is_builtin(env_id)):
        return None
    return GoalImages(env_id, image_size)
