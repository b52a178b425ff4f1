"""The settings of a training run: `key=value` overrides (parsed as JSON where possible) routed to the model config
(family defaults below them), the training loop's `TrainConfig` and the data split; and fine-tuning from a
checkpoint (`--init`)."""

from __future__ import annotations

import json
from dataclasses import fields

from wm.errors import WMError
from wm.models.registry import family
from wm.train import TrainConfig

DATA_FIELDS = {"val_fraction": 0.1, "split_seed": 0}


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


def split_config(kind: str, overrides: dict) -> tuple[object, TrainConfig, dict]:
    """`(model config, TrainConfig, data settings)` of family `kind` from nested overrides
    (`{"lr": 1e-3, "encoder": {"width": 96}}`); unknown keys are an error."""
    fam = family(kind)
    train_names = {f.name for f in fields(TrainConfig)}
    model_names = {f.name for f in fields(fam.config_class)} - {"kind", "normalization"}
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
    try:
        train_cfg = TrainConfig(**train_kw)
    except TypeError as e:
        raise WMError(f"bad setting: {e}") from None
    return fam.make_config(model_kw), train_cfg, data_kw


def init_from(path: str, kind: str, overrides: dict) -> tuple[object, object, dict]:
    """`(model config, model, checkpoint config)` of checkpoint `path` to fine-tune. Model settings can't change,
    but for the success head's (`success_*`): a checkpoint without a head gains a fresh one (e.g. to train it
    alone, `only=success`, on a frozen world model)."""
    from wm.models.checkpoint import load_checkpoint, load_weights

    model, config = load_checkpoint(path)
    if config["model"]["kind"] != kind:
        raise WMError(f"{path} holds a {config['model']['kind']} model; pass --model {config['model']['kind']}")
    fam = family(kind)
    changed = sorted(set(overrides) & {f.name for f in fields(fam.config_class)})
    fixed = [k for k in changed if not k.startswith("success_")]
    if fixed:
        raise WMError(f"--init keeps the checkpoint's model; drop the model setting(s) {', '.join(fixed)}")
    if not changed:
        return fam.make_config(config["model"]), model, config
    model_cfg = fam.make_config({**config["model"], **{k: overrides[k] for k in changed}})
    model = fam.build(model_cfg.to_dict())
    load_weights(model, path, new_parts=("success",))
    return model_cfg, model, config
