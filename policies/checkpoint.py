"""Policy checkpoints: safetensors weights + a JSON config naming the world model whose latents the policy reads.

The config holds `policy` (the `PolicyConfig`), `world_model` (`checkpoint`: where it was, `sha256`: of its
weights file) and the training data. A policy is only ever run with the world model it was trained on: loading
checks the weights' hash, so a policy handed another world model is refused, not silently fed foreign latents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from policies.diffusion import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.protocol import PolicyConfig
from policies.steered import SteeredPolicy
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint, load_weights, read_config

POLICIES: dict[str, type] = {"gaussian": GaussianPolicy, "diffusion": DiffusionPolicy, "steered": SteeredPolicy}


def build_policy(cfg: dict) -> nn.Module:
    """The policy a config dict describes (its `kind` names the class)."""
    policy_cfg = PolicyConfig(**cfg)
    return POLICIES[policy_cfg.kind](policy_cfg)


def weights_sha256(checkpoint) -> str:
    """Hex sha256 of a checkpoint's `model.safetensors`: what identifies a world model to its policies."""
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise WMError(f"{checkpoint} is not a checkpoint (no model.safetensors); pass a `wm train` checkpoint")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def world_model_record(checkpoint) -> dict:
    return {"checkpoint": str(checkpoint), "sha256": weights_sha256(checkpoint)}


def load_policy(path, world_model: str | None = None):
    """`(policy in eval mode, config, world model, world model config)` of the policy checkpoint `path`, with its
    world model from `world_model` (default: where the policy's config says it was), checked by hash."""
    path = Path(path)
    config = read_config(path)
    if "policy" not in config:
        raise WMError(f"{path} is a world model checkpoint, not a policy; pass a policy made by `wm bc`")
    policy = build_policy(config["policy"])
    load_weights(policy, path)
    recorded = config["world_model"]
    world_model = world_model or recorded["checkpoint"]
    if not (Path(world_model) / "model.safetensors").is_file():
        raise WMError(f"the policy's world model {world_model} is not there; pass --world-model CHECKPOINT")
    if weights_sha256(world_model) != recorded["sha256"]:
        raise WMError(
            f"{path} reads the latents of the world model {recorded['checkpoint']} (sha256 "
            f"{recorded['sha256'][:12]}), not of {world_model}; pass the world model the policy was trained with"
        )
    model, model_config = load_checkpoint(world_model)
    return policy.eval(), config, model, model_config
