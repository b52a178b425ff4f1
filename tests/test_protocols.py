"""The protocols the code declares are the ones it honours: every policy kind acts through one signature, every
controller (MPC, policies, zero and random actions) meets `Controller`, and any of them runs in the one goal-reaching
evaluation and in the robot control loop."""

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.controller import Controller, RandomController, ZeroActions
from envs.robot.loop import ControlLoop
from envs.robot.sim import SimRobot
from planners.mpc import MPCConfig, build_mpc
from policies.checkpoint import load_policy
from policies.controller import PolicyController, act_block
from policies.protocol import Policy, PolicyConfig
from policies.registry import POLICIES, build_policy
from wm.evaluation.goal_reaching import held_out_problems, run_controller
from wm.models.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent
SPEC = {"history": 2, "frameskip": 3, "action_dim": 2, "tokens": 4, "latent_dim": 8, "width": 32, "act_steps": 2}


def policy_of(kind: str):
    base = PolicyConfig(kind="diffusion", **SPEC).to_dict() if POLICIES[kind].needs_base else None
    return build_policy({**PolicyConfig(kind=kind, **SPEC).to_dict(), "base": base}).eval()


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_every_policy_kind_acts_through_one_signature(kind):
    policy = policy_of(kind)
    assert isinstance(policy, Policy)
    z, goal = torch.randn(5, 2, 4, 8), torch.randn(5, 4, 8)
    noise = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    block = policy.act(z, goal, noise)
    assert block.shape == (5, 3, 2) and block.abs().max() <= 1.0
    assert torch.equal(block, policy.act(z, goal, noise))  # the noise is the only randomness
    assert torch.equal(policy.act(z, goal), policy.act(z, goal))  # noise None: its deterministic choice
    drawn = act_block(policy, z, goal, torch.Generator().manual_seed(0), stochastic=True)
    assert torch.equal(drawn, block)  # act_block draws exactly that noise


def test_only_the_registry_knows_kinds_a_config_without_its_base_is_refused():
    from wm.errors import WMError

    with pytest.raises(WMError, match="steered policy needs"):
        build_policy(PolicyConfig(kind="steered", **SPEC).to_dict())
    with pytest.raises(WMError, match="unknown policy kind"):
        build_policy(PolicyConfig(kind="banana", **SPEC).to_dict())


@pytest.fixture(scope="module")
def wall():
    model, config = load_checkpoint(ROOT / "checkpoints" / "jepa-wall")
    return model, config


def controllers(model):
    policy = load_policy(ROOT / "checkpoints" / "bc-wall")[0]
    mpc = build_mpc(model, MPCConfig(samples=16, elites=4, iterations=1, horizon=2))
    return {
        "mpc": mpc,
        "policy": PolicyController(policy, model),
        "zero": ZeroActions(2),
        "random": RandomController([-1, -1], [1, 1], chunk=2, seed=0),
    }


def test_every_controller_runs_in_the_goal_reaching_evaluation(wall, tmp_path):
    model, config = wall
    problems = held_out_problems(model.spec, config.trained_on, "wm/Wall-v0", episodes=2, budget=7, goal_offset=10,
                                 seed=0, scratch=tmp_path / "goals")  # fmt: skip
    for name, controller in controllers(model).items():
        assert isinstance(controller, Controller), name
        run = run_controller(problems, controller, desc=name, videos=1)
        assert run.success.shape == (2,) and run.real_frames.shape[:2] == (1, 7), name
    problems.close()


def test_every_controller_drives_a_robot_through_the_control_loop(wall):
    model, _ = wall
    robot = SimRobot("wm/Wall-v0", 64, seed=0)
    robot.connect()
    obs = robot.get_observation()
    goal = {k: np.asarray(obs[k])[None] for k in ("rgb", "proprio")}
    for name, controller in controllers(model).items():
        controller.reset(goal)
        records = []
        stats = ControlLoop(robot, controller, hz=1000).run(6, records.append)
        assert stats.steps == 6 and all(r.sent.shape == (2,) for r in records), name
    robot.disconnect()
