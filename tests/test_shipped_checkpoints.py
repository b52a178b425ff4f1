"""The JEPA checkpoints shipped in checkpoints/ load without training and predict fresh episodes of their env
better than copying the last frame (episodes collected here with a seed the checkpoints never saw)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.collector import collect
from wm.models.checkpoint import load_checkpoint

SHIPPED = sorted(p for p in (Path(__file__).parent.parent / "checkpoints").iterdir() if (p / "config.json").is_file())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
@torch.no_grad()
def test_shipped_checkpoint_beats_copy_last_on_fresh_episodes(path):
    model, config = load_checkpoint(path)
    spec = model.spec
    env_id = config["data"]["spec"]["env"]["id"]
    h, fs, horizon = spec["num_hist"], spec["frameskip"], 5
    span = (h + horizon - 1) * fs  # env steps covered by one window
    model_err, copy_err = np.zeros(horizon), np.zeros(horizon)
    for episode in collect(env_id, 2, span + 60, policy="expert", seed=987654, workers=1):
        for start in range(0, 61, 10):  # 7 windows per episode
            frames = slice(start, start + span + 1, fs)
            obs = {k: torch.from_numpy(episode[k][frames][None]) for k in ("rgb", "proprio")}
            z = model.encode(obs)  # (1, h+H, N, D)
            blocks = torch.from_numpy(episode["action"][start : start + span]).reshape(1, h + horizon - 1, -1)
            pred = model.rollout(z[:, :h], blocks[:, h - 1 :], past_actions=blocks[:, : h - 1])
            model_err += ((pred - z[:, h:]) ** 2).mean((0, 2, 3)).numpy()
            copy_err += ((z[:, h - 1 : h] - z[:, h:]) ** 2).mean((0, 2, 3)).numpy()
    assert np.all(model_err < copy_err), (model_err / 14, copy_err / 14)
