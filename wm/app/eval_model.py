"""`wm eval-model`: open-loop prediction error per horizon step on held-out episodes, against copy-last-frame.

From `num_hist` real frames, the model imagines `horizon` frames with the recorded actions; each imagined
latent is compared with the encoding of the real frame at that time (MSE over the full latent and over its
visual part), and with the baseline that predicts the last history frame forever. With a decoder, pixel PSNR of
decoded imaginations vs the real frames is reported too (the baseline: the last real history frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint


def held_out_episodes(config: dict, store: EpisodeStore) -> tuple[np.ndarray, str]:
    """Validation episodes of the training run when `store` is its training store; all episodes otherwise."""
    data = config.get("data", {})
    if data.get("spec") != store.spec:
        raise WMError(
            f"{store.root} holds {store.spec.get('env', {}).get('id')} data, but the checkpoint was trained on "
            f"{data.get('spec', {}).get('env', {}).get('id')}; pass a store of the same env and spec"
        )
    if Path(data.get("store", "")) == store.root.resolve():
        val = np.asarray(data.get("val_episodes", []), dtype=np.int64)
        if len(val) == 0:
            raise WMError("the checkpoint's run held out no episodes (val_fraction=0); pass another store")
        return val, "validation episodes of the training store"
    return np.arange(store.num_episodes), "all episodes of a store the model never trained on"


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [0, 1]: `(B, ..., H, W, 3)` -> `(B,)`."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate(checkpoint, data, horizon: int = 5, max_windows: int = 512, batch_size: int = 32, seed: int = 0):
    model, config = load_checkpoint(checkpoint)
    spec = model.spec
    store = EpisodeStore.open(data)
    episodes, source = held_out_episodes(config, store)
    window = WindowConfig(spec["num_hist"], horizon, spec["frameskip"])
    ds = WindowDataset(store, episodes, window, keys=("rgb", "proprio"))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds), size=min(max_windows, len(ds)), replace=False)
    h = spec["num_hist"]
    sums = {k: torch.zeros(horizon) for k in ("model", "copy_last", "model_visual", "copy_last_visual")}
    psnr_sums = {k: torch.zeros(horizon) for k in ("model", "copy_last", "reconstruction")}
    has_decoder = getattr(model, "decoder", None) is not None
    for start in tqdm(range(0, len(picks), batch_size), desc="eval", unit="batch"):
        items = [ds[int(i)] for i in picks[start : start + batch_size]]
        batch = {k: torch.stack([it[k] for it in items]) for k in ("rgb", "proprio", "action")}
        z = model.encode({"rgb": batch["rgb"], "proprio": batch["proprio"]})  # (B, h+H, N, D)
        actions = batch["action"]  # (B, h+H-1, fs*A)
        pred = model.rollout(z[:, :h], actions[:, h - 1 :], past_actions=actions[:, : h - 1])  # (B, H, N, D)
        real, last = z[:, h:], z[:, h - 1 : h]
        vis = spec["visual_dim"]
        sums["model"] += ((pred - real) ** 2).mean((2, 3)).sum(0)
        sums["copy_last"] += ((last - real) ** 2).mean((2, 3)).sum(0)
        sums["model_visual"] += ((pred - real)[..., :vis] ** 2).mean((2, 3)).sum(0)
        sums["copy_last_visual"] += ((last - real)[..., :vis] ** 2).mean((2, 3)).sum(0)
        if has_decoder:
            frames = batch["rgb"].float() / 255.0
            real_px = frames[:, h:]
            for k in range(horizon):
                psnr_sums["model"][k] += psnr(model.decode(pred[:, k]), real_px[:, k]).sum()
                psnr_sums["copy_last"][k] += psnr(frames[:, h - 1], real_px[:, k]).sum()
                psnr_sums["reconstruction"][k] += psnr(model.decode(real[:, k]), real_px[:, k]).sum()
    n = len(picks)
    result = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "held_out": source,
        "episodes": len(episodes),
        "windows": n,
        "horizon_steps": list(range(1, horizon + 1)),
        "env_steps_per_horizon_step": spec["frameskip"],
        "latent_mse": {k: [round(float(v), 6) for v in s / n] for k, s in sums.items()},
    }
    result["beats_copy_last_every_step"] = bool(
        np.all(np.array(result["latent_mse"]["model"]) < np.array(result["latent_mse"]["copy_last"]))
    )
    if has_decoder:
        result["pixel_psnr_db"] = {k: [round(float(v), 2) for v in s / n] for k, s in psnr_sums.items()}
    return result
