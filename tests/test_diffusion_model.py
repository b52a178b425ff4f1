"""The diffusion world model: the contract's shapes, deterministic rollouts with shared noise across candidates, a
briefly trained tiny model whose futures follow continuous actions, the action path's gradient, a checkpoint round
trip through build_world_model, a CEM plan and an MPC step through `planners/`, and `wm train --model diffusion`
-> `wm eval-model` -> `wm imagine` on a small PointMaze store (goal-conditioned success head included)."""

import json

import pytest
import torch

from envs.collector import collect
from planners.mpc import MPCController
from planners.objectives import goal_objective
from planners.registry import make_planner
from wm.app.cli import main
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.models.checkpoint import build_world_model, load_checkpoint, save_checkpoint
from wm.models.diffusion.world_model import DiffusionWMConfig, DiffusionWorldModel

S = 8  # image size of the synthetic tests


def tiny_config(**overrides) -> DiffusionWMConfig:
    base = {
        "image_size": S,
        "num_hist": 2,
        "frameskip": 1,
        "action_dim": 2,
        "action_low": [-1.0, -1.0],
        "action_high": [1.0, 1.0],
        "unet": {"channels": [8, 16], "layers_per_block": 1, "norm_groups": 4, "patch_size": 1},
        "success_head": False,
    }
    return DiffusionWMConfig(**{**base, **overrides})


