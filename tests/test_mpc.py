"""MPC and objectives on a toy world model whose dynamics are known: z_{t+1} = z_t + sum(block actions)."""

import numpy as np
import pytest
import torch

from planners.mpc import MPCController
from planners.objectives import GoalObjective, goal_objective
from planners.registry import PLANNERS, make_planner
from wm.models.protocol import ModelSpec


class ToyModel:
    """Latent = proprio position (N=1, D=2); a block of `frameskip` 2-D actions moves it by their sum * 0.1."""

    def __init__(self, frameskip=2, num_hist=2):
        self.spec = ModelSpec("toy", frameskip, 2, num_hist, image_size=1, tokens=1, latent_dim=2, visual_dim=2,
                              proprio_dim=0)  # fmt: skip
        self.past_seen = []

    def encode(self, obs):
        return obs["proprio"].float()[:, :, None, :]  # (B, T, 1, 2)

    def rollout(self, z_hist, actions, past_actions=None):
        self.past_seen.append(None if past_actions is None else past_actions.clone())
        steps = actions.reshape(*actions.shape[:-1], -1, 2).sum(-2) * 0.1  # (B, S, H, 2)
        start = z_hist[:, -1, 0][:, None, None]  # (B, 1, 1, 2)
        return (start + steps.cumsum(-2))[..., None, :]


def test_objectives_compose_and_pick_the_right_frames():
    z = torch.zeros(1, 2, 3, 1, 4)
    z[0, 1, -1] = 1.0
    goal = torch.ones(1, 1, 4)
    last = GoalObjective("mse", "last")(z, goal)
    assert last.tolist() == [[1.0, 0.0]]
    assert GoalObjective("mse", "all")(z, goal)[0, 1] == torch.tensor(2 / 3)
    combined = goal_objective(visual_dim=2, proprio_weight=0.5)(z, goal)
    torch.testing.assert_close(combined, GoalObjective("mse", "last", 0, 2)(z, goal) * 1.5)


def test_the_proprio_term_can_weigh_the_horizon_its_own_way():
    z = torch.zeros(1, 1, 3, 1, 4)
    z[0, 0, -1, 0, 2:] = 1.0  # the proprio channels reach the goal on the last frame only
    goal = torch.ones(1, 1, 4)
    visual = GoalObjective("mse", "weighted", 0, 2)(z, goal)
    at_end = goal_objective(visual_dim=2, mode="weighted", proprio_weight=10.0, proprio_mode="last")(z, goal)
    torch.testing.assert_close(at_end, visual)  # proprio on the last frame: no cost
    along = goal_objective(visual_dim=2, mode="weighted", proprio_weight=10.0)(z, goal)
    torch.testing.assert_close(along, visual + 10.0 * GoalObjective("mse", "weighted", 2, None)(z, goal))
    assert along.item() > at_end.item()


def test_mpc_reaches_the_goal_from_observations_only():
    model = ToyModel()
    planner = make_planner("cem", horizon=3, action_dim=4, samples=200, elites=20, iterations=8, seed=0)
    controller = MPCController(model, planner, goal_objective(visual_dim=2))
    goal = torch.tensor([[0.5, -0.3], [-0.4, 0.2]])
    controller.reset({"rgb": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "proprio": goal})
    pos = torch.zeros(2, 2)
    executed = []
    for step in range(0, 20, 2):
        chunk = controller.act({"rgb": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "proprio": pos, "step": step})
        assert chunk.shape == (2, 2, 2) and chunk.abs().max() <= 1.0  # one block of frameskip=2 actions
        for k, action in enumerate(chunk.unbind(1)):
            controller.executed(step + k, {"rgb": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "proprio": pos}, action)
            executed.append(action)
            pos = pos + 0.1 * action
    assert torch.linalg.norm(pos - goal, dim=1).max() < 0.1
    assert len(controller.latencies) == 10  # one replan per block of frameskip=2 steps
    # from the second replan on, the model sees the block actually executed as its past action
    np.testing.assert_allclose(model.past_seen[-1][:, -1].numpy(), torch.cat(executed[-4:-2], dim=1).numpy())


def test_held_block_actions_repeat_each_planned_action_over_the_block():
    model = ToyModel(frameskip=3)
    planner = make_planner("cem", horizon=2, action_dim=2, samples=100, elites=10, iterations=5, seed=0)
    controller = MPCController(model, planner, goal_objective(visual_dim=2), hold_in_block=True)
    controller.reset({"rgb": torch.zeros(1, 4, 4, 3, dtype=torch.uint8), "proprio": torch.tensor([[0.3, 0.3]])})
    obs = {"rgb": torch.zeros(1, 4, 4, 3, dtype=torch.uint8), "proprio": torch.zeros(1, 2), "step": 0}
    block = controller.act(obs)[0]  # (frameskip, A)
    assert torch.equal(block[0], block[1]) and torch.equal(block[1], block[2])
    assert (block[0] > 0).all()  # toward the goal


