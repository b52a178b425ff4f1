"""`wm train`: build a world model and its data from a store, then run the shared training loop.

Overrides are `key=value` pairs: training fields (`lr=1e-3`, `batch_size=16`, `bf16=true`), model fields
(`num_hist=3`, `frameskip=5`, `proprio_emb_dim=0`), nested model fields (`encoder.width=96`,
`predictor.depth=4`, `predictor.conditioning=adaln`, `unet.channels=[32,64,64]` for diffusion) and data fields
(`val_fraction=0.1`, `split_seed=0`). Each value is checked against its field's type (`wm.settings`): `compile=maybe`
or `batch_size=1.5` is a one-line error, never a string that passes for true.

`--init CHECKPOINT` fine-tunes: the model (architecture, weights and the normalisation of its original data) comes
from the checkpoint (or the final checkpoint of a `wm train --out` folder), and only training and data settings may
be given. The usual use: append new episodes (more
data, another behaviour policy) to a store with the checkpoint's spec and go on training from it, without starting
over. On the checkpoint's own training store (grown since), its episodes keep its split: what it held out stays held
out, and only the appended episodes are split anew.

A DINO model's checkpoint holds its frozen encoder's tensors with the rest (and the hash of the weights they came
from), so it loads offline, without `--encoder-weights` or timm's hub.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from wm.data.collection import goal_policy
from wm.data.store import EpisodeStore
from wm.data.training_set import fill_from_store, success_training_data, window_datasets
from wm.data.windows import WindowConfig, normalization_stats, split_episodes
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint, load_weights, resolve_checkpoint
from wm.models.registry import FAMILIES, family
from wm.outputs import require_run_dir
from wm.settings import route_settings
from wm.train import TrainConfig, Trainer

FIXED = ("kind", "normalization")  # model fields the run sets: the family, the data's statistics
# the predictor's shapes follow from the model's encoder and actions
FIXED_NESTED = tuple(f"predictor.{name}" for name in ("latent_dim", "tokens_per_frame", "action_dim", "num_hist"))


@dataclass
class TrainRunConfig:
    data: str  # episode store
    model: str  # model family (`wm.models.registry.FAMILIES`)
    out: str  # run directory
    steps: int | None = None  # optimisation steps (default: the `steps` setting's)
    epochs: int | None = None  # or passes over the training windows
    encoder_weights: str | None = None  # DINOv2 weights file (dino)
    init: str | None = None  # checkpoint to fine-tune
    overrides: list | dict = field(default_factory=list)  # `key=value` texts or {key: value} (see the docstring)


@dataclass
class SplitConfig:
    """Which of the store's episodes are held out for validation (`wm.data.windows.split_episodes`)."""

    val_fraction: float = 0.1
    split_seed: int = 0


def init_from(path, kind: str, model_settings: dict) -> tuple[object, object, object]:
    """`(model config, model, checkpoint config)` of checkpoint `path` to fine-tune. Model settings can't change,
    but for the success head's (`success_*`): a checkpoint without a head gains a fresh one (e.g. to train it
    alone, `only=success`, on a frozen world model)."""
    model, config = load_checkpoint(path)
    if config.kind != kind:
        raise WMError(f"{path} holds a {config.kind} model; pass --model {config.kind}")
    fam = family(kind)
    fixed = sorted(k for k in model_settings if not k.startswith("success_"))
    if fixed:
        raise WMError(f"--init keeps the checkpoint's model; drop the model setting(s) {', '.join(fixed)}")
    if not model_settings:
        return fam.make_config(config.model), model, config
    model_cfg = fam.make_config({**config.model, **model_settings})
    model = fam.build(model_cfg.to_dict())
    load_weights(model, path, new_parts=("success",))
    return model_cfg, model, config


