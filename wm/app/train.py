"""`wm train`: build a world model and its data from a store, then run the shared training loop.

Overrides are `key=value` pairs: training fields (`lr=1e-3`, `batch_size=16`, `bf16=true`), model fields
(`num_hist=3`, `frameskip=5`, `proprio_emb_dim=0`), nested model fields (`encoder.width=96`,
`predictor.depth=4`, `predictor.conditioning=adaln`, `unet.channels=[32,64,64]` for diffusion) and data fields
(`val_fraction=0.1`, `split_seed=0`).
Values are parsed as JSON where possible (`true`, `3`, `1e-3`), else taken as strings.

`--init CHECKPOINT` fine-tunes: the model (architecture, weights and the normalisation of its original data) comes
from the checkpoint, and only training and data settings may be given. The usual use: append new episodes (more
data, another behaviour policy) to a store with the checkpoint's spec and go on training from it, without starting
over.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset, normalization_stats, split_episodes
from wm.errors import WMError
from wm.models.latent_world_model import LatentWMConfig
from wm.train import TrainConfig, Trainer

DATA_FIELDS = {"val_fraction": 0.1, "split_seed": 0}

# CPU-sized defaults per model family (DINO-WM / LeWM shapes, scaled down for 64 px and 2 cores)
MODEL_DEFAULTS = {
    "jepa": {
        "encoder": {"arch": "vit", "patch_size": 16, "width": 96, "depth": 3, "heads": 4, "out_dim": 64},
        "predictor": {"dim": 128, "depth": 4, "heads": 4, "dropout": 0.0, "conditioning": "adaln"},
    },
    "dino": {
        "encoder": {"variant": "vits14", "image_size": 56, "pool": None, "weights": None},
        "predictor": {"dim": 256, "depth": 4, "heads": 8, "dropout": 0.1, "conditioning": "concat"},
    },
    # DIAMOND's UNet (4 levels x 64 channels), scaled down: 3 levels, pixels folded 2x2 into channels
    "diffusion": {"unet": {"channels": [32, 64, 64], "layers_per_block": 1, "norm_groups": 8, "patch_size": 2}},
}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(pairs: list[str]) -> dict:
    """`["a=1", "encoder.width=96"]` -> `{"a": 1, "encoder": {"width": 96}}`."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise WMError(f"override {pair!r} is not key=value; e.g. lr=1e-3 or predictor.depth=4")
        key, value = pair.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _parse_value(value)
    return out


def model_config_class(kind: str) -> type:
    if kind == "diffusion":
        from wm.models.diffusion.world_model import DiffusionWMConfig

        return DiffusionWMConfig
    return LatentWMConfig


def split_config(kind: str, overrides: dict) -> tuple[LatentWMConfig, TrainConfig, dict]:
    """Route overrides to the model, training and data configs; unknown keys are an error."""
    model_cls = model_config_class(kind)
    train_names = {f.name for f in fields(TrainConfig)}
    model_names = {f.name for f in fields(model_cls)} - {"kind", "normalization"}
    train_kw, model_kw, data_kw = {}, {}, dict(DATA_FIELDS)
    for key, value in overrides.items():
        if key in train_names:
            train_kw[key] = value
        elif key in model_names:
            model_kw[key] = value
        elif key in data_kw:
            data_kw[key] = value
        else:
            known = sorted(train_names | model_names | set(DATA_FIELDS))
            raise WMError(f"unknown setting {key!r}; known settings: {', '.join(known)}")
    defaults = MODEL_DEFAULTS[kind]
    for nested in defaults:
        model_kw[nested] = {**defaults[nested], **model_kw.get(nested, {})}
    try:
        return model_cls(kind=kind, **model_kw), TrainConfig(**train_kw), data_kw
    except TypeError as e:
        raise WMError(f"bad setting: {e}") from None


def init_from(path: str, kind: str, overrides: dict) -> tuple[object, object, dict]:
    """`(model config, model, checkpoint config)` of checkpoint `path` to fine-tune; model settings can't change."""
    from wm.models.checkpoint import load_checkpoint

    model, config = load_checkpoint(path)
    if config["model"]["kind"] != kind:
        raise WMError(f"{path} holds a {config['model']['kind']} model; pass --model {config['model']['kind']}")
    model_names = {f.name for f in fields(model_config_class(kind))}
    changed = sorted(set(overrides) & model_names)
    if changed:
        raise WMError(f"--init keeps the checkpoint's model; drop the model setting(s) {', '.join(changed)}")
    return model_config_class(kind)(**config["model"]), model, config


