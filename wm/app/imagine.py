"""`wm imagine`: a video of one episode, real frames beside the frames the world model imagines open-loop.

The model sees the first `num_hist` frames (every `frameskip`-th frame) and then only the recorded actions;
the right half shows its decoded imagination, the left half what really happened.
"""

from __future__ import annotations

import numpy as np
import torch

from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint
from wm.outputs import require_new_file
from wm.video import side_by_side, upscale, write_mp4


@torch.no_grad()
def imagine_episode(checkpoint, data, episode: int, out, scale: int = 4) -> dict:
    out = require_new_file(out, ".mp4")
    model, _ = load_checkpoint(checkpoint)
    spec = model.spec
    h, fs = spec["num_hist"], spec["frameskip"]
    with EpisodeStore.open(data) as store:
        ep = store.episode(episode, ["rgb", "proprio", "action"])
    frames = ep["rgb"][::fs]  # (T, H, W, 3)
    steps = (len(ep["rgb"]) - 1) // fs  # transitions with a full action block
    if steps < h:
        raise WMError(f"episode {episode} has {len(ep['rgb'])} frames; it needs more than {h * fs} to imagine from")
    blocks = ep["action"][: steps * fs].reshape(steps, fs * ep["action"].shape[1])  # (steps, fs*A)
    obs = {
        "rgb": torch.from_numpy(frames[None, :h]),
        "proprio": torch.from_numpy(ep["proprio"][::fs][None, :h]),
    }
    z_hist = model.encode(obs)
    actions = torch.from_numpy(blocks).float()[None]
    future = model.rollout(z_hist, actions[:, h - 1 :], past_actions=actions[:, : h - 1])[0]  # (steps-h+1, N, D)
    imagined = (model.decode(future).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    real = frames[h : h + len(imagined)]
    imagined_all = np.concatenate([frames[:h], imagined[: len(real)]])
    real_all = frames[: h + len(real)]
    clip = upscale(side_by_side([real_all, imagined_all]), scale)
    fps = max(1, round(1.0 / (fs * (store.spec.get("env", {}).get("control_dt") or 0.1))))
    write_mp4(out, clip, fps=fps)
    err = float(np.mean((imagined[: len(real)].astype(np.float32) - real.astype(np.float32)) ** 2))
    return {"video": str(out), "episode": episode, "imagined_frames": len(real), "history_frames": h, "pixel_mse": err}
