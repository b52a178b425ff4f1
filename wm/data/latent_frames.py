"""The frames of a store's episodes as world-model latents, for imagination starts and policy learning.

`EpisodeLatents(model, store, episodes)` holds the episodes' frames, proprio and actions in memory, flat (one row
per frame, `offsets` where each episode starts). `latents(rows)` gives `(*rows.shape, N, D)`; as goals
(`goal=True`) the proprio velocities `velocity_dims` are zeroed first (a goal says where to be, not how fast to
move). Small latents are encoded once for every frame (twice: as frames and as goals); large ones (the diffusion
model's pixels) are encoded when asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from wm.data.store import EpisodeStore
from wm.device import module_device
from wm.errors import WMError

PRECOMPUTE_FLOATS = 4096  # latents of more floats per frame are encoded on demand


class EpisodeLatents:
    def __init__(self, model, store_path, episodes=None, velocity_dims=(), device=None, keys=()):
        """`keys`: extra store keys to keep per frame (e.g. "state"), as numpy arrays in `extra`; latents and actions
        live on `device` (default: the model's)."""
        device = device or module_device(model)
        self.model, self.device, self.velocity_dims = model, device, list(velocity_dims)
        with EpisodeStore.open(store_path) as store:
            for key in ("rgb", "proprio", "action", *keys):
                if not store.has(key):
                    raise WMError(f"{store_path} has no {key!r}; it holds {sorted(store.keys)}")
            self.spec, self.root = store.spec, store.root
            ids = np.arange(store.num_episodes) if episodes is None else np.asarray(episodes, np.int64)
            data = [store.episode(int(e), ["rgb", "proprio", "action", *keys]) for e in ids]
        if not data:
            raise WMError(f"no episodes of {store_path} to read latents from")
        self.episodes = ids
        self.position = {int(e): i for i, e in enumerate(ids)}  # store episode -> position here
        self.lengths = np.array([len(d["rgb"]) for d in data], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.rgb, self.proprio = (np.concatenate([d[k] for d in data]) for k in ("rgb", "proprio"))
        self.action = torch.as_tensor(np.concatenate([d["action"] for d in data]), dtype=torch.float32, device=device)
        self.extra = {k: np.concatenate([d[k] for d in data]) for k in keys}
        spec = model.spec
        self.shape = (spec.tokens, spec.latent_dim)
        self.precomputed = spec.tokens * spec.latent_dim <= PRECOMPUTE_FLOATS
        if self.precomputed:
            self.z, self.z_goal = self.encode(self.rgb, self.proprio), self.encode(self.rgb, self.proprio, True)
            self.rgb = self.proprio = None  # the frames are not needed again (an 800-episode store: 2 GB)

    @torch.no_grad()
    def encode(self, rgb: np.ndarray, proprio: np.ndarray, goal: bool = False, batch: int = 512) -> torch.Tensor:
        """Latents `(L, N, D)` of frames `rgb (L, H, W, 3)`, `proprio (L, P)` (goal velocities zeroed)."""
        proprio = np.array(proprio, np.float32)
        if goal and self.velocity_dims:
            proprio[:, self.velocity_dims] = 0.0
        parts = []
        for i in range(0, len(rgb), batch):
            obs = {
                "rgb": torch.as_tensor(rgb[i : i + batch], device=self.device)[:, None],
                "proprio": torch.as_tensor(proprio[i : i + batch], device=self.device)[:, None],
            }
            parts.append(self.model.encode(obs)[:, 0].float())
        return torch.cat(parts) if parts else torch.zeros((0, *self.shape), device=self.device)

    def latents(self, rows: np.ndarray, goal: bool = False) -> torch.Tensor:
        """Latents `(*rows.shape, N, D)` of the frames at flat `rows`."""
        rows = np.asarray(rows)
        if self.precomputed:
            return (self.z_goal if goal else self.z)[torch.as_tensor(rows, device=self.device)]
        flat = rows.reshape(-1)
        return self.encode(self.rgb[flat], self.proprio[flat], goal).reshape(*rows.shape, *self.shape)

    def action_blocks(self, first_rows: np.ndarray, blocks: int, frameskip: int) -> torch.Tensor:
        """`(n, blocks, frameskip*A)`: the actions from each of `first_rows (n,)` on, stacked per block."""
        rows = torch.as_tensor(np.asarray(first_rows)[:, None] + np.arange(blocks * frameskip), device=self.device)
        return self.action[rows].reshape(len(first_rows), blocks, -1)
