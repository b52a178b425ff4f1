"""PushT: pushing physics, success and distance judged on the block pose, angle wrap-around, the scripted expert."""

import numpy as np
import pytest

from envs.push_t import T_OUTLINE, PushTEnv, block_pose, pose_error, t_distance
from envs.push_t_expert import PushTExpert


@pytest.fixture(scope="module")
def env():
    env = PushTEnv(image_size=32)
    yield env
    env.close()


def state_at(env, pusher_xy, block_pose_xyt):
    return env._state_from_qpos([*pusher_xy, *block_pose_xyt])


def test_straight_push_moves_the_block_and_it_stops_when_released(env):
    env.reset(seed=0, options={"state": state_at(env, (0.0, -0.6), (0.0, 0.0, 0.0))})  # pusher below the stem
    for _ in range(8):
        env.step(np.array([0.0, 1.0], np.float32))
    x, y, theta = block_pose(env.get_state())
    assert y > 0.3 and abs(x) < 0.02 and abs(theta) < 0.05  # a push through the centre translates it
    for _ in range(4):
        env.step(np.zeros(2, np.float32))
    assert np.abs(env.data.qvel[2:]).max() < 0.01  # table friction stops it within 0.4 s


def test_success_and_distance_judge_the_block_pose(env):
    goal = state_at(env, (0.5, 0.5), (0.1, -0.2, 0.3))
    assert env.is_success(goal, goal) and env.goal_distance(goal, goal) == 0.0
    shifted = state_at(env, (-0.7, 0.0), (0.3, -0.2, 0.3))  # 0.2 m off; the pusher does not matter
    turned = state_at(env, (0.5, 0.5), (0.1, -0.2, 0.3 + np.pi / 4))
    assert not env.is_success(shifted, goal) and not env.is_success(turned, goal)
    assert env.goal_distance(shifted, goal) == pytest.approx(0.2)
    assert env.goal_distance(turned, goal) == pytest.approx(env.angle_weight * np.pi / 4)
    nearby = state_at(env, (0.0, 0.0), (0.15, -0.2, 0.3 + 0.2))  # inside both thresholds
    assert env.is_success(nearby, goal)


def test_angle_error_wraps_around(env):
    goal = state_at(env, (0.5, 0.5), (0.0, 0.0, np.pi - 0.01))
    state = state_at(env, (0.5, 0.5), (0.0, 0.0, -np.pi + 0.01))
    assert pose_error(state, goal) == pytest.approx((0.0, 0.02))
    assert env.is_success(state, goal)


def test_outline_matches_the_boxes():
    midpoints = (T_OUTLINE + np.roll(T_OUTLINE, -1, axis=0)) / 2
    edges = np.roll(T_OUTLINE, -1, axis=0) - T_OUTLINE
    outward = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / np.linalg.norm(edges, axis=1, keepdims=True)
    np.testing.assert_allclose(t_distance(midpoints + 0.01 * outward, (0.0, 0.0, 0.0)), 0.01, atol=1e-9)
    np.testing.assert_allclose(t_distance(midpoints - 0.01 * outward, (0.0, 0.0, 0.0)), 0.0)


def test_sampled_starts_are_valid_and_seeded(env):
    for seed in range(5):
        env.reset(seed=seed)
        state, goal = env.get_state(), env.goal
        assert np.all(np.abs(state[2:4]) <= env.block_region) and -np.pi <= state[4] < np.pi
        assert t_distance(state[:2], state[2:5])[0] > env.pusher_radius  # the pusher starts clear of the T
        assert np.abs(goal[2:5] - state[2:5]).max() > 0.0  # the goal is a different pose
        env.reset(seed=seed)
        np.testing.assert_array_equal(env.get_state(), state)
        np.testing.assert_array_equal(env.goal, goal)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_pushes_the_block_to_the_goal(env, seed):
    expert = PushTExpert(env)
    env.reset(seed=seed)
    state, goal = env.get_state(), env.goal
    start = env.goal_distance(state, goal)
    assert start > 0.3
    for _ in range(200):
        action = expert.act(state, goal)
        assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
        np.testing.assert_array_equal(action, expert.act(state, goal))  # a pure function of (state, goal)
        state = env.step(action)[4]["state"]
    assert env.goal_distance(state, goal) < 0.25 * start
    assert env.is_success(state, goal)