def run_train(
    data: str,
    kind: str,
    out: str,
    steps: int | None = None,
    epochs: int | None = None,
    overrides: list[str] = (),
    encoder_weights: str | None = None,
    init: str | None = None,
) -> dict:
    if kind not in MODEL_DEFAULTS:
        raise WMError(f"unknown --model {kind!r}; use jepa, dino or diffusion")
    parsed = parse_overrides(list(overrides))
    if encoder_weights:
        if kind != "dino":
            raise WMError("--encoder-weights is for --model dino (the JEPA encoder trains from pixels)")
        parsed.setdefault("encoder", {})["weights"] = encoder_weights
    model_cfg, train_cfg, data_cfg = split_config(kind, parsed)
    init_model = init_config = None
    if init is not None:
        model_cfg, init_model, init_config = init_from(init, kind, parsed)
    store = EpisodeStore.open(data)
    for key in ("rgb", "proprio", "action"):
        if not store.has(key):
            raise WMError(f"{data} has no {key!r}; world models train on stores made by `wm collect`")
    spec = store.spec
    if init_config is not None and init_config["data"]["spec"] != spec:
        trained_on = init_config["data"]["spec"]["env"]["id"]
        raise WMError(
            f"{data} holds other data ({spec['env']['id']}) than {init} was trained on; pass a store of "
            f"{trained_on} with the same image size and episode length"
        )
    model_cfg.image_size = int(store.keys["rgb"]["shape"][0])
    model_cfg.action_dim = int(store.keys["action"]["shape"][0])
    model_cfg.proprio_dim = int(store.keys["proprio"]["shape"][0])
    train_eps, val_eps = split_episodes(store.num_episodes, data_cfg["val_fraction"], data_cfg["split_seed"])
    if len(train_eps) == 0:
        raise WMError(f"{data} has {store.num_episodes} episode(s): too few to train on; collect more")
    if init_model is None:  # a fine-tuned model keeps the statistics its inputs were normalised with
        model_cfg.normalization = normalization_stats(store, train_eps)
    window = WindowConfig(model_cfg.num_hist, model_cfg.num_pred, model_cfg.frameskip)
    keys, wrap = ["rgb", "proprio"], None
    if kind == "diffusion":  # action bounds, success labels and goal images for its success head
        from wm.app.diffusion_data import prepare_diffusion_data

        extra_keys, wrap = prepare_diffusion_data(store, model_cfg)
        keys += extra_keys

    from wm.models.checkpoint import build_world_model

    model = build_world_model(model_cfg.to_dict()) if init_model is None else init_model.train()
    if kind == "dino":
        from wm.data.features import ensure_feature_cache

        store.close()
        keys.append(ensure_feature_cache(data, model.encoder))
        store = EpisodeStore.open(data)
    rename = {keys[-1]: "features"} if kind == "dino" else None
    train_ds = WindowDataset(store, train_eps, window, keys=keys, rename=rename)
    val_ds = WindowDataset(store, val_eps, window, keys=keys, rename=rename) if len(val_eps) else None
    if wrap is not None:
        train_ds, val_ds = wrap(train_ds), (wrap(val_ds) if val_ds is not None else None)
    if epochs is not None:
        train_cfg.steps = max(1, math.ceil(epochs * len(train_ds) / train_cfg.batch_size))
    elif steps is not None:
        train_cfg.steps = steps
    run_config = {
        "model": model_cfg.to_dict(),
        "data": {
            "store": str(Path(data).resolve()),
            "spec": spec,
            "train_episodes": train_eps.tolist(),
            "val_episodes": val_eps.tolist(),
            "window": {"num_hist": window.num_hist, "num_pred": window.num_pred, "frameskip": window.frameskip},
            **data_cfg,
        },
    }
    if init_config is not None:
        run_config["init"] = {"checkpoint": str(Path(init).resolve()), "step": init_config.get("step")}
    trainer = Trainer(model, train_ds, val_ds, train_cfg, out, run_config)
    resumed = trainer.resume()
    if resumed:
        print(f"resuming {out} from step {trainer.step}")
    summary = trainer.fit()
    summary["train_windows"] = len(train_ds)
    summary["val_windows"] = len(val_ds) if val_ds is not None else 0
    return summary
