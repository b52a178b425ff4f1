"""Checkpoints that never unpickle: safetensors weights + a JSON config (model, data spec, normalisation, training).

A checkpoint is a directory:
  model.safetensors      the model's state dict
  config.json            {"format": 1, "model": {...}, "data": {...}, "train": {...}, "step": int, ...}
  optimizer.safetensors  (training checkpoints only) optimizer moments + RNG states, with its JSON side in config
`config.json` is written last and each directory is written under a temporary name and renamed into place, so a
crash never leaves a half-written checkpoint where a loader would find it. Loaders also take the run folder that
`wm train --out` (or `wm bc` / `wm refine --out`) wrote: its final checkpoint is `model/` (`policy/`) inside it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from wm.errors import WMError
from wm.models.checkpoint_config import CheckpointConfig
from wm.models.registry import build_world_model

FORMAT = 2  # 2: latent models record whether they have a success head (format 1 ones never had one)
# a run folder's final checkpoint, by subfolder: what it holds and the commands that write it
RUN_PARTS = {"model": ("world model", "`wm train`"), "policy": ("policy", "`wm bc` or `wm refine`")}


def _migrate(config: dict) -> dict:
    """A config of an older format in today's terms."""
    if config.get("format", 1) < 2 and config.get("model", {}).get("kind") in ("jepa", "dino"):
        config["model"].setdefault("success_head", False)
    return config


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into flat tensors (for safetensors) and a JSON-able remainder."""
    sd = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, state in sd["state"].items():
        meta["state"][str(idx)] = {}
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.contiguous()
                meta["state"][str(idx)][name] = "tensor"
            else:
                meta["state"][str(idx)][name] = value
    return tensors, meta


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state = {}
    for idx, entries in meta["state"].items():
        state[int(idx)] = {
            name: tensors[f"state.{idx}.{name}"] if value == "tensor" else value for name, value in entries.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path, model: torch.nn.Module, config: dict, optimizer=None, rng: bool = False) -> Path:
    """Write a checkpoint directory atomically (tmp dir + rename). `config` must be JSON-serialisable."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    config = {"format": FORMAT, **config}
    if optimizer is not None:
        tensors, meta = _optimizer_tensors(optimizer)
        if rng:  # the CPU's random stream, and each GPU's (PPO samples on the device)
            tensors["rng.torch"] = torch.get_rng_state()
            if torch.cuda.is_available():
                tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        config["optimizer"] = meta
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def resolve_checkpoint(path, part: str = "model") -> Path:
    """The checkpoint directory `path` stands for: `path` itself when it holds config.json, else its `part`
    subfolder ("model" for world models, "policy" for policies: the final checkpoint of a run folder), else a
    one-line WMError naming what was expected."""
    path = Path(path)
    for candidate in (path, path / part):
        if (candidate / "config.json").is_file():
            return candidate
    noun, commands = RUN_PARTS[part]
    expected = f"pass a {noun} checkpoint (a folder with config.json) or the --out folder of {commands}"
    if not path.exists():
        raise WMError(f"{path} does not exist; {expected}")
    if held := [p for p in RUN_PARTS if (path / p / "config.json").is_file()]:  # the other kind of run
        why = f"; its {held[0]}/ holds a {RUN_PARTS[held[0]][0]}"
    else:
        why = "; the run has not finished" if (path / "checkpoints").is_dir() else ""
    raise WMError(f"{path} is not a wm checkpoint (no config.json, no {part}/{why}); {expected}")


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove what a killed `save_checkpoint` left in `folder`: `.NAME.tmp-PID` and `.NAME.old-PID` directories of
    processes no longer running. Returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not (kind.endswith((".tmp", ".old")) and pid.isdigit() and path.is_dir()):
            continue
        try:
            os.kill(int(pid), 0)  # still running: its write may be in progress
            if int(pid) != os.getpid():
                continue
        except (ProcessLookupError, PermissionError, OverflowError):
            pass
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def truncate_log(log_file: Path, step: int, key: str = "step") -> None:
    """Drop the rows of a JSON-lines log past `step` (by their `key`; rows without it, such as an earlier run's
    summary, go too): a run resumed from its checkpoint at `step` logs them again, so each is logged once."""
    if not log_file.is_file():
        return
    rows = [line for line in log_file.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get(key, step + 1) <= step]
    tmp = log_file.with_name(log_file.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(log_file)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete training checkpoint under `out/checkpoints`, if any."""
    ckpts = sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "config.json").is_file())
    return ckpts[-1] if ckpts else None


def read_config(path) -> dict:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise WMError(f"{path} is not a wm checkpoint (no config.json); pass a directory written by `wm train`")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise WMError(f"{cfg_file} is not valid JSON ({e.msg}); the checkpoint is damaged") from None
    if not isinstance(config, dict):
        held = "null" if config is None else type(config).__name__
        raise WMError(f"{cfg_file} holds a JSON {held}, not a config object; the checkpoint is damaged")
    if config.get("format", 0) > FORMAT:
        raise WMError(f"{path} was written by a newer wm-engine (format {config['format']}); upgrade")
    return _migrate(config)


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointConfig]:
    """`(model in eval mode on the device map_location, its parsed config)` from a world-model checkpoint directory
    or a `wm train --out` folder (`resolve_checkpoint`). Never unpickles, never fetches: every tensor, a frozen
    encoder's too, comes from the checkpoint's model.safetensors."""
    path = resolve_checkpoint(path, "model")
    config = CheckpointConfig.parse(read_config(path), path)
    model = build_world_model(config.model).to(map_location)
    load_weights(model, path, map_location)
    return model.eval(), config


def load_weights(model: torch.nn.Module, path, map_location: str | torch.device = "cpu",
                 new_parts: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Load `path/model.safetensors` into `model` (its tensors read straight onto `map_location`); every parameter
    must be there except those of the submodules named in `new_parts` (parts added to a checkpoint's model, or
    replaced by one of other settings, e.g. a success head trained later: the checkpoint's own are not loaded)."""
    path = Path(path)
    try:
        state = load_file(str(path / "model.safetensors"), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise WMError(f"cannot read {path / 'model.safetensors'} ({e}); the checkpoint is damaged") from None
    state = {k: v for k, v in state.items() if k.split(".")[0] not in new_parts}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.split(".")[0] not in new_parts]
    if missing or unexpected:
        raise WMError(
            f"{path} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the checkpoint is damaged or from another version"
        )


def load_training_state(path, model: torch.nn.Module, optimizer) -> dict:
    """Restore model, optimizer and RNG state from a training checkpoint; returns its config (with "step")."""
    path = Path(path)
    config = read_config(path)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    tensors = load_file(str(path / "optimizer.safetensors"))
    _restore_optimizer(optimizer, tensors, config["optimizer"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state for _, state in cuda])
    return config
