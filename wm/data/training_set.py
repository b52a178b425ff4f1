"""The training and validation windows of a world model, read from an episode store.

`fill_from_store` sets a model config's shapes from the store (image size, action and proprio dims, bounds);
`window_datasets` reads the keys a model family trains on, where `"features"` means the frozen encoder's feature
cache (filled first, `wm.data.features`) and `wrap` may decorate each dataset (goal images for a success head).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from wm.data.features import ensure_feature_cache
from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset
from wm.errors import WMError

REQUIRED = ("rgb", "proprio", "action")


def fill_from_store(model_cfg, store: EpisodeStore) -> None:
    """Set `image_size`, `action_dim` and `proprio_dim` of `model_cfg` from `store`'s keys, and the action bounds
    from its spec where the config has unset `action_low`/`action_high`."""
    for key in REQUIRED:
        if not store.has(key):
            raise WMError(f"{store.root} has no {key!r}; world models train on stores made by `wm collect`")
    model_cfg.image_size = int(store.keys["rgb"]["shape"][0])
    model_cfg.action_dim = int(store.keys["action"]["shape"][0])
    model_cfg.proprio_dim = int(store.keys["proprio"]["shape"][0])
    action = store.spec.get("action", {})
    if getattr(model_cfg, "action_low", False) is None and "low" in action and "high" in action:
        model_cfg.action_low, model_cfg.action_high = list(action["low"]), list(action["high"])


def window_datasets(
    data,
    keys: list[str],
    window: WindowConfig,
    train_episodes,
    val_episodes,
    encoder=None,
    wrap: Callable[[Dataset], Dataset] | None = None,
) -> tuple[Dataset, Dataset | None]:
    """`(train, val or None)` window datasets of the store at `data` reading `keys` (`"features"`: `encoder`'s
    cached features, computed now where missing)."""
    keys, rename = list(keys), None
    if "features" in keys:
        cache = ensure_feature_cache(data, encoder)
        keys[keys.index("features")] = cache
        rename = {cache: "features"}
    store = EpisodeStore.open(data)
    train = WindowDataset(store, train_episodes, window, keys=keys, rename=rename)
    val = WindowDataset(store, val_episodes, window, keys=keys, rename=rename) if len(val_episodes) else None
    if wrap is not None:
        train, val = wrap(train), (wrap(val) if val is not None else None)
    return train, val
