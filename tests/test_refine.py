"""Refinement in imagination: PPO improves a policy on a tiny world model whose optimum is known, DSRL leaves its
base policy bit-identical, `wm refine` takes no real env step, and a SIGKILLed run resumes and ends exactly where
an unbroken run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from policies.checkpoint import load_policy
from policies.diffusion import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.protocol import PolicyConfig
from policies.refine import RefineConfig, refine
from wm.app.cli import main
from wm.errors import WMError
from wm.imagine import ImaginedVectorEnv
from wm.models.checkpoint import read_config
from wm.models.protocol import ModelSpec


class PointWorld(nn.Module):
    """A known world: the latent is a 2-d position, one block moves it by 0.5 * action (clipped to the arena), and
    success is being within 0.25 of the goal. The optimal policy heads straight for the goal."""

    spec = ModelSpec(
        "synthetic",
        frameskip=1,
        action_dim=2,
        num_hist=1,
        image_size=1,
        tokens=1,
        latent_dim=2,
        visual_dim=2,
        proprio_dim=0,
    )
    success_mode, can_decode = "goal", False

    def start_imagination(self, z_hist, past_actions=None, generator=None):
        return {"z": z_hist[:, -1].clone()}

    def imagine_step(self, state, actions):
        held = state.pop("hold", torch.zeros(0, dtype=torch.long))  # restarted, not advancing: they show the start
        moved = (state["z"] + 0.5 * actions[:, None]).clamp(-1, 1)
        moved[held] = state["z"][held]
        state["z"] = moved
        return moved

    def restart_imagination(self, state, rows, z_hist, past_actions, advance=True):
        state["z"] = state["z"].clone()
        state["z"][rows] = z_hist[:, -1]
        rows = torch.as_tensor(rows).long()
        held = state.get("hold", rows[:0])
        state["hold"] = torch.cat([held[~torch.isin(held, rows)], rows[:0] if advance else rows])

    def success_logits(self, z, z_goal=None):
        return 40.0 * (0.25 - (z - z_goal).norm(dim=-1).squeeze(-1))


class PointStarts:
    """Uniform starts and goals in the arena."""

    spec = {"action": {"low": [-1.0, -1.0], "high": [1.0, 1.0]}}

    def draw(self, n, rng):
        z = torch.as_tensor(rng.uniform(-1, 1, (n, 1, 1, 2)), dtype=torch.float32)
        goal = torch.as_tensor(rng.uniform(-1, 1, (n, 1, 2)), dtype=torch.float32)
        return z, torch.zeros(n, 0, 2), goal, [(0, 0, 0)] * n


POINT = {"tokens": 1, "latent_dim": 2, "frameskip": 1, "action_dim": 2, "width": 32, "depth": 1}
FAST = {"num_envs": 16, "n_steps": 16, "batch_size": 64, "n_epochs": 4, "horizon": 8, "checkpoint_every": 1024}


@torch.no_grad()
def imagined_success(policy, act, episodes: int = 256) -> float:
    """Success at the end of 8 blocks in PointWorld, acting with `act(z_hist, z_goal) -> (E, 1, 2)`."""
    env = ImaginedVectorEnv(PointWorld(), PointStarts(), episodes, horizon=8, reward="probability")
    obs, _ = env.reset(seed=123)
    for _ in range(8):
        obs, _, _, _, info = env.step(act(torch.as_tensor(obs["latents"]), torch.as_tensor(obs["goal"])).flatten(1))
    return float(info["success"].mean())


def test_ppo_in_imagination_finds_the_known_optimum(tmp_path):
    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(kind="gaussian", **POINT))
    with torch.no_grad():  # a poor start: the policy stands still
        policy.mean_net[-1].weight.zero_()
        policy.mean_net[-1].bias.zero_()
    before = imagined_success(policy, policy.act)
    cfg = RefineConfig(algo="ppo", imagined_steps=40_960, lr=3e-3, gamma=0.9, **FAST)
    refined, steps, _ = refine(policy, PointWorld(), PointStarts(), cfg, tmp_path, {"bc_policy": {"path": "x"}})
    after = imagined_success(refined, refined.act)
    assert steps == 40_960 and before < 0.15 and after > 0.8
    log = [json.loads(line) for line in (tmp_path / "refine_log.jsonl").read_text().splitlines()]
    assert log[-1]["imagined_success"] > log[0]["imagined_success"] + 0.4


def test_dsrl_steers_the_noise_and_never_touches_the_base_policy(tmp_path):
    torch.manual_seed(0)
    base = DiffusionPolicy(PolicyConfig(kind="diffusion", act_steps=2, **POINT)).eval()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = RefineConfig(algo="dsrl", imagined_steps=2048, lr=1e-3, **FAST)
    steered, _, _ = refine(base, PointWorld(), PointStarts(), cfg, tmp_path, {"bc_policy": {"path": "x"}})
    for key, value in original.items():
        assert torch.equal(base.state_dict()[key], value) and torch.equal(steered.base.state_dict()[key], value)
    assert steered.cfg.kind == "steered" and float(steered.steer.high.max()) == 1.5
    z, goal = torch.zeros(4, 1, 1, 2), torch.ones(4, 1, 2)
    with torch.no_grad():
        noise = steered.steer.act(z, goal).flatten(1)
        assert torch.equal(steered.act(z, goal), base.act(z, goal, noise=noise))  # one policy: noise, then base


def test_refinement_settings_are_checked():
    with pytest.raises(WMError, match="ppo or dsrl"):
        RefineConfig(algo="sac")
    with pytest.raises(WMError, match="multiple of"):
        RefineConfig(num_envs=10, n_steps=10, checkpoint_every=150)
    with pytest.raises(WMError, match="anchor"):
        RefineConfig(algo="dsrl", anchor=0.5)


SMALL = ["num_envs=8", "n_steps=8", "batch_size=32", "n_epochs=2", "checkpoint_every=128", "critic_width=32"]


def test_refine_takes_no_real_env_step_and_writes_a_normal_policy(cloned, tmp_path, monkeypatch):
    from envs.base import MujocoImageEnv

    steps = {"n": 0}
    real_step = MujocoImageEnv.step

    def counting(self, action):
        steps["n"] += 1
        return real_step(self, action)

    monkeypatch.setattr(MujocoImageEnv, "step", counting)
    out = tmp_path / "ppo"
    argv = ["refine", "--policy", str(cloned), "--algo", "ppo", "--imagined-steps", "256", "--out", str(out)]
    assert main([*argv, *SMALL, "anchor=0.1"]) == 0
    assert steps["n"] == 0  # refinement imagines everything
    config = read_config(out / "policy")
    assert config["algo"] == "ppo" and config["imagined_steps"] == 256 and config["refined_from"]["path"]
    policy, _, model, _ = load_policy(out / "policy")  # a normal policy checkpoint, bound to the same world model
    assert isinstance(policy, GaussianPolicy) and (out / "curve.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["real_env_steps_in_refinement"] == 0


def test_a_sigkilled_refine_resumes_and_ends_where_an_unbroken_run_ends(cloned, tmp_path):
    wm = [sys.executable, "-m", "wm.app.cli"]
    base = ["refine", "--policy", str(cloned), "--algo", "ppo", "--imagined-steps", "1024", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    unbroken = tmp_path / "unbroken"
    assert subprocess.run([*wm, *base, "--out", str(unbroken)], env=env, capture_output=True).returncode == 0
    broken = tmp_path / "broken"
    proc = subprocess.Popen([*wm, *base, "--out", str(broken)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while not list((broken / "checkpoints").glob("step_*/config.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "policy").exists()  # killed mid-run
    stale = broken / "checkpoints" / ".step_000000768.tmp-999999999"  # as a kill inside a checkpoint write leaves
    stale.mkdir()
    done = subprocess.run([*wm, *base, "--out", str(broken)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_config(broken / "policy")["step"] == 1024
    assert not stale.exists()  # issue 28 item 21: temporaries are removed and each row is logged once
    logs = [(out / "refine_log.jsonl").read_text() for out in (unbroken, broken)]
    assert logs[0] == logs[1]
    a, _, _, _ = load_policy(unbroken / "policy")
    b, _, _, _ = load_policy(broken / "policy")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_refine_refuses_the_wrong_policy_kind(cloned, tmp_path, capsys):
    capsys.readouterr()
    argv = ["refine", "--policy", str(cloned), "--algo", "dsrl", "--imagined-steps", "64", "--out", str(tmp_path)]
    assert main([*argv, *SMALL]) == 2
    assert "refines a diffusion BC policy" in capsys.readouterr().err
    assert not np.any([p.name == "policy" for p in tmp_path.iterdir()])


def test_the_bc_anchor_charges_actions_for_leaving_the_demonstrations():
    from gymnasium.vector import AutoresetMode

    from policies.sb3 import ImaginedSB3Env

    torch.manual_seed(0)
    bc = GaussianPolicy(PolicyConfig(kind="gaussian", **POINT)).eval()

    def env():
        return ImaginedVectorEnv(PointWorld(), PointStarts(), 8, horizon=4, autoreset_mode=AutoresetMode.SAME_STEP,
                                 reward="probability")  # fmt: skip

    plain, anchored = ImaginedSB3Env(env()), ImaginedSB3Env(env(), anchor=(bc, 2.0))
    for vec in (plain, anchored):
        vec.seed(7)
    obs = plain.reset()
    anchored.reset()
    with torch.no_grad():
        mean = bc.act(torch.as_tensor(obs["latents"]), torch.as_tensor(obs["goal"])).flatten(1).numpy()
    plain.step_async(mean)
    anchored.step_async(mean)
    _, r_plain, _, _ = plain.step_wait()
    _, r_anchor, _, _ = anchored.step_wait()
    np.testing.assert_allclose(r_plain, r_anchor, atol=1e-6)  # BC's own mean costs nothing
    away = np.clip(mean + 0.5, -1, 1)
    plain.step_async(away)
    anchored.step_async(away)
    _, r_plain, _, _ = plain.step_wait()
    _, r_anchor, _, _ = anchored.step_wait()
    assert (r_anchor < r_plain - 1e-3).all()
