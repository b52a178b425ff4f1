"""diffusion_policy's ReplayBuffer: a zarr group (v2 as diffusion_policy writes it, v3 too; a directory or a
.zarr.zip) of time-major arrays `data/<key>` `(N, ...)` with `meta/episode_ends` `(E,)` cumulative ends.

Keys: --rgb-key (default img, image, rgb, camera_0, agentview_image or the only image array: `(N, H, W, 3)` or
`(N, 3, H, W)`, uint8 or float in [0, 1] or [0, 255]), --proprio-key (default state, agent_pos, proprio,
robot_eef_pos or the only other `(N, D)` array), --action-key (default action).

Alignment: row t holds the observation at step t and the action taken from it (diffusion_policy's convention),
which is the store's; the last row's action, which no recorded frame follows, is stored as 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.data.importers.frames import is_image_shape, to_store_rgb
from wm.data.importers.source import ImportOptions, Source, aligned_actions, data_bounds, pick_key
from wm.errors import WMError

ALIGNMENT = "row t: observation at step t and the action taken from it; the last row's action is stored as 0"
RGB_KEYS = ("img", "image", "rgb", "camera_0", "agentview_image")
PROPRIO_KEYS = ("state", "agent_pos", "proprio", "robot_eef_pos")


def _open_group(root: Path):
    import zarr

    if not root.exists():
        raise WMError(f"no zarr replay buffer at {root}")
    try:
        store = (
            zarr.storage.ZipStore(root, mode="r") if root.is_file() else zarr.storage.LocalStore(root, read_only=True)
        )
        group = zarr.open_group(store=store, mode="r")
    except Exception as e:
        raise WMError(
            f"{root} is not a zarr group ({type(e).__name__}); pass a diffusion_policy replay buffer"
        ) from None
    missing = [k for k in ("data", "meta/episode_ends") if k not in group]
    if missing:
        raise WMError(f"{root} is a zarr group but not a replay buffer: it has no {' or '.join(missing)}")
    return group


def _read(array, key: str, start: int, stop: int) -> np.ndarray:
    try:
        return np.asarray(array[start:stop])
    except Exception as e:
        raise WMError(
            f"data/{key} rows {start}:{stop} cannot be decoded ({type(e).__name__}: {e}); if it is image-compressed, "
            "install the codec package that wrote it (e.g. imagecodecs)"
        ) from None


def open_replay_buffer(src: str, opts: ImportOptions) -> Source:
    """The replay buffer at `src`, checked."""
    root = Path(src)
    group = _open_group(root)
    data = group["data"]
    arrays = {k: data[k] for k in data.array_keys()}
    ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
    if not len(ends) or np.any(np.diff(ends, prepend=0) <= 0):
        raise WMError(f"{root}/meta/episode_ends is empty or does not increase; no episodes to import")
    short = [k for k, a in arrays.items() if a.shape[0] < ends[-1]]
    if short:
        raise WMError(f"{root}: data/{short[0]} has fewer rows than meta/episode_ends says ({ends[-1]})")
    images = {k: a.shape[1:] for k, a in arrays.items() if is_image_shape(a.shape[1:])}
    vectors = {k: a.shape[1:] for k, a in arrays.items() if a.ndim == 2}
    rgb = pick_key("image array", images, opts.rgb_key, RGB_KEYS, "--rgb-key")
    action = pick_key("action array", vectors, opts.action_key, ("action",), "--action-key")
    vectors.pop(action)
    proprio = pick_key("state array", vectors, opts.proprio_key, PROPRIO_KEYS, "--proprio-key")
    starts = np.r_[0, ends[:-1]]

    def read():
        for start, stop in zip(starts.tolist(), ends.tolist(), strict=True):
            frames = to_store_rgb(_read(arrays[rgb], rgb, start, stop), opts.image_size, f"data/{rgb}")
            yield {
                "rgb": frames,
                "proprio": _read(arrays[proprio], proprio, start, stop).astype(np.float32),
                "action": aligned_actions(_read(arrays[action], action, start, stop), stop - start),
            }

    return Source(
        format="zarr",
        version=f"zarr v{group.metadata.zarr_format}",
        path=str(root.resolve()),
        env_id=f"zarr:{root.resolve().name}",
        fps=None,
        num_episodes=len(ends),
        proprio_dim=int(vectors[proprio][0]),
        action_dim=int(arrays[action].shape[1]),
        action_bounds=data_bounds(_read(arrays[action], action, 0, int(ends[-1]))),
        bounds_from="data",
        keys={"rgb": rgb, "proprio": proprio, "action": action},
        alignment=ALIGNMENT,
        episodes=read,
        episode_steps=int(np.diff(ends, prepend=0).max()) - 1,
        metadata={"arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()}},
    )
