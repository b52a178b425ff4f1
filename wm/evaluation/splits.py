"""Held-out episodes: which episodes of a store a checkpoint never trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.data.store import EpisodeStore
from wm.errors import WMError


def is_training_store(config: dict, root) -> bool:
    """Whether the store at `root` is the one the checkpoint (`config`) trained on: the store its config names (a
    relative name, as shipped checkpoints give it, from the working directory) or a copy whose path ends the same
    way (`data/WallMix3` names `/work/data/WallMix3` too, so its training episodes never pass for held-out ones)."""
    named = config.get("data", {}).get("store")
    if not named:
        return False
    named, root = Path(named), Path(root).resolve()
    return root == named.resolve() or (not named.is_absolute() and root.parts[-len(named.parts) :] == named.parts)


def held_out_episodes(config: dict, store: EpisodeStore) -> tuple[np.ndarray, str]:
    """`(episode indices, description)`: the validation episodes of the training run when `store` is the run's
    training store (`config` is a checkpoint's config), every episode otherwise."""
    data = config.get("data", {})
    if data.get("spec") != store.spec:
        raise WMError(
            f"{store.root} holds {store.spec.get('env', {}).get('id')} data, but the checkpoint was trained on "
            f"{data.get('spec', {}).get('env', {}).get('id')}; pass a store of the same env and spec"
        )
    if is_training_store(config, store.root):
        val = np.asarray(data.get("val_episodes", []), dtype=np.int64)
        if len(val) == 0:
            raise WMError("the checkpoint's run held out no episodes (val_fraction=0); pass another store")
        if val.max() >= store.num_episodes:
            raise WMError(f"{store.root} has {store.num_episodes} episodes, fewer than the checkpoint's training "
                          "store; pass that store or a new one")  # fmt: skip
        return val, "validation episodes of the training store"
    return np.arange(store.num_episodes), "all episodes of a store the model never trained on"
