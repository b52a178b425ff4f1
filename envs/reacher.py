"""Gymnasium's Reacher-v5 as a goal-reaching env: an external env behind `GymImageAdapter` with hooks.

The example of "your env" in the README's Python quick start (`--env envs.reacher:make_reacher`). The hooks read
the live simulator: proprio `(6,)` = `[cos q0, sin q0, cos q1, sin q1, dq0, dq1]` (joint angles and velocities;
velocity dims 4 and 5); states are the adapter's MuJoCo default, `[qpos (4: 2 joints, target x/y), qvel (4),
qacc_warmstart (4)]`. A goal is a state; success is the fingertip within `SUCCESS_RADIUS` of the goal state's
fingertip (the red target is scenery: it stays where the episode put it). Frames are drawn top-down over the
arm's reach (0.21 m) at `image_size` px without shadows, anti-aliased.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.adapter import GymImageAdapter

LINKS = (0.1, 0.11)
"""Joint-to-joint and joint-to-fingertip lengths (m) of gymnasium's reacher.xml."""
SUCCESS_RADIUS = 0.03
"""Fingertip-to-goal distance (m) that counts as reached: 7% of the arm's reach diameter, ~4 px at 64 px."""
TOP_DOWN = {"distance": 0.55, "elevation": -90.0, "azimuth": 90.0, "lookat": np.zeros(3)}
"""A free camera straight above the base, framing the arm's reach with a margin (0.45 m across)."""


def fingertip(state) -> np.ndarray:
    """`(2,)` fingertip position (m) of a state `(S,)` (its first two entries are the joint angles)."""
    q0, q1 = np.asarray(state, np.float64)[:2]
    return np.array(
        [LINKS[0] * np.cos(q0) + LINKS[1] * np.cos(q0 + q1), LINKS[0] * np.sin(q0) + LINKS[1] * np.sin(q0 + q1)]
    )


def fingertip_distance(state, goal) -> float:
    return float(np.linalg.norm(fingertip(state) - fingertip(goal)))


def reached(state, goal) -> bool:
    """Success: fingertip within `SUCCESS_RADIUS` of the goal's; never without a goal."""
    return goal is not None and fingertip_distance(state, goal) < SUCCESS_RADIUS


def joint_proprio(env: gym.Env, raw_obs) -> np.ndarray:
    """`(6,)` from the live simulator: cos/sin of both joint angles, then both joint velocities."""
    data = env.unwrapped.data
    q, dq = data.qpos[:2], data.qvel[:2]
    return np.array([np.cos(q[0]), np.sin(q[0]), np.cos(q[1]), np.sin(q[1]), dq[0], dq[1]])


def make_reacher(image_size: int = 64) -> GymImageAdapter:
    """Reacher-v5 (50-step episodes, 0.02 s per step) with the engine's contract and goal hooks."""
    env = gym.make("Reacher-v5", render_mode="rgb_array", default_camera_config=TOP_DOWN)
    return GymImageAdapter(
        env,
        image_size,
        proprio_fn=joint_proprio,
        is_success=reached,
        goal_distance=fingertip_distance,
        proprio_velocity_dims=(4, 5),
        render_size=image_size,
        antialias=True,  # the links are ~2 px wide at 64 px: anti-aliased, they stay visible in every pose
    )


class ReachingPolicy:
    """Goal-reaching data for the arm: a PD controller in joint space drives toward a random joint target,
    decelerates, stops and holds it for a few steps, then takes the next target; Gaussian noise on every action, and
    now and then a target is left early. Episodes so hold starts, stops and controlled speeds, which random actions
    (the base joint spinning at a median 23 rad/s) never show. The gains are drawn per target: targets are reached in
    ~10-25 steps (0.2-0.5 s)."""

    def __init__(self, action_space, rng: np.random.Generator, noise_std: float = 0.15):
        self.rng, self.noise_std, self.dim = rng, noise_std, action_space.shape[0]
        self.low, self.high = action_space.low, action_space.high
        self._next_target()

    def _next_target(self) -> None:
        self.target = np.array([self.rng.uniform(-np.pi, np.pi), self.rng.uniform(-2.8, 2.8)])
        self.kp, self.kd = self.rng.uniform(1.0, 3.0), self.rng.uniform(0.08, 0.2)
        self.hold = int(self.rng.integers(1, 8))
        self.patience = int(self.rng.integers(15, 40))  # steps before a target is given up (a change of mind)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        p = np.asarray(obs["proprio"], np.float64)
        q = np.array([np.arctan2(p[1], p[0]), np.arctan2(p[3], p[2])])
        error = self.target - q
        error[0] = (error[0] + np.pi) % (2 * np.pi) - np.pi  # the base joint turns freely
        self.patience -= 1
        if np.abs(error).max() < 0.05 and np.abs(p[4:6]).max() < 0.5:
            self.hold -= 1
        if self.hold <= 0 or self.patience <= 0:
            self._next_target()
        action = self.kp * error - self.kd * p[4:6] + self.rng.normal(0.0, self.noise_std, self.dim)
        return np.clip(action, self.low, self.high)


def reaching_policy(action_space, rng: np.random.Generator) -> ReachingPolicy:
    """`wm collect --env envs.reacher:make_reacher --policy envs.reacher:reaching_policy`: goal-reaching data."""
    return ReachingPolicy(action_space, rng)
