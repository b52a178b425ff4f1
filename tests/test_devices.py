"""`--device`: parsing (auto, cpu, cuda, cuda:K) with one-line errors for a device this machine lacks (CUDA
availability monkeypatched where it matters), checkpoints loading onto the device, the tensors made around a model
following it (a model moved to the 'meta' device meets no CPU tensor), and `--device cpu` end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.collector import collect
from policies.checkpoint import load_policy
from policies.controller import PolicyController, act_block
from wm.app.cli import main
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.device import module_device, resolve_device
from wm.errors import WMError
from wm.imagine import StoreStarts
from wm.models.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent
WALL, BC_WALL = str(ROOT / "checkpoints" / "jepa-wall"), str(ROOT / "checkpoints" / "bc-wall")
ROBOT = ["validate", "--robot", "tcp://127.0.0.1:9", "--controller", "mpc", "--episodes", "1"]  # never reached


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture(scope="module")
def wall_store(tmp_path_factory):
    """3 short Wall episodes of the shipped model's spec (64 px)."""
    path = tmp_path_factory.mktemp("data") / "wall"
    keys, spec = store_layout("wm/Wall-v0", 64, 20)
    with EpisodeStore.create(path, keys, spec) as store:
        for ep in collect("wm/Wall-v0", 3, 20, policy="expert", seed=0, workers=1):
            store.append_episode(ep)
    return path


def test_auto_is_cpu_without_cuda_and_cpu_is_cpu(no_cuda):
    assert resolve_device("auto") == resolve_device(None) == resolve_device(" CPU ") == torch.device("cpu")


def test_cuda_without_cuda_is_a_one_line_error(no_cuda):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(WMError, match=rf"^device {name} is not available \(.*\); use --device cpu") as e:
            resolve_device(name)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda:-1", "mps0"])
def test_malformed_device_names_say_what_is_accepted(name):
    with pytest.raises(WMError, match=r"unknown device .*; use auto \(cuda when available, else cpu\), cpu, cuda"):
        resolve_device(name)


def test_cuda_devices_with_cuda(two_gpus):
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(WMError, match=r"device cuda:2 is not available: this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--checkpoint", WALL, "--env", "wm/Wall-v0"],
        ["eval-model", "--checkpoint", WALL, "--data", "nowhere"],
        ["imagine", "--checkpoint", WALL, "--data", "nowhere", "--out", "{tmp}/x.mp4"],
        ["eval-policy", "--policy", BC_WALL, "--env", "wm/Wall-v0", "--out", "{tmp}/eval"],
        ["bc", "--data", "nowhere", "--world-model", WALL, "--policy", "gaussian", "--out", "{tmp}/bc"],
        ["refine", "--policy", BC_WALL, "--algo", "ppo", "--out", "{tmp}/refine"],
        [*ROBOT, "--checkpoint", WALL, "--out", "{tmp}/validate"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_model_command_refuses_cuda_here_in_one_line(argv, tmp_path, capsys, no_cuda):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wm: error: device cuda is not available") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_checkpoints_load_onto_the_device_asked_for():
    device = resolve_device("cpu")
    model, _ = load_checkpoint(WALL, device)
    policy, _, world_model, _ = load_policy(BC_WALL, device=device)
    assert {t.device for m in (model, policy, world_model) for t in [*m.parameters(), *m.buffers()]} == {device}


def test_tensors_made_around_a_model_follow_its_device(wall_store):
    """On the 'meta' device any CPU tensor mixed into the computation raises: starts, latents, actions, policy
    inputs and the rollout from them are all made where the model is."""
    meta = torch.device("meta")
    model = load_checkpoint(WALL)[0].to(meta)
    policy = load_policy(BC_WALL)[0].to(meta)
    assert module_device(model) == meta
    starts = StoreStarts(model, wall_store, goal_blocks=(1, 2))
    z_hist, past, z_goal, _ = starts.draw(4, np.random.default_rng(0))
    assert {z_hist.device, past.device, z_goal.device} == {meta}
    spec = model.spec
    actions = torch.zeros(4, 2, spec.block_action_dim, device=meta)
    assert model.rollout(z_hist, actions, past_actions=past).shape == (4, 2, spec.tokens, spec.latent_dim)
    latents = torch.zeros((4, policy.cfg.history, spec.tokens, spec.latent_dim), device=meta)
    assert act_block(policy, latents, latents[:, 0], generator=None).device == meta
    controller = PolicyController(policy, model)
    frames = {"rgb": np.zeros((2, 64, 64, 3), np.uint8), "proprio": np.zeros((2, spec.proprio_dim), np.float32)}
    assert controller.device == meta and controller.encode_obs(frames).device == meta


def test_plan_on_cpu_end_to_end_matches_the_default_device(tmp_path, no_cuda):
    base = ["plan", "--checkpoint", WALL, "--env", "wm/Wall-v0", "--episodes", "2", "--goal-source", "random",
            "--budget", "4", "--horizon", "2", "--samples", "16", "--elites", "4", "--iterations", "2"]  # fmt: skip
    assert main([*base, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0  # auto: the CPU here
    cpu, auto = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("cpu", "auto"))
    assert cpu["config"]["device"] == "cpu" and cpu["per_episode"] == auto["per_episode"]
