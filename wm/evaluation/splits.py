"""Held-out episodes: which episodes of a store a checkpoint never trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wm.data.store import EpisodeStore
from wm.errors import WMError


def held_out_episodes(config: dict, store: EpisodeStore) -> tuple[np.ndarray, str]:
    """`(episode indices, description)`: the validation episodes of the training run when `store` is the run's
    training store (`config` is a checkpoint's config), every episode otherwise."""
    data = config.get("data", {})
    if data.get("spec") != store.spec:
        raise WMError(
            f"{store.root} holds {store.spec.get('env', {}).get('id')} data, but the checkpoint was trained on "
            f"{data.get('spec', {}).get('env', {}).get('id')}; pass a store of the same env and spec"
        )
    if Path(data.get("store", "")) == store.root.resolve():
        val = np.asarray(data.get("val_episodes", []), dtype=np.int64)
        if len(val) == 0:
            raise WMError("the checkpoint's run held out no episodes (val_fraction=0); pass another store")
        return val, "validation episodes of the training store"
    return np.arange(store.num_episodes), "all episodes of a store the model never trained on"
