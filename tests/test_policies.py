"""Policies on world-model latents: the Gaussian and diffusion heads learn by behaviour cloning, their contracts
(bounds, log-probs, explicit noise), checkpoints bound to their world model, `wm bc`, `wm eval-policy` (real and
imagined) and `wm validate --controller policy`, and the one-line errors of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROBOT_TOKEN, SHIPPED

from policies.checkpoint import load_policy
from policies.diffusion import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.protocol import PolicyConfig
from policies.registry import build_policy
from wm.app.cli import main
from wm.errors import WMError
from wm.models.checkpoint import read_config, save_checkpoint

CFG = {"tokens": 1, "latent_dim": 4, "frameskip": 2, "action_dim": 2, "width": 64}


def synthetic_batch(n: int, gen: torch.Generator) -> dict:
    """Latents whose first two dims are a position; the demonstrated block moves halfway toward the goal."""
    z = torch.rand(n, 1, 1, 4, generator=gen) * 2 - 1
    goal = torch.rand(n, 1, 4, generator=gen) * 2 - 1
    step = ((goal[:, 0, :2] - z[:, 0, 0, :2]) / 2).clamp(-1, 1)
    return {"z_hist": z, "z_goal": goal, "action": step.repeat(1, 2)}


def clone(policy, steps: int = 400) -> float:
    """BC on `synthetic_batch`; returns the held-out MSE of the acted blocks."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = policy(synthetic_batch(128, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = synthetic_batch(256, torch.Generator().manual_seed(99))
    with torch.no_grad():
        acted = policy.eval().act(test["z_hist"], test["z_goal"], noise=torch.zeros(256, 4))
    return float(((acted.flatten(1) - test["action"]) ** 2).mean())


def test_gaussian_policy_clones_a_goal_reaching_rule_and_exposes_log_probs():
    policy = GaussianPolicy(PolicyConfig(kind="gaussian", **CFG))
    batch = synthetic_batch(8, torch.Generator().manual_seed(1))
    assert policy.log_prob(batch["z_hist"], batch["z_goal"], batch["action"]).shape == (8,)
    assert policy.entropy(batch["z_hist"], batch["z_goal"]).shape == (8,)
    baseline = float((batch["action"] ** 2).mean())
    assert clone(policy) < 0.1 * baseline
    with torch.no_grad():
        policy.log_std.fill_(3.0)  # far above the cap: the std stays at e^0
        assert torch.allclose(policy.distribution(batch["z_hist"], batch["z_goal"]).stddev, torch.ones(8, 4))
        wild = policy.act(batch["z_hist"], batch["z_goal"], noise=torch.full((8, 4), 50.0))
    assert wild.shape == (8, 2, 2) and float(wild.abs().max()) <= 1.0


def test_diffusion_policy_clones_too_and_its_noise_is_an_explicit_input():
    policy = DiffusionPolicy(PolicyConfig(kind="diffusion", act_steps=4, **CFG))
    batch = synthetic_batch(16, torch.Generator().manual_seed(2))
    baseline = float((batch["action"] ** 2).mean())
    assert clone(policy, 600) < 0.25 * baseline
    noise = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = policy.act(batch["z_hist"], batch["z_goal"], noise=noise)
        b = policy.act(batch["z_hist"], batch["z_goal"], noise=noise)
        c = policy.act(batch["z_hist"], batch["z_goal"], noise=-noise)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert float(a.abs().max()) <= 1.0


def one_line_error(capsys, argv, match):
    capsys.readouterr()
    code = main(argv)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("wm: error")]
    assert code == 2 and len(err) == 1 and match in err[0], err


def test_bc_writes_a_policy_checkpoint_naming_its_world_model(cloned, jepa):
    config = read_config(cloned)
    assert config["policy"]["kind"] == "gaussian" and config["step"] == 40
    assert config["world_model"]["checkpoint"] == str(jepa[2]) and len(config["world_model"]["sha256"]) == 64
    assert set(config["data"]["train_episodes"]) <= {0, 1, 2, 3, 4}  # expert episodes only
    policy, _, model, _ = load_policy(cloned)
    assert isinstance(policy, GaussianPolicy) and model.success_mode == "goal"


