"""The training and validation windows of a world model, read from an episode store.

`fill_from_store` sets a model config's shapes from the store (image size, action and proprio dims, bounds);
`success_training_data` says what the model's success head trains on; `window_datasets` reads the keys a model
family trains on, where `"features"` means the frozen encoder's feature cache (filled first, `wm.data.features`)
and `wrap` may decorate each dataset (hindsight goals or goal images for a success head).

Success labels (`success_labels` of the model config):
  hindsight  goals are frames of the same episode and the env judges each pair of simulator states (any env with
             an `is_success` hook: built-in, `module:factory`, entry point, gymnasium id); without states or a
             judge it falls back to `recorded` (frame-only), and says so;
  recorded   the store's `success` column, against the rendered image of each frame's goal state where the model
             takes per-frame goal images (the diffusion model) and the store has goal states of a built-in env,
             else of the frame alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch.utils.data import Dataset

from wm.data.features import ensure_feature_cache
from wm.data.goal_images import WithGoalImages, goal_renderer
from wm.data.hindsight import HindsightGoals, env_judge
from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset
from wm.errors import WMError

REQUIRED = ("rgb", "proprio", "action")
log = logging.getLogger("wm.data")
Wrap = Callable[[Dataset], Dataset]


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


def success_training_data(store: EpisodeStore, model_cfg, visual_key: str = "rgb") -> tuple[list[str], Wrap | None]:
    """`(extra window keys, dataset wrapper)` for the success head of `model_cfg` (see the module docstring), and
    the head's mode set in `model_cfg` to what the store allows (`success_goal`, or `success_head` off).
    `visual_key` is where the model reads frames from (`"features"` for a frozen encoder's cache)."""
    if not getattr(model_cfg, "success_head", False):
        return [], None
    env_id = store.spec.get("env", {}).get("id")
    if getattr(model_cfg, "success_labels", "recorded") == "hindsight" and model_cfg.success_goal:
        judged = env_judge(env_id) if store.has("state") else None
        if judged is not None:
            judge, velocity_dims = judged
            return ["state"], lambda ds: HindsightGoals(ds, judge, (visual_key, "proprio"), velocity_dims)
        log.warning("no simulator states or success test for %s: the success head learns the recorded success "
                    "column without a goal", env_id)  # fmt: skip
        model_cfg.success_labels = "recorded"
    if not store.has("success"):
        log.info("%s has no success labels: no success head", store.root)
        model_cfg.success_head = False
        return [], None
    per_frame_goals = getattr(model_cfg, "PER_FRAME_GOAL_IMAGES", False)
    render = goal_renderer(store, model_cfg.image_size) if model_cfg.success_goal and per_frame_goals else None
    if render is None:
        model_cfg.success_goal = False
        return ["success"], None
    return ["success", "goal"], lambda ds: WithGoalImages(ds, render)


def window_datasets(
    data,
    keys: list[str],
    window: WindowConfig,
    train_episodes,
    val_episodes,
    encoder=None,
    wrap: Wrap | None = None,
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
