"""Policy checkpoints: safetensors weights + a JSON config naming the world model whose latents the policy reads.

The config holds `policy` (the `PolicyConfig`), `world_model` (`checkpoint`: where it was, `sha256`: of its
weights file) and the training data. A policy is only ever run with the world model it was trained on: loading
checks the weights' hash, so a policy handed another world model is refused, not silently fed foreign latents.
Both load onto one device, and both paths may be run folders (`wm bc --out`, `wm train --out`) as well.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from policies.registry import build_policy
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint, load_weights, read_config, resolve_checkpoint
from wm.models.checkpoint_config import PolicyCheckpointConfig


def weights_sha256(checkpoint) -> str:
    """Hex sha256 of a checkpoint's `model.safetensors`: what identifies a world model to its policies."""
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise WMError(f"{checkpoint} is not a checkpoint (no model.safetensors); pass a `wm train` checkpoint")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def world_model_record(checkpoint) -> dict:
    """`{"checkpoint", "sha256"}` of the world model `checkpoint` (a checkpoint or a `wm train --out` folder)."""
    checkpoint = resolve_checkpoint(checkpoint, "model")
    return {"checkpoint": str(checkpoint), "sha256": weights_sha256(checkpoint)}


def recorded_world_model(policy_path, recorded: str) -> Path:
    """Where the world model a policy recorded is: an absolute path as it is; a relative one (`wm bc` records the
    path it was given, shipped policies `checkpoints/jepa-...`) from the working directory, else from the policy's
    folder or a folder above it (so a shipped policy finds its world model from anywhere)."""
    recorded_path = Path(recorded)
    bases = () if recorded_path.is_absolute() else (Path.cwd(), *Path(policy_path).resolve().parents)
    candidates = [base / recorded_path for base in bases] or [recorded_path]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise WMError(f"the policy's world model {recorded} is not there; pass --world-model CHECKPOINT")
    return found


def load_policy(path, world_model: str | None = None, device: str | torch.device = "cpu"):
    """`(policy in eval mode, its parsed config, world model, the world model's parsed config)` of the policy
    checkpoint (or `wm bc` / `wm refine --out` folder) `path`, with its world model from `world_model` (default:
    where the policy's config says it was), checked by hash; both on `device`."""
    path = resolve_checkpoint(path, "policy")
    config = PolicyCheckpointConfig.parse(read_config(path), path)
    policy = build_policy(config.policy).to(device)
    load_weights(policy, path, device)
    recorded = config.world_model
    world_model = resolve_checkpoint(world_model or recorded_world_model(path, recorded["checkpoint"]), "model")
    if weights_sha256(world_model) != recorded["sha256"]:
        raise WMError(
            f"{path} reads the latents of the world model {recorded['checkpoint']} (sha256 "
            f"{recorded['sha256'][:12]}), not of {world_model}; pass the world model the policy was trained with"
        )
    model, model_config = load_checkpoint(world_model, device)
    return policy.eval(), config, model, model_config