def test_eval_policy_reports_real_zero_action_and_imagined_success(cloned, maze, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval-policy", "--policy", str(cloned), "--env", "wm/PointMaze-v0", "--data", str(maze)]
    assert main([*argv, "--episodes", "4", "--budget", "20", "--imagined", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 4 and 0 <= results["success_rate"] <= 1
    assert results["zero_action_success"]["n"] == 4 and results["imagined"]["blocks"] == 4
    assert {"success", "imagined_success", "zero_action_success"} <= set(results["per_episode"][0])
    assert (out / "summary.png").is_file() and (out / "episode_0.mp4").is_file()


def other_encoder(checkpoint, out):
    """A copy of `checkpoint` whose encoder's first weight moved: a world model with other latents."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out)
    tensors = load_file(out / "model.safetensors")
    key = next(k for k in sorted(tensors) if k.startswith("encoder.") and tensors[k].is_floating_point())
    tensors[key] = tensors[key] + 0.1
    save_file(tensors, out / "model.safetensors")
    return out


def test_a_policy_takes_a_fine_tune_that_kept_its_latents_and_refuses_other_latents(cloned, jepa, tmp_path):
    """The success head of `jepa` was trained alone on the shipped model: same latents, so the policy cloned on
    `jepa` runs on the shipped model too; a model whose encoder moved is refused."""
    _, _, _, wm_config = load_policy(cloned, SHIPPED)
    assert wm_config.path.resolve() == Path(SHIPPED).resolve()
    with pytest.raises(WMError, match="latents of"):
        load_policy(cloned, other_encoder(jepa[2], tmp_path / "other"))


def test_bad_policy_input_gives_one_line_errors_and_writes_nothing(cloned, maze, jepa, tmp_path, capsys):
    bc = ["bc", "--data", str(maze), "--world-model", str(jepa[2]), "--policy", "gaussian"]
    one_line_error(capsys, [*bc, "--out", str(tmp_path / "a"), "--demos", "0"], "at least 1")
    one_line_error(capsys, [*bc, "--out", str(tmp_path / "b"), "--demos", "99"], "more than the")
    one_line_error(capsys, [*bc, "--out", str(tmp_path / "c"), "widht=3"], "unknown setting")
    evaluate = ["eval-policy", "--policy", str(cloned), "--env", "wm/PointMaze-v0", "--data", str(maze)]
    other = other_encoder(jepa[2], tmp_path / "other")  # another world model: its latents differ
    one_line_error(capsys, [*evaluate, "--world-model", str(other), "--out", str(tmp_path / "d")], "latents of")
    one_line_error(capsys, [*evaluate, "--env", "wm/Wall-v0", "--out", str(tmp_path / "e")], "not wm/Wall-v0")
    policy, config, _, _ = load_policy(cloned)
    with torch.no_grad():
        policy.log_std.fill_(float("nan"))
        for p in policy.mean_net.parameters():
            p.fill_(float("nan"))
    broken = tmp_path / "broken"
    save_checkpoint(broken, policy, {k: v for k, v in read_config(config.path).items() if k != "format"})
    nan = ["eval-policy", "--policy", str(broken), "--env", "wm/PointMaze-v0", "--data", str(maze), "--episodes", "2"]
    one_line_error(capsys, [*nan, "--out", str(tmp_path / "f")], "NaN")
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_bc_refuses_a_store_without_expert_episodes(jepa, tmp_path, capsys):
    from envs.collector import collect
    from wm.data.layout import store_layout
    from wm.data.store import EpisodeStore

    path = tmp_path / "random"
    keys, spec = store_layout("wm/PointMaze-v0", 64, 100)
    with EpisodeStore.create(path, keys, spec) as store:
        for ep in collect("wm/PointMaze-v0", 2, 100, policy="random", seed=0, workers=1):
            store.append_episode(ep)
        store.record_collection({"policy": "random", "first_episode": 0, "episodes_written": 2})
    argv = [
        "bc",
        "--data",
        str(path),
        "--world-model",
        str(jepa[2]),
        "--policy",
        "gaussian",
        "--out",
        str(tmp_path / "o"),
    ]
    one_line_error(capsys, argv, "no goal-directed episodes")
    assert not (tmp_path / "o").exists()


def test_policy_checkpoints_rebuild_exactly(cloned):
    policy, config, model, _ = load_policy(cloned)
    again = build_policy(config.policy)
    again.load_state_dict(policy.state_dict())
    z = torch.randn(3, 1, model.spec.tokens, model.spec.latent_dim)
    goal = torch.randn(3, model.spec.tokens, model.spec.latent_dim)
    assert torch.equal(policy.act(z, goal), again.eval().act(z, goal))


def test_a_policy_drives_a_robot_through_wm_validate(cloned, server, tmp_path):
    out = tmp_path / "validate"
    argv = ["validate", "--robot", server[1], "--token", ROBOT_TOKEN, "--controller", "policy", "--policy"]
    argv += [
        str(cloned),
        "--episodes",
        "1",
        "--budget",
        "10",
        "--goal-store",
        str(read_config(cloned)["data"]["store"]),
    ]
    assert main([*argv, "--goal-offset", "5", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["controller"] == "policy" and results["episodes_complete"] == 1
    assert results["replan_latency_ms"]["n"] == 2  # one policy call per 5-step block


def test_policy_settings_are_checked():
    with pytest.raises(WMError, match="unknown policy kind 'tree'; use one of gaussian, diffusion, steered"):
        build_policy(PolicyConfig(kind="tree").to_dict())  # the registry knows the kinds
    with pytest.raises(WMError, match="log_std_min"):
        PolicyConfig(log_std_min=1.0, log_std_max=0.0)
    assert np.allclose(PolicyConfig().action_high, [1.0, 1.0])


def test_bc_resumes_from_its_last_checkpoint(maze, jepa, tmp_path, capsys):
    out = tmp_path / "bc"
    argv = ["bc", "--data", str(maze), "--world-model", str(jepa[2]), "--policy", "diffusion", "--out", str(out)]
    tiny = ["batch_size=16", "ckpt_every=10", "val_every=10", "width=32", "act_steps=2"]
    assert main([*argv, "--steps", "10", *tiny]) == 0
    first = read_config(out / "policy")
    capsys.readouterr()
    assert main([*argv, "--steps", "20", *tiny]) == 0
    assert "resuming" in capsys.readouterr().out and read_config(out / "policy")["step"] == 20
    assert first["policy"] == read_config(out / "policy")["policy"]
    one_line_error(capsys, [*argv[:-2], "--policy", "gaussian", "--out", str(out), "--steps", "30", *tiny], "another")


def test_hindsight_goals_past_every_episode_are_refused():
    """`wm bc --goal-blocks K` with K blocks longer than any episode would clip every goal to the last frame."""
    from types import SimpleNamespace

    from policies.bc import HindsightBlocks
    from wm.errors import WMError

    frames = SimpleNamespace(lengths=np.array([12, 21]))  # only the lengths are read before any latent
    assert len(HindsightBlocks(frames, history=1, frameskip=5, goal_blocks=(1, 4)).offsets_k) == 4
    with pytest.raises(WMError, match=r"goals up to 5 blocks \(25 frames\) ahead reach past every episode .* 4 goal"):
        HindsightBlocks(frames, history=1, frameskip=5, goal_blocks=(1, 5))
