"""`GymImageAdapter`: any gymnasium env that renders `rgb_array`, seen through the engine's contract.

Observations are `{"rgb": (S, S, 3) uint8, "proprio": (P,) float32}` with `S = image_size`:
- rgb: the wrapped env's `render()` frame, centre-cropped to a square (the shorter side is kept) and resized
  with Pillow's bilinear filter, which widens with the scale factor when shrinking (antialiased, area-like).
  For a MuJoCo env (`envs.mujoco_sim.find_simulator`), `render_size`, `camera`, `shadows`, `antialias` or
  `reflections` make the adapter draw the frames itself at `render_size` px (default `image_size`), from `camera`
  (a camera of the model by name or id, or a free camera as gymnasium's `default_camera_config` dict; default: the
  env's own), with shadows only if `shadows`, and multisample anti-aliasing and reflections only if asked (by
  default only above `envs.mujoco_sim.SMALL_FRAME` px); gymnasium draws 480 px frames with shadows, ~40 ms each on
  the CPU vs ~1 ms at 64 px without (`scripts/bench_external_env.py --render-only`), and an arm suite's 64 px frame
  cost 27 ms with anti-aliasing and reflections, 6.4 ms without.
- proprio: `proprio_fn(env, raw_obs)` when given (it may read the live simulator through `env`); else the
  flattened raw observation when it is a Box or a Dict of Boxes with at most `MAX_PROPRIO_DIM` numbers in all;
  else an empty `(0,)` vector.

Actions are `(A,)` float32 in [-1, 1] (A = the wrapped Box's size), clipped, then mapped affinely onto the
wrapped bounds (-1 -> low, +1 -> high); a dimension with an infinite bound gets it unscaled (in [-1, 1]).

State hooks mirror the built-ins (`envs.base`). Without user hooks, an env with a MuJoCo simulator (on
`env.unwrapped`, or an attribute of it such as `.sim` in wrapper-style envs) gets `envs.mujoco_sim` states,
`[qpos, qvel, act, qacc_warmstart]` float64. A restored state (`reset(options={"state": s})`, `observe_state`,
`observe`) has no raw observation of its own: `refresh_obs` says where it comes from, "get_obs" (the default: the
env's `_get_obs()`, where it has one taking no arguments, as gymnasium's MuJoCo envs do; else none), "none" (no
raw observation: `proprio_fn` must read the restored env, as the raw observation of a plain reset would be stale) or
a callable `refresh_obs(env) -> raw_obs`. Hooks only ever see a reset env: `proprio_fn` is probed for P on the
observation of one reset at construction, never on a sample of the observation space.
Success needs an `is_success(state, goal)` hook (`has_success`; without it `info["success"]` is always False and
evaluations say success was not judged). It is called after every reset and step with `goal=None` when the
episode has no goal (a plain reset): return False then. `goal_distance(state, goal) -> float` (optional) is
reported as `info["distance"]` when there is a goal; by default it is the Euclidean distance between the qpos of
MuJoCo states, or between whole user states.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from envs.mujoco_sim import SIM_ATTRIBUTES, SimRenderer, find_simulator
from wm.errors import WMError

MAX_PROPRIO_DIM = 256
"""Largest raw observation (numbers in all) used as the default proprio; bigger ones (images) give `(0,)`."""


def as_numpy(value):
    """`value` with every tensor-like leaf (torch: anything with `detach` and `cpu`, on any device) as a numpy
    array; dicts, lists and tuples keep their shape. Suites that return torch tensors are read like numpy ones."""
    if isinstance(value, dict):
        return {k: as_numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(as_numpy(v) for v in value)
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def _takes_no_arguments(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the usual `_get_obs(self)`
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _is_low_dim(space: gym.Space) -> bool:
    """True for a Box, or a Dict of Boxes, holding at most `MAX_PROPRIO_DIM` numbers."""
    if isinstance(space, gym.spaces.Dict):
        parts = list(space.spaces.values())
        size = sum(int(np.prod(s.shape)) for s in parts)
        return all(isinstance(s, gym.spaces.Box) for s in parts) and size <= MAX_PROPRIO_DIM
    return isinstance(space, gym.spaces.Box) and int(np.prod(space.shape)) <= MAX_PROPRIO_DIM


class GymImageAdapter(gym.Env):
    """Wraps `env` (an env, or an id made with `render_mode="rgb_array"`) to give the engine's contract.

    Hooks (all optional) receive the wrapped env as given or made, wrappers included:
      `proprio_fn(env, raw_obs) -> (P,)`, probed once on the observation of a reset at construction to learn P;
      `get_state(env) -> state`, `set_state(env, state)`;
      `is_success(state, goal) -> bool` and `goal_distance(state, goal) -> float` (need states; goal may be None).
    `proprio_velocity_dims`: the proprio entries that are velocities (zeroed in goals "at rest", as the built-ins').
    `render_size` / `camera` / `shadows` / `antialias` / `reflections`: see the module docstring (MuJoCo envs).
    `refresh_obs`: the raw observation of a restored state (see the module docstring).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        env: gym.Env | str,
        image_size: int = 64,
        *,
        proprio_fn: Callable[[gym.Env, Any], np.ndarray] | None = None,
        get_state: Callable[[gym.Env], np.ndarray] | None = None,
        set_state: Callable[[gym.Env, np.ndarray], None] | None = None,
        is_success: Callable[[np.ndarray, Any], bool] | None = None,
        goal_distance: Callable[[np.ndarray, Any], float] | None = None,
        proprio_velocity_dims: tuple[int, ...] = (),
        render_size: int | None = None,
        camera: str | int | dict | None = None,
        shadows: bool | None = None,
        antialias: bool | None = None,
        reflections: bool | None = None,
        refresh_obs: str | Callable[[gym.Env], Any] = "get_obs",
        env_kwargs: dict | None = None,
    ):
        if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
            raise WMError(f"image_size must be an integer in [16, 1024], got {image_size!r}; pass e.g. 64")
        self.env = _make(env, env_kwargs)
        if self.env.render_mode != "rgb_array":
            raise WMError(
                f"the wrapped env renders {self.env.render_mode!r}, not 'rgb_array'; "
                'create it with gym.make(..., render_mode="rgb_array")'
            )
        space = self.env.action_space
        if not isinstance(space, gym.spaces.Box) or not np.issubdtype(space.dtype, np.floating):
            raise WMError(f"action space {space} is not supported; only continuous (float) Box actions are")
        self.image_size = image_size
        self.render_mode = "rgb_array"
        self._proprio_fn = proprio_fn
        self._sim = find_simulator(self.env)
        self._get_state_hook, self._set_state_hook = get_state, set_state
        self._is_success_hook, self._distance_hook = is_success, goal_distance
        if (is_success or goal_distance) is not None and not self.has_state:
            raise WMError("is_success/goal_distance(state, goal) need states; pass get_state=(env -> state) too")
        self.proprio_velocity_dims = tuple(proprio_velocity_dims)
        self._goal: Any = None
        self._renderer = self._own_renderer(render_size, camera, shadows, antialias, reflections)

        self._low = space.low.reshape(-1).astype(np.float64)
        self._high = space.high.reshape(-1).astype(np.float64)
        self._scaled = np.isfinite(self._low) & np.isfinite(self._high)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self._low.size,), np.float32)

        if not callable(refresh_obs) and refresh_obs not in ("get_obs", "none"):
            raise WMError(f"refresh_obs must be 'get_obs', 'none' or a callable(env) -> raw obs, got {refresh_obs!r}")
        if refresh_obs == "none" and proprio_fn is None and _is_low_dim(self.env.observation_space):
            raise WMError("refresh_obs='none' leaves a restored state without a raw observation to read proprio from; "
                          "pass proprio_fn=(env, raw_obs -> (P,)) that reads the restored env")  # fmt: skip
        self._refresh_obs = refresh_obs
        obs_space = self.env.observation_space
        if proprio_fn is not None:  # probed on a reset env, as every later call sees it
            proprio_dim = self._proprio(self.env.reset()[0]).size
        elif _is_low_dim(obs_space):
            proprio_dim = gym.spaces.flatdim(obs_space)
        else:
            proprio_dim = 0
        self.proprio_dim = proprio_dim
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32),
            }
        )
        fps = self.env.metadata.get("render_fps")
        self.metadata = {**self.metadata, **({"render_fps": fps} if fps else {})}

    def _own_renderer(self, size: int | None, camera, shadows: bool | None, antialias: bool | None,
                      reflections: bool | None) -> SimRenderer | None:  # fmt: skip
        """The adapter's own MuJoCo renderer when any render option is set (None: the env's `render()`)."""
        if all(option is None for option in (size, camera, shadows, antialias, reflections)):
            return None
        if self._sim is None:
            raise WMError(f"render_size/camera/shadows/antialias/reflections need a MuJoCo env; {self._name} has no "
                          "simulator, drop them")  # fmt: skip
        return SimRenderer(self._sim, size or self.image_size, camera, bool(shadows), antialias, reflections)

    # ----------------------------------------------------------------------------------------- state
    @property
    def has_state(self) -> bool:
        """Whether `get_state` works (a user hook, or a MuJoCo simulator)."""
        return self._get_state_hook is not None or self._sim is not None

    @property
    def has_success(self) -> bool:
        """Whether an `is_success` hook was given; without one `info["success"]` is always False."""
        return self._is_success_hook is not None

    @property
    def state_dim(self) -> int | None:
        """Numbers in a state vector (None without states)."""
        return self.get_state().size if self.has_state else None

    @property
    def action_dim(self) -> int:
        return self.action_space.shape[0]

    @property
    def control_dt(self) -> float | None:
        """Seconds per step: the wrapped env's `dt`, else `1 / render_fps`, else None."""
        dt = getattr(self.env.unwrapped, "dt", None)
        fps = self.metadata.get("render_fps")
        return float(dt) if dt else (1.0 / fps if fps else None)

    @property
    def goal(self) -> Any:
        """The goal passed as `reset(options={"goal": g})`, or None."""
        return self._goal

    def get_state(self) -> np.ndarray:
        """The wrapped env's state (the hook's, or the simulator's `(nq + 2 nv + na,)` float64)."""
        if self._get_state_hook is not None:
            return np.asarray(as_numpy(self._get_state_hook(self.env)))
        return self._require_sim("get_state=(env -> state)").get_state()

    def set_state(self, state) -> None:
        """Restore a state from `get_state`, so the same actions then give the same frames."""
        if self._set_state_hook is not None:
            self._set_state_hook(self.env, state)
        else:
            self._require_sim("set_state=(env, state -> None)").set_state(state)

    def is_success(self, state, goal) -> bool:
        """The user hook's verdict on `state` against `goal` (None: no goal)."""
        if self._is_success_hook is None:
            raise WMError(f"{self._name} has no success test; pass is_success=(state, goal -> bool)")
        return bool(self._is_success_hook(state, goal))

    def goal_distance(self, state, goal) -> float:
        """The hook's distance, else the Euclidean distance of the (MuJoCo: qpos of the) states; NaN without goal."""
        if goal is None:
            return float("nan")
        if self._distance_hook is not None:
            return float(self._distance_hook(state, goal))
        if self._get_state_hook is None and self._sim is not None:
            return float(np.linalg.norm(self._sim.qpos(state) - self._sim.qpos(goal)))
        return float(np.linalg.norm(np.asarray(state, np.float64) - np.asarray(goal, np.float64)))

    def observe_state(self, state) -> dict:
        """The observation `{"rgb", "proprio"}` at `state`, leaving the running episode as it was (goal images)."""
        saved = self.get_state()
        self.set_state(state)
        obs = self._obs(self._raw_obs_after_set_state(None))
        self.set_state(saved)
        return obs

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the wrapped env with `seed`. `options` may hold `"state"` (start state) and `"goal"` (kept
        for `is_success` and `goal_distance`); other options go to the wrapped env's reset."""
        super().reset(seed=seed)
        options = dict(options or {})
        start = options.pop("state", None)
        self._goal = options.pop("goal", None)
        raw_obs, raw_info = self.env.reset(seed=seed, options=options or None)
        if start is not None:
            self.set_state(start)
            raw_obs = self._raw_obs_after_set_state(raw_obs)
        return self._obs(raw_obs), self._info(raw_info)

    def step(self, action):
        """Apply `action (A,)` in [-1, 1] (clipped); reward and done flags are the wrapped env's."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise WMError(f"action has {action.size} values, expected {self.action_space.shape[0]}")
        if not np.all(np.isfinite(action)):
            raise WMError(f"action {action.tolist()} contains NaN or inf; the policy produced bad numbers")
        raw_obs, reward, terminated, truncated, raw_info = self.env.step(self.wrapped_action(action))
        return self._obs(raw_obs), float(reward), bool(terminated), bool(truncated), self._info(raw_info)

    def advance(self, action) -> None:
        """One step of the wrapped env under `action (A,)` in [-1, 1], without observing or judging (and past its
        wrappers: no time limit): what `wm.evaluation.oracle` runs candidates with."""
        self.env.unwrapped.step(self.wrapped_action(np.asarray(action, dtype=np.float64).reshape(-1)))

    def observe(self) -> dict:
        """The observation `{"rgb", "proprio"}` of the current state (as after `set_state`)."""
        return self._obs(self._raw_obs_after_set_state(None))

    def wrapped_action(self, action: np.ndarray) -> np.ndarray:
        """`action (A,)` in [-1, 1] -> the wrapped Box: `low * (1 - t) + high * t` with `t = (a + 1) / 2`."""
        action = np.clip(action, -1.0, 1.0)
        t = (action + 1.0) / 2.0
        low = np.where(self._scaled, self._low, 0.0)  # zeros stand in for infinite bounds (no inf * 0 = NaN)
        high = np.where(self._scaled, self._high, 0.0)
        mapped = np.where(self._scaled, low * (1.0 - t) + high * t, action)
        space = self.env.action_space
        return np.clip(mapped, self._low, self._high).astype(space.dtype).reshape(space.shape)

    def render(self) -> np.ndarray:
        """The frame, centre-cropped to a square and resized: `(S, S, 3)` uint8."""
        frame = np.asarray(as_numpy(self._renderer.render() if self._renderer is not None else self.env.render()))
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise WMError(f"{self._name}.render() gave {frame.dtype} {frame.shape}, not (H, W, 3) uint8")
        h, w = frame.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        frame = frame[top : top + side, left : left + side]
        if side == self.image_size:
            return frame.copy()
        image = Image.fromarray(frame).resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return np.asarray(image).copy()

    def close(self) -> None:
        """Close the wrapped env (and the renderers)."""
        if self._renderer is not None:
            self._renderer.close()
        self.env.close()

    # ------------------------------------------------------------------------------------ helpers
    @property
    def _name(self) -> str:
        return type(self.env.unwrapped).__name__

    def _require_sim(self, hook: str):
        if self._sim is None:
            raise WMError(
                f"{self._name} holds no MuJoCo model/data (looked at env.unwrapped and its "
                f"{', '.join('.' + a for a in SIM_ATTRIBUTES)}); pass {hook}"
            )
        return self._sim

    def _raw_obs_after_set_state(self, raw_obs):
        """The raw observation of a restored state, as `refresh_obs` says: `refresh_obs(env)`; for "get_obs" the
        env's `_get_obs()` where it has one that takes no arguments (gymnasium-robotics' mazes need the point's
        observation passed in), else `raw_obs`; for "none" `raw_obs`."""
        if callable(self._refresh_obs):
            return self._refresh_obs(self.env)
        get_obs = getattr(self.env.unwrapped, "_get_obs", None)
        if self._refresh_obs == "get_obs" and callable(get_obs) and _takes_no_arguments(get_obs):
            return get_obs()
        return raw_obs

    def _proprio(self, raw_obs) -> np.ndarray:
        raw_obs = as_numpy(raw_obs)
        if self._proprio_fn is not None:
            proprio = np.array(self._proprio_fn(self.env, raw_obs), dtype=np.float32)  # a copy: never share buffers
            if proprio.ndim != 1:
                raise WMError(f"proprio_fn returned shape {proprio.shape}; it must return a 1-D vector (P,)")
            return proprio
        if self.observation_space["proprio"].shape == (0,):
            return np.zeros(0, np.float32)
        return np.array(gym.spaces.flatten(self.env.observation_space, raw_obs), dtype=np.float32)

    def _obs(self, raw_obs) -> dict:
        proprio = self._proprio(raw_obs)
        if proprio.shape != (self.proprio_dim,):
            raise WMError(f"proprio has shape {proprio.shape}, not ({self.proprio_dim},); make it fixed")
        return {"rgb": self.render(), "proprio": proprio}

    def _info(self, raw_info: dict) -> dict:
        """The wrapped env's info plus `"success"` (and `"state"` with states, `"distance"` with a goal too)."""
        info = dict(raw_info)
        state = self.get_state() if self.has_state else None
        info["success"] = self.has_success and self.is_success(state, self._goal)
        if state is not None:
            info["state"] = state
        if state is not None and self._goal is not None:
            info["distance"] = self.goal_distance(state, self._goal)
        return info


def _make(env: gym.Env | str, env_kwargs: dict | None) -> gym.Env:
    """The env itself, or `gym.make(env, render_mode="rgb_array", **env_kwargs)` for an id."""
    if not isinstance(env, str):
        if env_kwargs:
            raise WMError("env_kwargs only applies when env is an id; pass them to your own gym.make")
        return env
    env_kwargs = dict(env_kwargs or {})
    if "render_mode" in env_kwargs:
        raise WMError("drop render_mode from env_kwargs; the adapter always uses render_mode='rgb_array'")
    try:
        return gym.make(env, render_mode="rgb_array", **env_kwargs)
    except gym.error.UnregisteredEnv as e:
        raise WMError(f"unknown env id {env!r} ({e}); run `wm envs` to list the available ids") from e