def inherited_split(trained_on, num_episodes: int, split: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """`(train, val)` episodes of a fine-tuning run on its checkpoint's training store (or `wm improve`'s copy of
    it) that has grown: the episodes the checkpoint knew keep its split (its held-out ones stay held out), the ones
    appended since are split apart by `split`."""
    known = len(trained_on.train_episodes) + len(trained_on.val_episodes)
    if num_episodes < known:
        raise WMError(f"the store holds {num_episodes} episodes, fewer than the {known} the checkpoint was trained "
                      "on; pass the store it was trained on (episodes are only ever appended)")  # fmt: skip
    new_train, new_val = split_episodes(num_episodes - known, split.val_fraction, split.split_seed)
    train = np.concatenate([np.asarray(trained_on.train_episodes, np.int64), known + new_train])
    val = np.concatenate([np.asarray(trained_on.val_episodes, np.int64), known + new_val])
    return np.sort(train), np.sort(val)


def run_settings(cfg: TrainRunConfig) -> tuple[object, TrainConfig, SplitConfig, dict]:
    """`(model config, TrainConfig, SplitConfig, model settings given)` of a run: the settings routed to the family's
    config (over its defaults), the training loop's and the data split's, every value type-checked."""
    if cfg.model not in FAMILIES:
        raise WMError(f"unknown --model {cfg.model!r}; use one of {', '.join(FAMILIES)}")
    fam = FAMILIES[cfg.model]
    targets = {"model": fam.config_class, "train": TrainConfig, "split": SplitConfig}
    routed = route_settings(cfg.overrides, targets, fam.nested_classes, FIXED + FIXED_NESTED)
    if cfg.encoder_weights:
        if cfg.model != "dino":
            raise WMError("--encoder-weights is for --model dino (the JEPA encoder trains from pixels)")
        routed["model"].setdefault("encoder", {})["weights"] = cfg.encoder_weights
    train_cfg, split = TrainConfig(**routed["train"]), SplitConfig(**routed["split"])
    return fam.make_config(routed["model"]), train_cfg, split, routed["model"]


def run_train(cfg: TrainRunConfig) -> dict:
    require_run_dir(cfg.out)
    model_cfg, train_cfg, split, model_settings = run_settings(cfg)
    init = init_model = init_config = None
    if cfg.init is not None:
        init = resolve_checkpoint(cfg.init, "model")
        model_cfg, init_model, init_config = init_from(init, cfg.model, model_settings)
    with EpisodeStore.open(cfg.data) as store:
        spec = store.spec
        if init_config is not None:
            init_config.trained_on.require_same_data(store, str(init))
        fill_from_store(model_cfg, store)
        if init_config is not None and init_config.trained_on.is_training_data(store):
            train_eps, val_eps = inherited_split(init_config.trained_on, store.num_episodes, split)
        else:
            train_eps, val_eps = split_episodes(store.num_episodes, split.val_fraction, split.split_seed)
        if len(train_eps) == 0:
            raise WMError(f"{cfg.data} has {store.num_episodes} episode(s): too few to train on; collect more")
        if init_model is None:  # a fine-tuned model keeps the statistics its inputs were normalised with
            model_cfg.normalization = normalization_stats(store, train_eps)
        keys = list(FAMILIES[cfg.model].data_keys)
        visual_key = "features" if "features" in keys else "rgb"
        success_keys, wrap = success_training_data(store, model_cfg, visual_key)  # what a success head learns from
        keys += success_keys
        directed = goal_policy(store)
    window = WindowConfig(model_cfg.num_hist, model_cfg.num_pred, model_cfg.frameskip)
    torch.manual_seed(train_cfg.seed)  # the initial weights follow the run's seed, not whatever ran before
    model = FAMILIES[cfg.model].build(model_cfg.to_dict()) if init_model is None else init_model.train()
    encoder = getattr(model, "encoder", None)
    train_ds, val_ds = window_datasets(cfg.data, keys, window, train_eps, val_eps, encoder=encoder, wrap=wrap)
    if cfg.epochs is not None:
        train_cfg.steps = max(1, math.ceil(cfg.epochs * len(train_ds) / train_cfg.batch_size))
    elif cfg.steps is not None:
        train_cfg.steps = cfg.steps
    run_config = {
        "model": model.cfg.to_dict(),
        "data": {
            "store": str(Path(cfg.data).resolve()),
            "spec": spec,
            "train_episodes": train_eps.tolist(),
            "val_episodes": val_eps.tolist(),
            "goal_policy": directed,  # what collects fresh goals where the store is not at hand
            "window": {"num_hist": window.num_hist, "num_pred": window.num_pred, "frameskip": window.frameskip},
            **asdict(split),
        },
    }
    if init_config is not None:
        run_config["init"] = {"checkpoint": str(Path(init).resolve()), "step": init_config.step}
    trainer = Trainer(model, train_ds, val_ds, train_cfg, cfg.out, run_config)
    resumed = trainer.resume()
    if resumed:
        print(f"resuming {cfg.out} from step {trainer.step}")
    summary = trainer.fit()
    summary["train_windows"] = len(train_ds)
    summary["val_windows"] = len(val_ds) if val_ds is not None else 0
    return summary
