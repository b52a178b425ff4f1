"""Open-loop evaluation of a world model on held-out episodes, against the copy-last-frame baseline (`wm eval-model`).

From `num_hist` real frames, the model imagines `horizon` frames with the recorded actions; each imagined
latent is compared with the encoding of the real frame at that time (MSE over the full latent and over its
visual part), and with the baseline that predicts the last history frame forever. With a decoder, pixel PSNR and
SSIM of decoded imaginations vs the real frames are reported too (the baseline: the last real history frame); for
the pixel-space diffusion model these are the main metrics (its latent MSE is pixel MSE in [-1, 1]). A model with a
success head also reports its accuracy on the held-out real frames and on the imagined ones, plain and balanced,
beside the majority-class baseline: against hindsight goals judged by the env (`success_labels="hindsight"`, see
`wm.data.hindsight`) or the store's recorded `success` at those times. Action sensitivity: the same histories rolled out
with another window's actions; a model that ignores actions imagines the same future and is as accurate with them.

`imagine_episode` (`wm imagine`) writes a video of one episode: the real frames beside the frames the model
imagines open-loop from the first `num_hist` frames (every `frameskip`-th frame) and the recorded actions.
Both take a loaded model and its config (`wm.models.checkpoint.load_checkpoint`), so a job that runs both loads
the checkpoint once, and run on the model's device.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from wm.data.goal_images import goal_renderer
from wm.data.hindsight import HindsightGoals, env_judge
from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset
from wm.device import to_device
from wm.errors import WMError
from wm.evaluation.metrics import psnr, ssim, success_report
from wm.outputs import require_new_file
from wm.video import side_by_side, upscale, write_mp4


def _per_step(sums: dict, n: int, digits: int) -> dict:
    return {k: [round(float(v), digits) for v in s / n] for k, s in sums.items()}


@torch.no_grad()
def evaluate(model, config, data, horizon: int = 5, max_windows: int = 512, batch_size: int = 32, seed: int = 0):
    """The report of `wm eval-model` (JSON-ready) for a loaded world model and its checkpoint config on the held-out
    episodes of the store `data`."""
    device = next(model.parameters()).device
    spec = model.spec
    store = EpisodeStore.open(data)
    episodes, source = config.trained_on.held_out(store)
    window = WindowConfig(spec.num_hist, horizon, spec.frameskip)
    render, keys, wrap = None, ("rgb", "proprio"), None
    judged = env_judge(store.spec.get("env", {}).get("id")) if store.has("state") else None
    hindsight = getattr(model.cfg, "success_labels", "recorded") == "hindsight" and model.success_mode == "goal"
    judge_success = model.success_mode is not None and (judged is not None if hindsight else store.has("success"))
    if judge_success and hindsight:
        keys += ("state",)
        wrap = lambda ds: HindsightGoals(ds, judged[0], ("rgb", "proprio"), judged[1], seed=seed + 1)  # noqa: E731
    elif judge_success and model.success_mode == "goal":
        render = goal_renderer(store, spec.image_size)
        judge_success = render is not None
        keys += ("success", "goal")
    elif judge_success:
        keys += ("success",)
    ds = WindowDataset(store, episodes, window, keys=keys)
    ds = wrap(ds) if wrap is not None else ds
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds), size=min(max_windows, len(ds)), replace=False)
    h = spec.num_hist
    sums = {k: torch.zeros(horizon, device=device) for k in ("model", "copy_last", "model_visual", "copy_last_visual")}
    psnr_sums = {k: torch.zeros(horizon, device=device) for k in ("model", "copy_last", "reconstruction")}
    ssim_sums = {k: torch.zeros(horizon, device=device) for k in ("model", "copy_last")}
    shuffled_sums = {k: torch.zeros(horizon, device=device) for k in ("model_with_shuffled_actions", "between_futures")}
    success_counts = {k: torch.zeros(2, 2, device=device) for k in ("real_frames", "imagined_frames")}  # [label, guess]
    pixel_model = spec.kind == "diffusion"  # its decoder is a reshape: nothing to reconstruct
    for start in tqdm(range(0, len(picks), batch_size), desc="eval", unit="batch"):
        items = [ds[int(i)] for i in picks[start : start + batch_size]]
        batch = to_device({k: torch.stack([it[k] for it in items]) for k in ("rgb", "proprio", "action")}, device)
        z = model.encode({"rgb": batch["rgb"], "proprio": batch["proprio"]})  # (B, h+H, N, D)
        actions = batch["action"]  # (B, h+H-1, fs*A)
        pred = model.rollout(z[:, :h], actions[:, h - 1 :], past_actions=actions[:, : h - 1])  # (B, H, N, D)
        real, last = z[:, h:], z[:, h - 1 : h]
        vis = spec.visual_dim
        sums["model"] += ((pred - real) ** 2).mean((2, 3)).sum(0)
        sums["copy_last"] += ((last - real) ** 2).mean((2, 3)).sum(0)
        sums["model_visual"] += ((pred - real)[..., :vis] ** 2).mean((2, 3)).sum(0)
        sums["copy_last_visual"] += ((last - real)[..., :vis] ** 2).mean((2, 3)).sum(0)
        shuffled = model.rollout(z[:, :h], actions[:, h - 1 :].roll(1, 0), past_actions=actions[:, : h - 1])
        shuffled_sums["model_with_shuffled_actions"] += ((shuffled - real) ** 2).mean((2, 3)).sum(0)
        shuffled_sums["between_futures"] += ((shuffled - pred) ** 2).mean((2, 3)).sum(0)
        if model.can_decode:
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
        if judge_success:
            labels = torch.stack([it["success"][h:] for it in items]).long().to(device)  # (B, H)
            goals = None
            if hindsight:  # one goal per window: (B, 1, N, D)
                goal_obs = {k: torch.stack([it[f"goal_{k}"] for it in items])[:, None].to(device)
                            for k in ("rgb", "proprio")}  # fmt: skip
                goals = model.encode(goal_obs)
            elif render is not None:
                goal_rgb = np.stack([render(it["goal"][h:].numpy()) for it in items])  # (B, H, h, w, 3)
                goals = model.encode({"rgb": torch.from_numpy(goal_rgb).to(device)})
            for name, frames_z in (("real_frames", real), ("imagined_frames", pred)):
                guess = (model.success_logits(frames_z, goals) > 0).long()
                success_counts[name] += torch.bincount((2 * labels + guess).flatten(), minlength=4).view(2, 2)
    n = len(picks)
    result = {
        "checkpoint": str(config.path),
        "data": str(data),
        "held_out": source,
        "episodes": len(episodes),
        "windows": n,
        "horizon_steps": list(range(1, horizon + 1)),
        "env_steps_per_horizon_step": spec.frameskip,
        "latent_mse": _per_step(sums, n, 6),
    }
    result["action_sensitivity"] = {"latent_mse_" + k: v for k, v in _per_step(shuffled_sums, n, 6).items()}
    result["beats_copy_last_every_step"] = bool(
        np.all(np.array(result["latent_mse"]["model"]) < np.array(result["latent_mse"]["copy_last"]))
    )
    if model.can_decode:
        if pixel_model:
            psnr_sums.pop("reconstruction")
        result["pixel_psnr_db"] = _per_step(psnr_sums, n, 2)
        result["pixel_ssim"] = _per_step(ssim_sums, n, 4)
        result["psnr_beats_copy_last_every_step"] = bool(
            np.all(np.array(result["pixel_psnr_db"]["model"]) > np.array(result["pixel_psnr_db"]["copy_last"]))
        )
    if judge_success:
        result["success_head"] = success_report(success_counts)
    return result


@torch.no_grad()
def imagine_episode(model, data, episode: int, out, trained_on=None, scale: int = 4) -> dict:
    """Write the video of a loaded world model's imagination to the new .mp4 file `out`; returns where it is and the
    imagined frames' pixel MSE. With `trained_on` (the checkpoint's `TrainedOn`), a store of other data is refused."""
    out = require_new_file(out, ".mp4")
    device = next(model.parameters()).device
    spec = model.spec
    h, fs = spec.num_hist, spec.frameskip
    with EpisodeStore.open(data) as store:
        if trained_on is not None:
            trained_on.require_same_data(store)
        ep = store.episode(episode, ["rgb", "proprio", "action"])
    frames = ep["rgb"][::fs]  # (T, H, W, 3)
    steps = (len(ep["rgb"]) - 1) // fs  # transitions with a full action block
    if steps < h:
        raise WMError(f"episode {episode} has {len(ep['rgb'])} frames; it needs more than {h * fs} to imagine from")
    blocks = ep["action"][: steps * fs].reshape(steps, fs * ep["action"].shape[1])  # (steps, fs*A)
    obs = {
        "rgb": torch.from_numpy(frames[None, :h]).to(device),
        "proprio": torch.from_numpy(ep["proprio"][::fs][None, :h]).to(device),
    }
    z_hist = model.encode(obs)
    actions = torch.from_numpy(blocks).float()[None].to(device)
    future = model.rollout(z_hist, actions[:, h - 1 :], past_actions=actions[:, : h - 1])[0]  # (steps-h+1, N, D)
    imagined = (model.decode(future).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    real = frames[h : h + len(imagined)]
    imagined_all = np.concatenate([frames[:h], imagined[: len(real)]])
    real_all = frames[: h + len(real)]
    clip = upscale(side_by_side([real_all, imagined_all]), scale)
    fps = max(1, round(1.0 / (fs * (store.spec.get("env", {}).get("control_dt") or 0.1))))
    write_mp4(out, clip, fps=fps)
    err = float(np.mean((imagined[: len(real)].astype(np.float32) - real.astype(np.float32)) ** 2))
    return {"video": str(out), "episode": episode, "imagined_frames": len(real), "history_frames": h, "pixel_mse": err}
