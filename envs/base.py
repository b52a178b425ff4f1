"""Shared machinery of the built-in MuJoCo image environments.

Every built-in env is a planar MuJoCo scene seen by one fixed top-down camera. Observations follow the engine's
contract `{"rgb": (H, W, 3) uint8, "proprio": (P,) float32}`; actions are `(A,)` float32 in [-1, 1].

State vectors are float64 `[qpos, qvel, qacc_warmstart]`: restoring one with `set_state` and replaying the same
actions reproduces the same frames bit for bit (the solver warm start is part of the state for that reason).
Goals are states too; `is_success(state, goal)` judges only the parts a task cares about.
"""

from __future__ import annotations

import os

os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: one raster thread per process; parallelism is per env

import gymnasium as gym
import numpy as np

from envs.mujoco_import import load_mujoco
from wm.errors import WMError

mujoco = load_mujoco()


class MujocoImageEnv(gym.Env):
    """Base class: subclasses provide the scene XML and the task (sampling, proprio, success, action mapping).

    Subclass hooks:
      `_xml() -> str`, `_sample_state() -> state`, `_sample_goal() -> state`, `_apply_action(a (A,))`,
      `_proprio() -> (P,) float32`, `goal_distance(state, goal) -> float`, `is_success(state, goal) -> bool`.
    Class attributes: `action_dim`, `proprio_dim`, `n_substeps` (physics steps per env step), `camera`,
    `proprio_velocity_dims` (the proprio entries that are velocities: zero in a goal at rest).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_dim: int = 2
    proprio_dim: int = 4
    proprio_velocity_dims: tuple[int, ...] = (2, 3)  # every built-in's proprio is (x, y, vx, vy)
    n_substeps: int = 10
    camera: str = "top"
    proprio_bound: float = 100.0  # finite, far beyond any reachable position (m) or speed (m/s)

    def __init__(self, image_size: int = 64, render_mode: str | None = "rgb_array"):
        if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
            raise WMError(f"image_size must be an integer in [16, 1024], got {image_size!r}; pass e.g. image_size=64")
        if render_mode not in (None, "rgb_array"):
            raise WMError(f"render_mode {render_mode!r} is not supported; use 'rgb_array'")
        self.image_size = image_size
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_string(self._xml())
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, image_size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, image_size)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._goal = np.zeros(self.state_dim)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.control_dt))}
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "proprio": gym.spaces.Box(-self.proprio_bound, self.proprio_bound, (self.proprio_dim,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)

    # ----------------------------------------------------------------------------------------- state
    @property
    def state_dim(self) -> int:
        return self.model.nq + 2 * self.model.nv

    @property
    def control_dt(self) -> float:
        """Seconds of simulated time per env step."""
        return self.model.opt.timestep * self.n_substeps

    @property
    def goal(self) -> np.ndarray:
        """The current goal state, `(state_dim,)` float64; assignable (e.g. to chain goals mid-episode)."""
        return self._goal.copy()

    @goal.setter
    def goal(self, state) -> None:
        self._goal = self._check_state(state, "goal")

    def sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        """A random goal state drawn with `rng` instead of the env's own generator (the episode is untouched)."""
        own = self.np_random
        self.np_random = rng
        try:
            return self._sample_goal()
        finally:
            self.np_random = own

    def get_state(self) -> np.ndarray:
        """Full simulator state `(state_dim,)` float64: `[qpos, qvel, qacc_warmstart]`."""
        d = self.data
        return np.concatenate([d.qpos, d.qvel, d.qacc_warmstart]).astype(np.float64)

    def set_state(self, state) -> None:
        """Restore a state from `get_state` exactly (positions, velocities and solver warm start)."""
        state = self._check_state(state, "state")
        nq, nv = self.model.nq, self.model.nv
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = state[:nq]
        self.data.qvel[:] = state[nq : nq + nv]
        self.data.qacc_warmstart[:] = state[nq + nv :]
        mujoco.mj_forward(self.model, self.data)

    def _check_state(self, state, what: str) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (self.state_dim,):
            raise WMError(
                f"{what} has {state.size} values but {type(self).__name__} states have {self.state_dim}; "
                "pass a vector from env.get_state()"
            )
        if not np.all(np.isfinite(state)):
            raise WMError(f"{what} contains NaN or inf; pass a vector from env.get_state()")
        return state

    def _state_from_qpos(self, qpos) -> np.ndarray:
        """A resting state (zero velocity, zero warm start) at positions `qpos (nq,)`."""
        return np.concatenate([np.asarray(qpos, np.float64), np.zeros(2 * self.model.nv)])

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode. `options` may hold `"state"` (start state) and `"goal"` (goal state)."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"state", "goal"}
        if unknown:
            raise WMError(f"unknown reset option(s) {sorted(unknown)}; use 'state' and/or 'goal'")
        start = options.get("state")
        self.set_state(self._sample_state() if start is None else self._check_state(start, "options['state']"))
        goal = options.get("goal")
        self._goal = self._sample_goal() if goal is None else self._check_state(goal, "options['goal']")
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (self.action_dim,):
            raise WMError(f"action has {action.size} values, expected {self.action_dim}")
        if not np.all(np.isfinite(action)):
            raise WMError(f"action {action.tolist()} contains NaN or inf; the policy produced invalid numbers")
        self.advance(action)
        state = self.get_state()
        reward = -float(self.goal_distance(state, self._goal))
        return self._obs(), reward, False, False, self._info(state)

    def advance(self, action: np.ndarray) -> None:
        """One env step of physics under `action (A,)` (clipped to [-1, 1]) without observing or judging: what
        `step` does before it renders, for callers that look only now and then (`wm.evaluation.oracle`)."""
        self._apply_action(np.clip(action, -1.0, 1.0))
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)

    def observe(self) -> dict:
        """The observation `{"rgb": (H, W, 3) uint8, "proprio": (P,) float32}` of the current state."""
        return self._obs()

    def render(self) -> np.ndarray:
        """The camera image `(H, W, 3)` uint8 of the current state."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                self._renderer.scene.flags[flag] = False
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render().copy()

    def observe_state(self, state) -> dict:
        """The observation `{"rgb", "proprio"}` at `state`, without disturbing the running episode (goal images)."""
        saved = self.get_state()
        self.set_state(state)
        obs = self._obs()
        self.set_state(saved)
        return obs

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _obs(self) -> dict:
        return {"rgb": self.render(), "proprio": self._proprio().astype(np.float32)}

    def _info(self, state: np.ndarray | None = None) -> dict:
        state = self.get_state() if state is None else state
        return {
            "success": bool(self.is_success(state, self._goal)),
            "state": state,
            "goal": self._goal.copy(),
            "distance": float(self.goal_distance(state, self._goal)),
        }

    # ---------------------------------------------------------------------------- subclass hooks
    def _xml(self) -> str:
        raise NotImplementedError

    def _sample_state(self) -> np.ndarray:
        raise NotImplementedError

    def _sample_goal(self) -> np.ndarray:
        raise NotImplementedError

    def _apply_action(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def _proprio(self) -> np.ndarray:
        raise NotImplementedError

    def goal_distance(self, state, goal) -> float:
        raise NotImplementedError

    def is_success(self, state, goal) -> bool:
        raise NotImplementedError


VISUAL_XML = """
  <visual>
    <quality shadowsize="0"/>
    <headlight ambient="0.6 0.6 0.6" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
  </visual>
"""
"""Shared `<visual>` block: shadows off (the CPU renderer spends ~35 ms/frame on them), flat bright lighting."""
