"""Goal-conditioned behaviour cloning data: expert blocks with hindsight goals, as world-model latents.

`HindsightBlocks(frames, history, frameskip)` yields one item per (episode, time t, goal offset k) of the given
episodes, k in `goal_blocks` (every offset is an item: an epoch sees each start with every goal):
`z_hist (history, N, D)` the latents of frames t-(history-1)*fs .. t (the episode's first frame repeated before
it starts, as a policy sees it at an episode's start), `z_goal (N, D)` the latent of the frame k blocks later
(the episode's last frame if it ends first; velocities zeroed as every goal), `action (fs * A,)` the block the
expert applied from t. `__getitems__` reads a whole batch at once (vectorised), which the training loop uses.
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
    ):
        self.frames, self.history, self.fs, self.goal_blocks = frames, history, frameskip, goal_blocks
        lo, hi = goal_blocks
        longest = int(max(frames.lengths))
        if hi * frameskip >= longest:  # every goal would be clipped to an episode's last frame
            most = (longest - 1) // frameskip
            raise WMError(f"goals up to {hi} blocks ({hi * frameskip} frames) ahead reach past every episode (the "
                          f"longest has {longest} frames); use at most {most} goal blocks")  # fmt: skip
        starts = [
            (pos, t)
            for pos, length in enumerate(frames.lengths)
            for t in range(0, int(length) - lo * frameskip)  # a full block and a goal lo blocks on
        ]
        if not starts:
            raise WMError(f"no episode is longer than {lo * frameskip} frames: too short for goals {lo}+ blocks on")
        self.starts = np.array(starts, np.int64)
        self.offsets_k = np.arange(lo, hi + 1)

    def __len__(self) -> int:
        return len(self.starts) * len(self.offsets_k)

    def __getitems__(self, indices) -> dict:
        """The batch `{"z_hist": (B, history, N, D), "z_goal": (B, N, D), "action": (B, fs * A)}` of `indices`."""
        start, k = np.divmod(np.asarray(indices, np.int64), len(self.offsets_k))
        pos, t = self.starts[start, 0], self.starts[start, 1]
        lengths, offsets = self.frames.lengths[pos], self.frames.offsets[pos]
        goal = np.minimum(t + self.offsets_k[k] * self.fs, lengths - 1)
        back = np.arange(self.history - 1, -1, -1) * self.fs
        hist = offsets[:, None] + np.maximum(t[:, None] - back, 0)
        return {
            "z_hist": self.frames.latents(hist),
            "z_goal": self.frames.latents(offsets + goal, goal=True),
            "action": self.frames.action_blocks(offsets + t, 1, self.fs)[:, 0],
        }

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
