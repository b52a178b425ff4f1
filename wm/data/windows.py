"""Training windows over an episode store: `num_hist + num_pred` frames `frameskip` apart, with the actions
between consecutive frames stacked per skipped block, a train/val split by episode and normalisation statistics.

A window starting at row t of an episode holds frames t, t+fs, ..., t+(n-1)*fs (n = num_hist + num_pred) and
n-1 action blocks: block k = actions t+k*fs .. t+(k+1)*fs-1 flattened, i.e. everything applied between frame k
and frame k+1 of the window. Windows never cross episode boundaries and never read the last frame's (padding)
action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from wm.data.store import EpisodeStore
from wm.errors import WMError


@dataclass(frozen=True)
class WindowConfig:
    num_hist: int = 3
    num_pred: int = 1
    frameskip: int = 5

    @property
    def num_frames(self) -> int:
        return self.num_hist + self.num_pred

    @property
    def span(self) -> int:
        """Rows covered by one window, first frame to last frame inclusive."""
        return (self.num_frames - 1) * self.frameskip + 1


def split_episodes(num_episodes: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split by episode: `(train_ids, val_ids)`, sorted; at least one val episode when possible."""
    if not 0.0 <= val_fraction < 1.0:
        raise WMError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes > 1:
        n_val = max(n_val, 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def normalization_stats(store: EpisodeStore, episodes: Sequence[int], keys=("action", "proprio")) -> dict:
    """Per-dimension `{key: {"mean": [...], "std": [...]}}` over the given episodes (std floored at 1e-6).

    Actions exclude each episode's final padding row.
    """
    stats = {}
    for key in keys:
        parts = []
        for i in episodes:
            start, end = store.episode_bounds(int(i))
            parts.append(store.read(key, start, end - 1 if key == "action" else end))
        values = np.concatenate(parts).astype(np.float64)
        stats[key] = {"mean": values.mean(0).tolist(), "std": np.maximum(values.std(0), 1e-6).tolist()}
    return stats


class WindowDataset(Dataset):
    """Windows from the given episodes, as torch tensors.

    Item: `{"rgb": (n, H, W, 3) uint8, "proprio": (n, P) float32, "action": (n-1, frameskip*A) float32,
    "episode": int, "start": int}` with only the requested `keys` (renamed by `rename`, e.g.
    `{"features/<id>": "features"}`); "action" is always included. `in_memory=True` loads the episodes once
    (fast random access); False reads each window from zarr.
    """

    def __init__(
        self,
        store: EpisodeStore,
        episodes: Sequence[int],
        config: WindowConfig = WindowConfig(),
        keys: Sequence[str] = ("rgb", "proprio"),
        in_memory: bool = True,
        rename: Mapping[str, str] | None = None,
    ):
        missing = [k for k in (*keys, "action") if not store.has(k)]
        if missing:
            raise WMError(f"{store.root} has no {missing}; it holds {sorted(store.keys)}")
        self.store, self.config, self.keys = store, config, tuple(keys)
        self.rename = dict(rename or {})
        self.episodes = np.asarray(episodes, dtype=np.int64)
        bounds = np.array([store.episode_bounds(int(i)) for i in self.episodes], dtype=np.int64).reshape(-1, 2)
        counts = np.maximum(bounds[:, 1] - bounds[:, 0] - config.span + 1, 0)
        if counts.sum() == 0:
            raise WMError(
                f"no episode is long enough for windows of {config.span} frames (num_hist + num_pred = "
                f"{config.num_frames}, frameskip {config.frameskip}); lower frameskip or collect longer episodes"
            )
        self._bounds = bounds
        self._cum = np.cumsum(counts)
        self._cache = None
        if in_memory:
            self._cache = {k: [store.read(k, int(s), int(e)) for s, e in bounds] for k in (*self.keys, "action")}

    def __len__(self) -> int:
        return int(self._cum[-1])

    def episode_length(self, pos: int) -> int:
        """Frames of the episode at position `pos` of `self.episodes`."""
        return int(self._bounds[pos, 1] - self._bounds[pos, 0])

    def locate(self, index: int) -> tuple[int, int]:
        """`(position in self.episodes, start row within that episode)` of window `index`."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        pos = int(np.searchsorted(self._cum, index, side="right"))
        before = int(self._cum[pos - 1]) if pos > 0 else 0
        return pos, index - before

    def rows(self, key: str, pos: int, lo: int, hi: int) -> np.ndarray:
        """Rows `[lo, hi)` of `key` of the episode at position `pos` of `self.episodes`."""
        if self._cache is not None:
            return self._cache[key][pos][lo:hi]
        start = int(self._bounds[pos, 0])
        return self.store.read(key, start + lo, start + hi)

    def __getitem__(self, index: int) -> dict:
        pos, t = self.locate(index)
        cfg = self.config
        item = {"episode": int(self.episodes[pos]), "start": t}
        for key in self.keys:
            item[self.rename.get(key, key)] = torch.from_numpy(
                np.ascontiguousarray(self.rows(key, pos, t, t + cfg.span)[:: cfg.frameskip])
            )
        actions = self.rows("action", pos, t, t + cfg.span - 1)  # ((n-1)*fs, A)
        item["action"] = torch.from_numpy(actions.reshape(cfg.num_frames - 1, -1).astype(np.float32))
        return item