def test_wm_plan_cli_writes_results_and_refuses_bad_settings_without_leaving_files(tmp_path, capsys):
    import json
    from pathlib import Path

    from wm.app.cli import main

    ckpt = str(Path(__file__).parent.parent / "checkpoints" / "jepa-wall")
    base = ["plan", "--checkpoint", ckpt, "--env", "wm/Wall-v0", "--episodes", "2", "--goal-source", "random"]
    assert main([*base, "--samples", "20", "--elites", "30", "--out", str(tmp_path / "bad")]) != 0
    assert "elites" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    out = tmp_path / "ok"
    argv = [*base, "--budget", "6", "--samples", "20", "--elites", "5", "--iterations", "2", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 2 and results["config"]["elites"] == 5 and results["decision_latency_ms"]["n"] == 2
    assert (out / "episode_0.mp4").is_file() and (out / "summary.png").is_file()
    # Wall's planning preset (hold_in_block, 20 iterations) fills what the flags leave out; the flags win
    assert results["config"]["hold_in_block"] and results["config"]["iterations"] == 2
    assert results["config"]["plan_preset"] == {"hold_in_block": True, "iterations": 20}
    assert main([*argv[:-1], str(tmp_path / "off"), "--no-hold-in-block"]) == 0
    assert not json.loads((tmp_path / "off" / "results.json").read_text())["config"]["hold_in_block"]


def test_a_planning_preset_fills_only_the_settings_not_given():
    import pytest

    from planners.mpc import MPCConfig, with_preset
    from wm.errors import WMError

    unset = MPCConfig(**{name: None for name in MPCConfig.__dataclass_fields__})
    assert with_preset(unset, {}) == MPCConfig()  # no preset: the defaults, as before presets
    preset = {"hold_in_block": True, "iterations": 20}
    assert with_preset(unset, preset) == MPCConfig(hold_in_block=True, iterations=20)
    given = MPCConfig(**{**vars(unset), "iterations": 3, "hold_in_block": False})
    assert with_preset(given, preset) == MPCConfig(iterations=3)
    with pytest.raises(WMError, match="unknown setting"):
        with_preset(unset, {"iteration": 20})


def shipped_costs(controllers: dict, seed: int, samples: int) -> dict:
    """Costs `(samples,)` that each MPC controller of `controllers` (name -> a function of the shipped PointMaze
    model) gives the same random action sequences from the same start toward the same goal, and under "model" the
    model itself."""
    from pathlib import Path

    from envs.registry import make_env
    from wm.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(Path(__file__).parent.parent / "checkpoints" / "jepa-pointmaze")  # its own copy
    env = make_env("wm/PointMaze-v0", 64).unwrapped
    obs, _ = env.reset(seed=seed)
    goal = env.observe_state(env.sample_goal(np.random.default_rng(seed)))
    batch = lambda o: {k: torch.as_tensor(o[k])[None] for k in ("rgb", "proprio")}  # noqa: E731
    generator = torch.Generator().manual_seed(seed)
    actions = torch.rand(1, samples, 5, model.spec.block_action_dim, generator=generator) * 2 - 1
    costs = {}
    for name, make in controllers.items():
        controller = make(model)
        controller.reset(batch(goal))
        with torch.no_grad():
            z = controller.encode(batch(obs))[:, None]  # (1, 1, N, D)
            costs[name] = controller.cost_fn(z, None)(actions)[0]
    return {**costs, "model": model}


def test_bf16_costs_rank_candidates_like_fp32_on_a_shipped_model():
    def cem(bf16: bool):
        def make(model):
            planner = make_planner("cem", horizon=5, action_dim=model.spec.block_action_dim, samples=8, elites=2)
            return MPCController(model, planner, goal_objective(model.spec.visual_dim), bf16=bf16)

        return make

    costs = shipped_costs({"fp32": cem(False), "bf16": cem(True)}, seed=0, samples=64)
    assert costs["bf16"].dtype == torch.float32
    rank = lambda c: c.argsort().argsort().float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(costs["fp32"]), rank(costs["bf16"])]))[0, 1] > 0.9
    assert not torch.equal(costs["fp32"], costs["bf16"])  # bf16 really ran


