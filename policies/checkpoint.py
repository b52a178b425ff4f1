"""Policy checkpoints: safetensors weights + a JSON config naming the world model whose latents the policy reads.

The config holds `policy` (the `PolicyConfig`), `world_model` (`checkpoint`: where it was, `sha256`: of its
weights file, `latents_sha256`: of what makes its latents) and the training data. A policy is only ever run with
the world model it was trained on, or a fine-tune of it that kept its latents (the encoder and proprio embedding
frozen, as `wm improve` fine-tunes): loading checks the hashes, so a policy handed another world model is refused,
not silently fed foreign latents. Both load onto one device, and both paths may be run folders (`wm bc --out`,
`wm train --out`) as well.
"""

from __future__ import annotations

import hashlib
import json
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


LATENT_PARTS = ("encoder.", "proprio_proj.", "proprio_mean", "proprio_std")  # what turns observations into latents


def latents_sha256(checkpoint) -> str:
    """Hex sha256 of what makes a world model's latents: its encoder settings and the tensors of `LATENT_PARTS`, as
    float32 (a checkpoint shipped in fp16 and its fp32 fine-tune hash alike). Equal hashes: the same latents."""
    from safetensors import safe_open

    digest = hashlib.sha256(json.dumps(read_config(checkpoint)["model"].get("encoder"), sort_keys=True).encode())
    with safe_open(str(Path(checkpoint) / "model.safetensors"), "pt") as f:
        for key in sorted(k for k in f.keys() if k.startswith(LATENT_PARTS)):
            digest.update(key.encode())
            digest.update(f.get_tensor(key).float().numpy().tobytes())
    return digest.hexdigest()


def world_model_record(checkpoint) -> dict:
    """`{"checkpoint", "sha256", "latents_sha256"}` of the world model `checkpoint` (a checkpoint or a `wm train
    --out` folder)."""
    checkpoint = resolve_checkpoint(checkpoint, "model")
    return {"checkpoint": str(checkpoint), "sha256": weights_sha256(checkpoint),
            "latents_sha256": latents_sha256(checkpoint)}  # fmt: skip


def recorded_latents(policy_path, recorded: dict) -> str | None:
    """The latents hash of the world model a policy recorded: as recorded, else (older policies) computed from that
    world model where it is on disk with the recorded weights; None where neither can be had."""
    if "latents_sha256" in recorded:
        return recorded["latents_sha256"]
    try:
        path = resolve_checkpoint(recorded_world_model(policy_path, recorded["checkpoint"]), "model")
    except WMError:
        return None
    return latents_sha256(path) if weights_sha256(path) == recorded["sha256"] else None


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
    if weights_sha256(world_model) != recorded["sha256"] and recorded_latents(path, recorded) != latents_sha256(
        world_model
    ):
        raise WMError(
            f"{path} reads the latents of the world model {recorded['checkpoint']} (sha256 "
            f"{recorded['sha256'][:12]}), not of {world_model}; pass the world model the policy was trained with "
            "(or a fine-tune of it that kept its encoder)"
        )
    model, model_config = load_checkpoint(world_model, device)
    return policy.eval(), config, model, model_config
