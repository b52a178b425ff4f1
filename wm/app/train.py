"""`wm train`: build a world model and its data from a store, then run the shared training loop.

Overrides are `key=value` pairs: training fields (`lr=1e-3`, `batch_size=16`, `bf16=true`), model fields
(`num_hist=3`, `frameskip=5`, `proprio_emb_dim=0`), nested model fields (`encoder.width=96`,
`predictor.depth=4`, `predictor.conditioning=adaln`, `unet.channels=[32,64,64]` for diffusion) and data fields
(`val_fraction=0.1`, `split_seed=0`).
Values are parsed as JSON where possible (`true`, `3`, `1e-3`), else taken as strings.

`--init CHECKPOINT` fine-tunes: the model (architecture, weights and the normalisation of its original data) comes
from the checkpoint (or the final checkpoint of a `wm train --out` folder), and only training and data settings may
be given. The usual use: append new episodes (more
data, another behaviour policy) to a store with the checkpoint's spec and go on training from it, without starting
over.

A DINO model's checkpoint holds its frozen encoder's tensors with the rest (and the hash of the weights they came
from), so it loads offline, without `--encoder-weights` or timm's hub.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from wm.data.store import EpisodeStore
from wm.data.training_set import fill_from_store, success_training_data, window_datasets
from wm.data.windows import WindowConfig, normalization_stats, split_episodes
from wm.errors import WMError
from wm.models.checkpoint import resolve_checkpoint
from wm.models.registry import FAMILIES
from wm.run_config import init_from, parse_overrides, split_config
from wm.train import Trainer


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
    if kind not in FAMILIES:
        raise WMError(f"unknown --model {kind!r}; use one of {', '.join(FAMILIES)}")
    parsed = parse_overrides(list(overrides))
    if encoder_weights:
        if kind != "dino":
            raise WMError("--encoder-weights is for --model dino (the JEPA encoder trains from pixels)")
        parsed.setdefault("encoder", {})["weights"] = encoder_weights
    model_cfg, train_cfg, data_cfg = split_config(kind, parsed)
    init_model = init_config = None
    if init is not None:
        init = resolve_checkpoint(init, "model")
        model_cfg, init_model, init_config = init_from(init, kind, parsed)
    with EpisodeStore.open(data) as store:
        spec = store.spec
        if init_config is not None and init_config["data"]["spec"] != spec:
            trained_on = init_config["data"]["spec"]["env"]["id"]
            raise WMError(
                f"{data} holds other data ({spec['env']['id']}) than {init} was trained on; pass a store of "
                f"{trained_on} with the same image size and episode length"
            )
        fill_from_store(model_cfg, store)
        train_eps, val_eps = split_episodes(store.num_episodes, data_cfg["val_fraction"], data_cfg["split_seed"])
        if len(train_eps) == 0:
            raise WMError(f"{data} has {store.num_episodes} episode(s): too few to train on; collect more")
        if init_model is None:  # a fine-tuned model keeps the statistics its inputs were normalised with
            model_cfg.normalization = normalization_stats(store, train_eps)
        keys = list(FAMILIES[kind].data_keys)
        visual_key = "features" if "features" in keys else "rgb"
        success_keys, wrap = success_training_data(store, model_cfg, visual_key)  # what a success head learns from
        keys += success_keys
    window = WindowConfig(model_cfg.num_hist, model_cfg.num_pred, model_cfg.frameskip)
    torch.manual_seed(train_cfg.seed)  # the initial weights follow the run's seed, not whatever ran before
    model = FAMILIES[kind].build(model_cfg.to_dict()) if init_model is None else init_model.train()
    encoder = getattr(model, "encoder", None)
    train_ds, val_ds = window_datasets(data, keys, window, train_eps, val_eps, encoder=encoder, wrap=wrap)
    if epochs is not None:
        train_cfg.steps = max(1, math.ceil(epochs * len(train_ds) / train_cfg.batch_size))
    elif steps is not None:
        train_cfg.steps = steps
    run_config = {
        "model": model.cfg.to_dict(),
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
