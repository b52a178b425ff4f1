"""Built-in envs: gymnasium compliance, seeded determinism, exact state restore, goals and bad input."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.experts import NoisyExpert, make_expert
from wm.errors import WMError

IDS = ["wm/PointMaze-v0", "wm/Wall-v0", "wm/PushT-v0"]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_is_clean(env_id):
    env = gym.make(env_id).unwrapped
    with _no_warnings():
        check_env(env, skip_render_check=False)
    env.close()


class _no_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        relevant = [w for w in self.caught if "gymnasium" in str(w.filename) or "env_checker" in str(w.message)]
        assert not relevant, [str(w.message) for w in relevant]


def rollout(env_id, seed, steps=15, image_size=64):
    env = gym.make(env_id, image_size=image_size)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = [obs["rgb"]]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        frames.append(obs["rgb"])
    env.close()
    return np.stack(frames)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_frames_other_seed_other_frames(env_id):
    a, b, c = rollout(env_id, 3), rollout(env_id, 3), rollout(env_id, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert np.ptp(a[-1]) > 50  # a real image, not a blank frame


@pytest.mark.parametrize("env_id", IDS)
def test_set_state_replays_exactly(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, 2))
    saved = env.get_state()
    actions = rng.uniform(-1, 1, (8, 2))
    first = [env.step(a)[0]["rgb"] for a in actions]
    env.reset(seed=99)
    env.set_state(saved)
    second = [env.step(a)[0]["rgb"] for a in actions]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_reset_options_set_start_and_goal(env_id):
    env = gym.make(env_id).unwrapped
    _, info = env.reset(seed=1)
    start, goal = info["state"], info["goal"]
    _, info2 = env.reset(seed=2, options={"state": goal, "goal": goal})
    np.testing.assert_allclose(info2["state"][: env.model.nq], goal[: env.model.nq])
    assert info2["success"] and env.is_success(goal, goal)
    assert not env.is_success(start, goal) or env.goal_distance(start, goal) < 0.5
    frame = env.observe_state(start)["rgb"]
    assert frame.shape == (64, 64, 3)
    np.testing.assert_allclose(env.get_state(), info2["state"])  # observe_state leaves the episode alone
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_bad_actions_states_and_options_raise_wm_errors(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(WMError, match="NaN or inf"):
        env.step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(WMError, match="values"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(WMError, match="states have"):
        env.set_state(np.zeros(2))
    with pytest.raises(WMError, match="unknown reset option"):
        env.reset(options={"start": 1})
    with pytest.raises(WMError, match="image_size"):
        type(env)(image_size=3)
    env.close()


@pytest.mark.parametrize("env_id", ["wm/PointMaze-v0", "wm/Wall-v0"])
def test_point_mass_expert_reaches_goals_under_noise(env_id):
    env = gym.make(env_id)
    expert = make_expert(env_id, env.unwrapped)
    reached = 0
    for seed in range(5):
        actor = NoisyExpert(expert, np.random.default_rng(seed))
        _, info = env.reset(seed=seed)
        for _ in range(100):
            _, _, _, _, info = env.step(actor.act(info["state"], info["goal"]))
        reached += info["success"]
    assert reached >= 4


def test_wall_door_is_the_only_way_across():
    env = gym.make("wm/Wall-v0").unwrapped
    left = env._state_from_qpos([-0.6, -0.8])
    env.reset(options={"state": left, "goal": left})
    for _ in range(40):  # push straight right below the door: the wall stops the agent
        env.step(np.array([1.0, 0.0], np.float32))
    assert env.get_state()[0] <= 0.0  # the agent's x: still in the left room (the wall is at x = 0)
    env.close()


def test_a_broken_mujoco_install_is_one_line_with_the_repair(monkeypatch):
    """Issue 28 item 13: a suite pinning another mujoco left `mujoco-core` at another version and `import mujoco`
    failed in a shared-library load, an internal error with a traceback."""
    import sys

    from envs.mujoco_import import load_mujoco

    monkeypatch.setitem(sys.modules, "mujoco", None)  # what a failing `import mujoco` raises: ImportError
    with pytest.raises(WMError, match=r"mujoco does not import .*repair: pip uninstall -y mujoco mujoco-core") as e:
        load_mujoco()
    assert "\n" not in str(e.value)