def colour_batch(n: int, gen: torch.Generator) -> dict:
    """Uniform frames whose red/green channels are set by the last action (continuous), blue carried over from the
    history: `rgb (n, 3, S, S, 3)` uint8, `action (n, 2, 2)`."""
    a = torch.rand(n, 2, 2, generator=gen) * 2 - 1
    blue = torch.rand(n, generator=gen) * 2 - 1
    f0 = torch.stack([torch.zeros(n), torch.zeros(n), blue], -1)
    f1 = torch.stack([a[:, 0, 0], a[:, 0, 1], blue], -1)
    f2 = torch.stack([a[:, 1, 0], a[:, 1, 1], blue], -1)
    rgb = ((torch.stack([f0, f1, f2], 1) + 1) * 127.5).round().to(torch.uint8)
    return {"rgb": rgb[:, :, None, None].expand(-1, -1, S, S, -1).contiguous(), "action": a}


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained for a few seconds on `colour_batch` (two-hot actions)."""
    torch.manual_seed(0)
    model = DiffusionWorldModel(tiny_config())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        loss, _ = model(colour_batch(32, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


def test_contract_shapes_and_pixel_tokens():
    model = DiffusionWorldModel(tiny_config()).eval()
    spec = model.spec
    assert (spec.tokens, spec.latent_dim, spec.visual_dim, spec.proprio_dim) == (S * S, 3, 3, 0)
    rgb = torch.randint(0, 256, (2, 3, S, S, 3), dtype=torch.uint8)
    z = model.encode({"rgb": rgb})
    assert z.shape == (2, 3, S * S, 3) and z.min() >= -1 and z.max() <= 1
    assert torch.allclose(model.decode(z), rgb.float() / 255, atol=1e-6)  # decode is exact for pixel tokens
    with torch.no_grad():
        assert model.rollout(z[:, :2], torch.zeros(2, 4, 2), torch.zeros(2, 1, 2)).shape == (2, 4, S * S, 3)
        assert model.rollout(z[:, :2], torch.zeros(2, 5, 4, 2)).shape == (2, 5, 4, S * S, 3)
        assert model.rollout(z[:, :1], torch.zeros(2, 3, 2)).shape == (2, 3, S * S, 3)  # short history is padded


def test_rollout_is_deterministic_and_candidates_share_the_noise():
    model = DiffusionWorldModel(tiny_config()).eval()
    z = model.encode({"rgb": torch.randint(0, 256, (2, 2, S, S, 3), dtype=torch.uint8)})
    actions = torch.rand(2, 3, 2, 2) * 2 - 1
    actions[:, 2] = actions[:, 0]  # candidates 0 and 2 are the same sequence
    with torch.no_grad():
        a, b = model.rollout(z, actions), model.rollout(z, actions)
    assert torch.equal(a, b)
    assert torch.allclose(a[:, 0], a[:, 2], atol=1e-5)  # same actions, same noise -> same future
    assert not torch.allclose(a[:, 0], a[:, 1])


def test_tiny_model_learns_and_its_futures_follow_continuous_actions(trained):
    model, losses = trained
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    batch = colour_batch(1, torch.Generator().manual_seed(5))
    z = model.encode(batch)
    commands = torch.tensor([[0.8, -0.5], [-0.8, 0.5], [0.1, 0.9]])
    with torch.no_grad():
        out = model.rollout(z[:, :2], commands[None, :, None], batch["action"][:, :1])  # (1, 3, 1, N, 3)
    colour = out[0, :, 0].mean(1)  # (3 candidates, 3 channels)
    assert torch.allclose(colour[:, :2], commands, atol=0.3)  # red/green follow the (continuous) action
    assert (colour[0, :2] - colour[1, :2]).abs().min() > 0.8  # different actions, measurably different futures
    assert torch.allclose(colour[:, 2], z[0, 1, :, 2].mean().expand(3), atol=0.3)  # blue comes from the history


@pytest.mark.parametrize("encoding", ["two_hot", "mlp"])
def test_actions_reach_the_output_with_a_gradient(encoding):
    model = DiffusionWorldModel(tiny_config(action_encoding=encoding)).eval()
    z = model.encode({"rgb": torch.randint(0, 256, (1, 2, S, S, 3), dtype=torch.uint8)})
    actions = (torch.rand(1, 2, 2) * 1.6 - 0.8).requires_grad_()
    out = model.rollout(z, actions)
    out.sum().backward()
    assert actions.grad.abs().sum() > 0  # gradient planners can use it; the conditioning path is alive
    with torch.no_grad():
        other = model.rollout(z, -actions)
    assert (out - other).abs().max() > 1e-3


def test_checkpoint_round_trip_through_build_world_model(trained, tmp_path):
    model, _ = trained
    save_checkpoint(tmp_path / "ckpt", model, {"model": model.cfg.to_dict()})
    again, config = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(again, DiffusionWorldModel) and config.kind == "diffusion"
    rebuilt = build_world_model(json.loads(json.dumps(model.cfg.to_dict())))
    assert isinstance(rebuilt, DiffusionWorldModel)
    batch = colour_batch(2, torch.Generator().manual_seed(3))
    z = model.encode(batch)
    with torch.no_grad():
        assert torch.equal(model.rollout(z[:, :2], batch["action"]), again.rollout(z[:, :2], batch["action"]))


def test_cem_plans_and_mpc_acts_through_the_planners(trained):
    model, _ = trained
    spec = model.spec
    batch = colour_batch(2, torch.Generator().manual_seed(4))
    z = model.encode(batch)
    goal = torch.tensor([[0.9, -0.9, 0.0]]).expand(S * S, 3)[None].expand(2, -1, -1)  # red high, green low
    objective = goal_objective(spec.visual_dim)
    planner = make_planner("cem", horizon=2, action_dim=spec.block_action_dim, samples=32, elites=4, iterations=2)
    with torch.no_grad():
        plan = planner.plan(lambda a: objective(model.rollout(z[:, :2], a), goal), batch_size=2)
    assert plan.shape == (2, 2, spec.block_action_dim)
    assert (plan[:, -1, 0] > 0).all() and (plan[:, -1, 1] < 0).all()  # the last action paints the goal colour
    small = make_planner("cem", horizon=2, action_dim=spec.block_action_dim, samples=8, elites=2, iterations=1)
    controller = MPCController(model, small, objective)
    controller.reset({"rgb": batch["rgb"][:, 0], "proprio": torch.zeros(2, 1)})
    obs = {"rgb": batch["rgb"][:, 0], "proprio": torch.zeros(2, 1), "step": 0}
    assert controller.act(obs).shape == (2, spec.frameskip, spec.action_dim)


def test_wm_train_eval_and_imagine_with_the_diffusion_model(tmp_path, capsys):
    store = tmp_path / "maze"
    keys, spec = store_layout("wm/PointMaze-v0", 32, 24)
    with EpisodeStore.create(store, keys, spec) as s:
        for ep in collect("wm/PointMaze-v0", 6, 24, policy="expert", seed=0, workers=1, image_size=32):
            s.append_episode(ep)
    tiny = ["unet.channels=[8,16]", "unet.norm_groups=4", "success_width=8", "frameskip=2", "num_hist=2"]
    run = tmp_path / "run"
    args = ["train", "--data", str(store), "--model", "diffusion", "--out", str(run), "--steps", "3"]
    assert main([*args, *tiny, "batch_size=4", "val_every=3", "val_batches=1", "val_fraction=0.34"]) == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert "success_bce" in log[0] and "val_pred" in log[-1]["summary"]
    capsys.readouterr()
    assert main(["eval-model", "--checkpoint", str(run / "model"), "--data", str(store), "--windows", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["pixel_psnr_db"]["model"]) == 5 and len(result["pixel_ssim"]["copy_last"]) == 5
    assert "reconstruction" not in result["pixel_psnr_db"]
    assert result["success_head"]["imagined_frames"]["frames"] == 4 * 5
    assert "action_sensitivity" in result
    video = tmp_path / "imagined.mp4"
    assert main(["imagine", "--checkpoint", str(run / "model"), "--data", str(store), "--out", str(video)]) == 0
    assert video.stat().st_size > 0
