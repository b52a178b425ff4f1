"""Goal-conditioned behaviour cloning data: expert blocks with hindsight goals, as world-model latents.

`HindsightBlocks(frames, history, frameskip)` yields one item per (episode, time t) of the given episodes:
`z_hist (history, N, D)` the latents of frames t-(history-1)*fs .. t (the episode's first frame repeated before
it starts, as a policy sees it at an episode's start), `z_goal (N, D)` the latent of a frame k blocks later
(k uniform in `goal_blocks`, velocities zeroed as every goal), `action (fs * A,)` the block the expert applied
from t. Goals are a pure function of (seed, index), so a resumed run sees the same data.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from wm.data.latent_frames import EpisodeLatents
from wm.errors import WMError


class HindsightBlocks(Dataset):
    def __init__(
        self,
        frames: EpisodeLatents,
        history: int,
        frameskip: int,
        goal_blocks: tuple[int, int] = (1, 8),
        seed: int = 0,
    ):
        self.frames, self.history, self.fs, self.goal_blocks, self.seed = frames, history, frameskip, goal_blocks, seed
        lo = goal_blocks[0]
        starts = [
            (pos, t)
            for pos, length in enumerate(frames.lengths)
            for t in range(0, int(length) - lo * frameskip)  # a full block and a goal lo blocks on
        ]
        if not starts:
            raise WMError(f"no episode is longer than {lo * frameskip} frames: too short for goals {lo}+ blocks on")
        self.starts = np.array(starts, np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict:
        pos, t = self.starts[index]
        length, offset = int(self.frames.lengths[pos]), int(self.frames.offsets[pos])
        rng = np.random.default_rng([self.seed, index])
        lo, hi = self.goal_blocks
        goal = min(t + int(rng.integers(lo, hi + 1)) * self.fs, length - 1)
        hist = offset + np.maximum(t - np.arange(self.history - 1, -1, -1) * self.fs, 0)
        return {
            "z_hist": self.frames.latents(hist),
            "z_goal": self.frames.latents(np.array(offset + goal), goal=True),
            "action": self.frames.action_blocks(np.array([offset + t]), 1, self.fs)[0, 0],
        }
