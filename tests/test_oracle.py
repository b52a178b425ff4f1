"""The simulator as a world model (`wm.evaluation.oracle`): its rollouts are the env's own futures, encoded by the
learned model's encoder, and MPC on it reaches goals that a learned model need not."""

from pathlib import Path

import numpy as np
import torch

from envs.registry import make_env
from planners.cem import CEM
from planners.mpc import MPCController
from planners.objectives import GoalObjective
from wm.evaluation.goal_reaching import Problems, run_controller
from wm.evaluation.oracle import FeatureGoalController, SimulatorWorldModel
from wm.models.checkpoint import load_checkpoint

ROOT = Path(__file__).parent.parent


def test_oracle_rollouts_are_the_envs_own_futures_and_leave_the_live_env_alone():
    model, _ = load_checkpoint(ROOT / "checkpoints" / "jepa-pointmaze")
    live = [make_env("wm/PointMaze-v0").unwrapped for _ in range(2)]
    for i, env in enumerate(live):
        env.reset(seed=i)
    before = [env.get_state() for env in live]
    sim = make_env("wm/PointMaze-v0").unwrapped
    sim.reset(seed=5)
    oracle = SimulatorWorldModel(model, live, sim)
    actions = torch.rand(2, 3, 2, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, S, H, fs*A)
    z = oracle.rollout(None, actions)
    assert z.shape == (2, 3, 2, *model.encode({"rgb": torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8),
                                               "proprio": torch.zeros(1, 1, 4)}).shape[-2:])  # fmt: skip
    ref = make_env("wm/PointMaze-v0").unwrapped
    ref.reset(seed=9)
    ref.set_state(before[1])
    for a in actions[1, 2, 0].reshape(5, 2).numpy():
        obs = ref.step(a)[0]
    with torch.no_grad():
        expected = model.encode({k: torch.as_tensor(obs[k])[None, None] for k in ("rgb", "proprio")})[0, 0]
    torch.testing.assert_close(z[1, 2, 0], expected)
    for env, state in zip(live, before, strict=True):
        np.testing.assert_array_equal(env.get_state(), state)
    single = oracle.rollout(None, actions[:, 0])  # (B, H, fs*A) without a sample axis
    torch.testing.assert_close(single, z[:, 0])


def test_mpc_on_the_pose_oracle_reaches_pusht_goals_zero_actions_do_not():
    """The search alone, on ground-truth block poses: a tiny CEM budget already pushes the T to nearby goals."""
    model, _ = load_checkpoint(ROOT / "checkpoints" / "jepa-pusht")
    env = make_env("wm/PushT-v0").unwrapped
    env.reset(seed=3)
    start = env.get_state()
    goal = start.copy()
    goal[2] += 0.12  # the block 12 cm to the right; the pusher starts clear of it
    envs = [make_env("wm/PushT-v0", max_episode_steps=31).unwrapped]
    sim = make_env("wm/PushT-v0").unwrapped
    sim.reset(seed=0)

    def pose(s):
        x, y, th = s.get_state()[2:5]
        return np.array([x, y, 0.25 * np.cos(th), 0.25 * np.sin(th)], np.float32)

    oracle = SimulatorWorldModel(model, envs, sim, features=pose)
    planner = CEM(horizon=6, action_dim=10, samples=60, elites=6, iterations=3)
    sim.set_state(goal)
    controller = FeatureGoalController(
        MPCController(oracle, planner, GoalObjective("mse", "weighted")), pose(sim)[None]
    )
    pair = {"start": start, "goal": goal, "goal_obs": env.observe_state(goal), "source": {}}
    out = run_controller(Problems("wm/PushT-v0", envs, [pair], {}, 30), controller, videos=0)
    assert out.success[0] and out.distance[0] < 0.08
    assert not env.is_success(start, goal)


def test_pooled_pixels_in_the_oracle_on_an_adapted_env_are_its_own_futures():
    """The third representation of the oracle (nothing visual learned) on a `module:factory` env: the adapter's
    `advance`/`observe` let the simulator serve as the world model."""
    from envs.reacher import make_reacher
    from wm.evaluation.oracle import PooledPixels

    model, _ = load_checkpoint(ROOT / "checkpoints" / "jepa-pointmaze")  # its proprio embedding: any model's will do
    model.proprio_proj = torch.nn.Linear(6, model.proprio_proj.out_features)  # Reacher has 6 proprio dims
    model.proprio_mean, model.proprio_std = torch.zeros(6), torch.ones(6)
    pixels = PooledPixels(model, side=8)
    live, sim, ref = make_reacher(), make_reacher(), make_reacher()
    live.reset(seed=1)
    sim.reset(seed=2)
    ref.reset(seed=3)
    oracle = SimulatorWorldModel(pixels, [live], sim)
    actions = torch.rand(1, 2, 2, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = oracle.rollout(None, actions)
    assert z.shape == (1, 2, 2, 64, 3 + model.spec.latent_dim - model.spec.visual_dim)
    ref.set_state(live.get_state())
    for a in actions[0, 1].reshape(10, 2).numpy():
        obs = ref.step(a)[0]
    expected = pixels.encode({k: torch.as_tensor(obs[k])[None, None] for k in ("rgb", "proprio")})[0, 0]
    torch.testing.assert_close(z[0, 1, 1], expected)
    assert float(z[..., :3].min()) >= -1 and float(z[..., :3].max()) <= 1
