"""Minari datasets, read through the `minari` package (HDF5 or Arrow storage).

SRC is a dataset directory (the one holding `data/metadata.json`, or `data/` itself) or a dataset id found under
`MINARI_DATASETS_PATH` (default ~/.minari/datasets); nothing is downloaded. Observations must carry images: an image
observation space, or a Dict space with an image entry (rgb, chosen with --camera when there are several) beside
a 1-D entry for proprio (--proprio-key); vector-only datasets are refused, since the store trains on pixels.

Alignment: a Minari episode has L+1 observations and L actions, action[t] taken at observation t; the store keeps
all L+1 frames with action[t] at frame t and action 0 at the final frame, so nothing is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.data.importers.frames import is_image_shape, to_store_rgb
from wm.data.importers.source import ImportOptions, Source, aligned_actions, data_bounds, pick_key
from wm.errors import WMError

ALIGNMENT = "L+1 observations and L actions per episode: action[t] at frame t, action 0 appended at the last frame"
OBSERVATION = "observation"  # the key this importer gives a non-Dict observation space


def _load(src: str):
    import minari

    path = Path(src)
    for data in (path / "data", path):
        if (data / "metadata.json").is_file():
            try:
                return minari.MinariDataset(data)
            except (ValueError, KeyError, OSError) as e:
                raise WMError(f"{data} cannot be read as a Minari dataset ({e})") from None
    try:
        return minari.load_dataset(src)
    except (FileNotFoundError, ValueError) as e:
        raise WMError(
            f"no Minari dataset at {src}: not a directory with data/metadata.json, nor a local dataset id ({e})"
        ) from None


def _entries(space) -> dict:
    """`{key: space}` of the observation space's entries (a Dict's own keys; a single space as "observation")."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return dict(space.spaces)
    return {OBSERVATION: space}


def open_minari(src: str, opts: ImportOptions) -> Source:
    """The Minari dataset `src` (a directory or a local dataset id), checked."""
    import gymnasium as gym

    dataset = _load(src)
    act_space = dataset.action_space
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise WMError(f"Minari dataset {dataset.id} has {act_space} actions; the store needs a 1-D Box action space")
    entries = {k: s for k, s in _entries(dataset.observation_space).items() if isinstance(s, gym.spaces.Box)}
    images = {k: s.shape for k, s in entries.items() if is_image_shape(s.shape)}
    vectors = {k: s.shape for k, s in entries.items() if len(s.shape) == 1}
    if not images:
        raise WMError(
            f"Minari dataset {dataset.id} has no image observations (entries {sorted(entries)}); "
            "the store trains on pixels: record the dataset with image observations"
        )
    rgb = pick_key("image observation", images, opts.rgb_key, ("rgb", "image", "pixels"), "--camera")
    proprio = pick_key(
        "vector observation", vectors, opts.proprio_key, ("proprio", "state", "observation"), "--proprio-key"
    )
    if opts.action_key not in (None, "actions"):
        raise WMError("--action-key does not apply to Minari datasets: their actions are the episodes' `actions`")
    low, high = np.asarray(act_space.low, np.float64), np.asarray(act_space.high, np.float64)
    bounded = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)))
    if not bounded:
        low, high = data_bounds(np.concatenate([ep.actions for ep in dataset.iterate_episodes()]))

    def observation(episode, key: str) -> np.ndarray:
        obs = episode.observations
        return obs[key] if isinstance(obs, dict) else obs

    def read():
        for episode in dataset.iterate_episodes():
            frames = to_store_rgb(observation(episode, rgb), opts.image_size, rgb)
            yield {
                "rgb": frames,
                "proprio": np.asarray(observation(episode, proprio), np.float32),
                "action": aligned_actions(episode.actions, len(frames)),
            }

    env_spec = dataset.env_spec
    return Source(
        format="minari",
        version=dataset.minari_version,
        path=str(Path(dataset.storage.data_path).resolve()),
        env_id=env_spec.id if env_spec is not None else f"minari:{dataset.id}",
        fps=None,
        num_episodes=dataset.total_episodes,
        proprio_dim=int(vectors[proprio][0]),
        action_dim=int(act_space.shape[0]),
        action_bounds=(np.asarray(low).tolist(), np.asarray(high).tolist()),
        bounds_from="action space" if bounded else "data",
        keys={"rgb": rgb, "proprio": proprio, "action": "actions"},
        alignment=ALIGNMENT,
        episodes=read,
        metadata={"dataset_id": dataset.id, "total_steps": dataset.total_steps},
    )
