"""Recording goal-reaching runs as whole episodes in the store layout (`envs.collector`'s): what `wm improve` appends
to its store after running its policy on the real env.

`EpisodeRecorder` is handed to `goal_reaching.run_controller`, which reports the reset and every step of its B envs;
`episodes()` then gives B episodes of `budget + 1` frames, time-major: `rgb (L, H, W, 3)`, `proprio (L, P)`,
`action (L, A)` (action[t] applied at frame t, the last frame's 0), `reward (L,)` (reward[t] received for action[t],
the last 0), `success (L,)`, and `state` / `goal (L, S)` where the env reports them.
"""

from __future__ import annotations

import numpy as np


class EpisodeRecorder:
    def __init__(self) -> None:
        self.frames: list[dict] = []  # per time step: {key: (B, ...)}
        self.actions: list[np.ndarray] = []  # (B, A) per step
        self.rewards: list[np.ndarray] = []  # (B,) per step

    def observed(self, obs_list: list[dict], infos: list[dict], goals: list) -> None:
        """The B envs' observations and infos at one frame; `goals`: each env's goal state (None where unknown)."""
        frame = {k: np.stack([o[k] for o in obs_list]) for k in ("rgb", "proprio")}
        frame["success"] = np.array([bool(i.get("success", False)) for i in infos])
        if all("state" in i for i in infos):
            frame["state"] = np.stack([i["state"] for i in infos])
        if all(g is not None for g in goals):
            frame["goal"] = np.stack([np.asarray(i.get("goal", g)) for i, g in zip(infos, goals, strict=True)])
        self.frames.append(frame)

    def stepped(self, actions: np.ndarray, rewards) -> None:
        """The actions `(B, A)` sent after the last frame, and the rewards `(B,)` they earned."""
        self.actions.append(np.asarray(actions, np.float32))
        self.rewards.append(np.asarray(rewards, np.float32))

    def episodes(self) -> list[dict[str, np.ndarray]]:
        """The B recorded episodes (see the module docstring)."""
        batch, dims = self.actions[0].shape
        actions = np.stack([*self.actions, np.zeros((batch, dims), np.float32)], axis=1)
        rewards = np.stack([*self.rewards, np.zeros(batch, np.float32)], axis=1)
        keys = set.intersection(*(set(f) for f in self.frames))
        stacked = {k: np.stack([f[k] for f in self.frames], axis=1) for k in keys}
        return [{**{k: v[b] for k, v in stacked.items()}, "action": actions[b], "reward": rewards[b]}
                for b in range(batch)]  # fmt: skip
