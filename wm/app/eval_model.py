"""`wm eval-model`: open-loop prediction error per horizon step on held-out episodes, against copy-last-frame.

From `num_hist` real frames, the model imagines `horizon` frames with the recorded actions; each imagined
latent is compared with the encoding of the real frame at that time (MSE over the full latent and over its
visual part), and with the baseline that predicts the last history frame forever. With a decoder, pixel PSNR and
SSIM of decoded imaginations vs the real frames are reported too (the baseline: the last real history frame); for
the pixel-space diffusion model these are the main metrics (its latent MSE is pixel MSE in [-1, 1]). A model with a
success head also reports its accuracy on the held-out real frames and on the imagined ones (labels: the store's
`success` at those times), beside the majority-class baseline. Action sensitivity: the same histories rolled out
with another window's actions; a model that ignores actions imagines the same future and is as accurate with them.
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


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-sample SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, mean over channels and
    valid positions) of images in [0, 1]: `(B, H, W, 3)` -> `(B,)`."""
    x, y = (t.movedim(-1, 1).float() for t in (a, b))  # (B, 3, H, W)
    g = torch.exp(-((torch.arange(window, dtype=torch.float32) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window).to(x.device)
    blur = lambda t: torch.nn.functional.conv2d(t, kernel, groups=x.shape[1])  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.flatten(1).mean(1)


@torch.no_grad()
def evaluate(checkpoint, data, horizon: int = 5, max_windows: int = 512, batch_size: int = 32, seed: int = 0):
    model, config = load_checkpoint(checkpoint)
    spec = model.spec
    store = EpisodeStore.open(data)
    episodes, source = held_out_episodes(config, store)
    window = WindowConfig(spec["num_hist"], horizon, spec["frameskip"])
    success_head, render, keys = getattr(model, "success", None), None, ("rgb", "proprio")
    if success_head is not None and store.has("success"):
        if success_head.goal:
            from wm.app.diffusion_data import goal_renderer

            render = goal_renderer(store, spec["image_size"])
        success_head = success_head if render is not None or not success_head.goal else None
        keys += ("success", "goal") if render is not None else ("success",)
    else:
        success_head = None
    ds = WindowDataset(store, episodes, window, keys=keys)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds), size=min(max_windows, len(ds)), replace=False)
    h = spec["num_hist"]
    sums = {k: torch.zeros(horizon) for k in ("model", "copy_last", "model_visual", "copy_last_visual")}
    psnr_sums = {k: torch.zeros(horizon) for k in ("model", "copy_last", "reconstruction")}
    ssim_sums = {k: torch.zeros(horizon) for k in ("model", "copy_last")}
    shuffled_sums = {k: torch.zeros(horizon) for k in ("model_with_shuffled_actions", "between_futures")}
    success_counts = {k: torch.zeros(2, 2) for k in ("real_frames", "imagined_frames")}  # [label, predicted]
    has_decoder = getattr(model, "decoder", None) is not None
    pixel_model = spec.get("kind") == "diffusion"  # its decoder is a reshape: nothing to reconstruct
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
        shuffled = model.rollout(z[:, :h], actions[:, h - 1 :].roll(1, 0), past_actions=actions[:, : h - 1])
        shuffled_sums["model_with_shuffled_actions"] += ((shuffled - real) ** 2).mean((2, 3)).sum(0)
        shuffled_sums["between_futures"] += ((shuffled - pred) ** 2).mean((2, 3)).sum(0)
        if has_decoder:
            frames = batch["rgb"].float() / 255.0
            real_px = frames[:, h:]
            for k in range(horizon):
                imagined_px = model.decode(pred[:, k]).clamp(0, 1)
                psnr_sums["model"][k] += psnr(imagined_px, real_px[:, k]).sum()
                psnr_sums["copy_last"][k] += psnr(frames[:, h - 1], real_px[:, k]).sum()
                ssim_sums["model"][k] += ssim(imagined_px, real_px[:, k]).sum()
                ssim_sums["copy_last"][k] += ssim(frames[:, h - 1], real_px[:, k]).sum()
                if not pixel_model:
                    psnr_sums["reconstruction"][k] += psnr(model.decode(real[:, k]), real_px[:, k]).sum()
        if success_head is not None:
            labels = torch.stack([it["success"][h:] for it in items]).long()  # (B, H)
            goals = None
            if render is not None:
                goal_rgb = np.stack([render(it["goal"][h:].numpy()) for it in items])  # (B, H, h, w, 3)
                goals = model.encode({"rgb": torch.from_numpy(goal_rgb)})
            for name, frames_z in (("real_frames", real), ("imagined_frames", pred)):
                guess = (model.success_logits(frames_z, goals) > 0).long()
                success_counts[name] += torch.bincount((2 * labels + guess).flatten(), minlength=4).view(2, 2)
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
    result["action_sensitivity"] = {
        "latent_mse_" + k: [round(float(v), 6) for v in s / n] for k, s in shuffled_sums.items()
    }
    result["beats_copy_last_every_step"] = bool(
        np.all(np.array(result["latent_mse"]["model"]) < np.array(result["latent_mse"]["copy_last"]))
    )
    if has_decoder:
        if pixel_model:
            psnr_sums.pop("reconstruction")
        result["pixel_psnr_db"] = {k: [round(float(v), 2) for v in s / n] for k, s in psnr_sums.items()}
        result["pixel_ssim"] = {k: [round(float(v), 4) for v in s / n] for k, s in ssim_sums.items()}
        result["psnr_beats_copy_last_every_step"] = bool(
            np.all(np.array(result["pixel_psnr_db"]["model"]) > np.array(result["pixel_psnr_db"]["copy_last"]))
        )
    if success_head is not None:
        result["success_head"] = success_report(success_counts)
    return result


def success_report(counts: dict) -> dict:
    """Accuracy, balanced accuracy and the majority-class baseline from `{name: (2, 2) [label, guess] counts}`."""
    out = {}
    for name, c in counts.items():
        total = float(c.sum())
        recall = [float(c[i, i] / c[i].sum()) if c[i].sum() > 0 else float("nan") for i in (0, 1)]
        out[name] = {
            "frames": int(total),
            "accuracy": round(float(c.trace()) / total, 4),
            "balanced_accuracy": round(float(np.nanmean(recall)), 4),
            "positive_rate": round(float(c[1].sum()) / total, 4),
            "majority_baseline": round(max(float(c[0].sum()), float(c[1].sum())) / total, 4),
        }
    return out