def test_compiled_rollouts_cost_what_eager_ones_do_and_a_model_without_them_refuses():
    from planners.mpc import MPCConfig, build_mpc
    from wm.errors import WMError

    eager = lambda model: build_mpc(model, MPCConfig(samples=16, horizon=5))  # noqa: E731
    compiled = lambda model: build_mpc(model, MPCConfig(samples=16, horizon=5, compile=True))  # noqa: E731
    costs = shipped_costs({"eager": eager, "compiled": compiled}, seed=1, samples=16)
    assert costs["model"].predictor.step_trunk is not None
    torch.testing.assert_close(costs["compiled"], costs["eager"], atol=1e-4, rtol=1e-4)
    with pytest.raises(WMError, match="cannot compile its rollouts"):
        build_mpc(ToyModel(), MPCConfig(compile=True))


def test_goals_at_rest_zero_only_the_velocities_and_leave_the_recorded_goal_alone():
    from wm.goals import goal_batch

    proprio = np.array([0.5, -0.2, 0.9, -1.1], np.float32)
    pairs = [{"goal_obs": {"rgb": np.zeros((4, 4, 3), np.uint8), "proprio": proprio.copy()}}]
    rest = goal_batch(pairs, "rest", (2, 3))
    assert np.array_equal(rest["proprio"], [[0.5, np.float32(-0.2), 0.0, 0.0]]) and rest["rgb"].shape == (1, 4, 4, 3)
    assert np.array_equal(pairs[0]["goal_obs"]["proprio"], proprio)
    assert np.array_equal(goal_batch(pairs, "observed", (2, 3))["proprio"][0], proprio)


def test_elites_default_to_a_tenth_of_the_samples():
    """Issue 28 item 5. Before: `--samples` below 30 failed (`CEM needs 1 <= elites <= samples`), also on a shipped
    checkpoint out of the box, because elites defaulted to 30 whatever the samples."""
    from planners.mpc import MPCConfig, build_mpc, elites_for

    assert [elites_for(n) for n in (300, 64, 16, 5)] == [30, 6, 1, 1]
    model = ToyModel()
    for planner in ("cem", "icem"):
        controller = build_mpc(model, MPCConfig(planner=planner, samples=16, iterations=1, horizon=2))
        assert controller.planner.elites == 1 and controller.planner.samples == 16


def test_the_success_objective_scores_the_last_imagined_frame_with_the_success_head():
    from pathlib import Path

    import pytest

    from planners.mpc import MPCConfig, build_mpc
    from planners.objectives import SuccessObjective, WeightedSum
    from wm.errors import WMError
    from wm.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(Path(__file__).parent.parent / "checkpoints" / "jepa-pointmaze")
    spec = model.spec
    g = torch.Generator().manual_seed(0)
    z_future = torch.randn(2, 5, 3, spec.tokens, spec.latent_dim, generator=g)  # (B, S, H, N, D)
    z_goal = torch.randn(2, spec.tokens, spec.latent_dim, generator=g)
    with torch.no_grad():
        cost = SuccessObjective(model)(z_future, z_goal)
        logits = model.success_logits(z_future[:, :, -1], z_goal[:, None])  # (B, S)
        earlier = z_future.clone()
        earlier[:, :, :-1] += 1.0
        again = SuccessObjective(model)(earlier, z_goal)
    assert cost.shape == (2, 5) and (cost > 0).all()
    torch.testing.assert_close(cost, torch.nn.functional.softplus(-logits))  # -log p(success)
    torch.testing.assert_close(again, cost)  # only the last frame counts
    objective = build_mpc(model, MPCConfig(success_weight=2.0)).objective
    assert isinstance(objective, WeightedSum) and objective.terms[-1][0] == 2.0
    assert isinstance(objective.terms[-1][1], SuccessObjective)
    for bad in ({"success_weight": float("nan")}, {"proprio_weight": -1.0}, {"proprio_weight": float("inf")}):
        with pytest.raises(WMError, match=f"planning setting {next(iter(bad))}=.* must be a number >= 0"):
            build_mpc(model, MPCConfig(**bad))
    model.success = None
    with pytest.raises(WMError, match="a success objective needs a success head"):
        build_mpc(model, MPCConfig(success_weight=1.0))


@pytest.mark.parametrize("name", list(PLANNERS))
def test_every_planner_plans_through_the_mpc_controller(name):
    """Each registered planner takes the controller's call (the gradient planner once lost it to `proposals`)."""
    from planners.registry import planner_from_budget

    planner = planner_from_budget(name, horizon=3, action_dim=4, samples=16, elites=4, iterations=2)
    controller = MPCController(ToyModel(), planner, goal_objective(visual_dim=2))
    controller.reset({"rgb": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "proprio": torch.tensor([[0.5, 0.0]] * 2)})
    chunk = controller.act({"rgb": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "proprio": torch.zeros(2, 2), "step": 0})
    assert chunk.shape == (2, 2, 2) and bool((chunk.abs() <= 1.0).all())
