"""The checkpoints shipped in checkpoints/ load without training: the JEPA world models predict fresh episodes of
their env better than copying the last frame (episodes collected here with a seed the checkpoints never saw), and
the policies load with the world model they name (checked by hash) and act within their env's bounds, the DSRL
ones on a base that is the shipped diffusion policy bit for bit. No shipped config names a path of the machine that
made it, and a planning preset names only MPC settings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.collector import collect
from planners.mpc import MPCConfig, with_preset
from policies.checkpoint import load_policy
from wm.models.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent
SHIPPED = sorted(p for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file())
POLICIES = [p for p in SHIPPED if "policy" in json.loads((p / "config.json").read_text())]
MODELS = [p for p in SHIPPED if p not in POLICIES]


def strings(value):
    """Every string in a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_name_no_absolute_path(path):
    config = json.loads((path / "config.json").read_text())
    assert [s for s in strings(config) if s.startswith("/")] == []


def test_planning_presets_name_mpc_settings_and_wall_holds_its_actions_in_blocks():
    presets = {p.name: json.loads((p / "config.json").read_text()).get("plan", {}) for p in MODELS}
    for preset in presets.values():
        with_preset(MPCConfig(), preset)  # unknown settings are a WMError
    assert presets["jepa-wall"] == {"hold_in_block": True, "iterations": 20}
    assert presets["jepa-pointmaze"] == {}
    assert presets["jepa-pusht"] == {"planner": "icem", "samples": 200, "iterations": 5, "horizon": 5,
                                     "objective_mode": "last", "proprio_weight": 0.0}  # fmt: skip
    assert presets["jepa-reacher"] == {"planner": "icem", "guide": "../bc-reacher"}  # relative to the checkpoint
    _, reacher = load_checkpoint(ROOT / "checkpoints" / "jepa-reacher")
    assert Path(reacher.plan_preset["guide"]).resolve() == (ROOT / "checkpoints" / "bc-reacher").resolve()


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
@torch.no_grad()
def test_shipped_checkpoint_beats_copy_last_on_fresh_episodes(path):
    model, config = load_checkpoint(path)
    spec = model.spec
    env_id = config.trained_on.env_id
    h, fs, horizon = spec.num_hist, spec.frameskip, 5
    span = (h + horizon - 1) * fs  # env steps covered by one window
    model_err, copy_err = np.zeros(horizon), np.zeros(horizon)
    policy = config.trained_on.goal_policy or "expert"  # the kind of data it was trained on
    for episode in collect(env_id, 2, span + 60, policy=policy, seed=987654, workers=1):
        for start in range(0, min(61, len(episode["rgb"]) - span), 10):  # up to 7 windows per episode
            frames = slice(start, start + span + 1, fs)
            obs = {k: torch.from_numpy(episode[k][frames][None]) for k in ("rgb", "proprio")}
            z = model.encode(obs)  # (1, h+H, N, D)
            blocks = torch.from_numpy(episode["action"][start : start + span]).reshape(1, h + horizon - 1, -1)
            pred = model.rollout(z[:, :h], blocks[:, h - 1 :], past_actions=blocks[:, : h - 1])
            model_err += ((pred - z[:, h:]) ** 2).mean((0, 2, 3)).numpy()
            copy_err += ((z[:, h - 1 : h] - z[:, h:]) ** 2).mean((0, 2, 3)).numpy()
    assert np.all(model_err < copy_err), (model_err, copy_err)


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
@torch.no_grad()
def test_shipped_policy_acts_with_its_world_model(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name their world models relative to the repository, as the README runs them
    policy, config, model, model_config = load_policy(path.relative_to(ROOT))
    env_id = model_config.trained_on.env_id
    policy_kind = model_config.trained_on.goal_policy or "expert"
    episode = next(iter(collect(env_id, 1, 40, policy=policy_kind, seed=987654, workers=1)))
    frames = slice(0, 40, model.spec.frameskip)
    z = model.encode({k: torch.from_numpy(episode[k][frames][None]) for k in ("rgb", "proprio")})  # (1, 8, N, D)
    history = policy.cfg.history
    actions = policy.act(z[:, :history], z[:, -1])  # (1, frameskip, A)
    low, high = (torch.tensor(b) for b in (policy.cfg.action_low, policy.cfg.action_high))
    assert actions.shape == (1, policy.cfg.frameskip, policy.cfg.action_dim)
    assert bool(((actions >= low - 1e-6) & (actions <= high + 1e-6)).all())
    if policy.cfg.kind == "steered":
        base, _, _, _ = load_policy(config.refined_from["path"])
        for name, tensor in base.state_dict().items():
            assert torch.equal(policy.base.state_dict()[name], tensor), name
