"""`GymImageAdapter`: any gymnasium env that renders `rgb_array`, seen through the engine's contract.

Observations are `{"rgb": (S, S, 3) uint8, "proprio": (P,) float32}` with `S = image_size`:
- rgb: the wrapped env's `render()` frame, centre-cropped to a square (the shorter side is kept) and resized
  with Pillow's bilinear filter, which widens with the scale factor when shrinking (antialiased, area-like).
- proprio: `proprio_fn(raw_obs)` when given; else the flattened raw observation when it is a Box or a Dict of
  Boxes with at most `MAX_PROPRIO_DIM` numbers in all; else an empty `(0,)` vector.

Actions are `(A,)` float32 in [-1, 1] (A = the wrapped Box's size), clipped, then mapped affinely onto the
wrapped bounds (-1 -> low, +1 -> high); a dimension with an infinite bound gets it unscaled (in [-1, 1]).

State hooks mirror the built-ins (`envs.base`). Without user hooks, an env whose `unwrapped` is a gymnasium
`MujocoEnv` gets state = `[qpos, qvel, act, qacc_warmstart]` float64 (`act` is empty in the stock envs, so the
layout matches the built-ins'); without the warm start a restored trajectory drifts by ~1e-16. After
`reset(options={"state": s})` the proprio of a MuJoCo env is recomputed with its `_get_obs()`; other envs
return the proprio of their own reset, so a user `set_state` hook cannot refresh it.
Success needs a user `is_success(state, goal)` hook: `has_success` says whether there is one, and without it
`info["success"]` is always False.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from PIL import Image

from wm.errors import WMError

MAX_PROPRIO_DIM = 256
"""Largest raw observation (numbers in all) used as the default proprio; bigger ones (images) give `(0,)`."""


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
      `proprio_fn(raw_obs) -> (P,)`, probed once on the wrapped `observation_space.sample()` to learn P;
      `get_state(env) -> state`, `set_state(env, state)`, `is_success(state, goal) -> bool` (needs get_state).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        env: gym.Env | str,
        image_size: int = 64,
        *,
        proprio_fn: Callable[[Any], np.ndarray] | None = None,
        get_state: Callable[[gym.Env], np.ndarray] | None = None,
        set_state: Callable[[gym.Env, np.ndarray], None] | None = None,
        is_success: Callable[[np.ndarray, Any], bool] | None = None,
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
        self._is_mujoco = isinstance(self.env.unwrapped, MujocoEnv)
        self._get_state_hook, self._set_state_hook, self._is_success_hook = get_state, set_state, is_success
        if is_success is not None and not self.has_state:
            raise WMError("is_success(state, goal) needs states; pass get_state=(env -> state) too")
        self._goal: Any = None

        self._low = space.low.reshape(-1).astype(np.float64)
        self._high = space.high.reshape(-1).astype(np.float64)
        self._scaled = np.isfinite(self._low) & np.isfinite(self._high)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self._low.size,), np.float32)

        obs_space = self.env.observation_space
        if proprio_fn is not None:
            proprio_dim = self._proprio(obs_space.sample()).size
        elif _is_low_dim(obs_space):
            proprio_dim = gym.spaces.flatdim(obs_space)
        else:
            proprio_dim = 0
        self._proprio_dim = proprio_dim
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32),
            }
        )
        fps = self.env.metadata.get("render_fps")
        self.metadata = {**self.metadata, **({"render_fps": fps} if fps else {})}

    # ----------------------------------------------------------------------------------------- state
    @property
    def has_state(self) -> bool:
        """Whether `get_state` works (a user hook, or a gymnasium MuJoCo env)."""
        return self._get_state_hook is not None or self._is_mujoco

    @property
    def has_success(self) -> bool:
        """Whether an `is_success` hook was given; without one `info["success"]` is always False."""
        return self._is_success_hook is not None

    @property
    def goal(self) -> Any:
        """The goal passed as `reset(options={"goal": g})`, or None."""
        return self._goal

    def get_state(self) -> np.ndarray:
        """The wrapped env's state; MuJoCo default `(nq + 2 nv + na,)` float64: qpos, qvel, act, warmstart."""
        if self._get_state_hook is not None:
            return self._get_state_hook(self.env)
        if not self._is_mujoco:
            raise WMError(f"{self._name} is not a gymnasium MujocoEnv; pass get_state=(env -> state)")
        d = self.env.unwrapped.data
        return np.concatenate([d.qpos, d.qvel, d.act, d.qacc_warmstart]).astype(np.float64)

    def set_state(self, state) -> None:
        """Restore a state from `get_state`, so the same actions then give the same frames."""
        if self._set_state_hook is not None:
            self._set_state_hook(self.env, state)
            return
        if not self._is_mujoco:
            raise WMError(f"{self._name} is not a gymnasium MujocoEnv; pass set_state=(env, state -> None)")
        raw = self.env.unwrapped
        nq, nv, na = raw.model.nq, raw.model.nv, raw.model.na
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (nq + 2 * nv + na,) or not np.all(np.isfinite(state)):
            raise WMError(
                f"state must be {nq + 2 * nv + na} finite numbers for {self._name}, got {state.size}; "
                "pass a vector from env.get_state()"
            )
        raw.data.act[:] = state[nq + nv : nq + nv + na]
        raw.data.qacc_warmstart[:] = state[nq + nv + na :]
        raw.set_state(state[:nq], state[nq : nq + nv])  # runs mj_forward

    def is_success(self, state, goal) -> bool:
        """The user hook's verdict on `state` against `goal`."""
        if self._is_success_hook is None:
            raise WMError(f"{self._name} has no success test; pass is_success=(state, goal -> bool)")
        return bool(self._is_success_hook(state, goal))

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the wrapped env with `seed`. `options` may hold `"state"` (start state) and `"goal"` (kept
        for `is_success`); other options go to the wrapped env's reset."""
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
        """The wrapped env's frame, centre-cropped to a square and resized: `(S, S, 3)` uint8."""
        frame = np.asarray(self.env.render())
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
        """Close the wrapped env (and its renderer)."""
        self.env.close()

    # ------------------------------------------------------------------------------------ helpers
    @property
    def _name(self) -> str:
        return type(self.env.unwrapped).__name__

    def _raw_obs_after_set_state(self, raw_obs):
        """The raw observation of a restored state (gymnasium MuJoCo envs compute it with `_get_obs()`)."""
        if self._is_mujoco and hasattr(self.env.unwrapped, "_get_obs"):
            return self.env.unwrapped._get_obs()
        return raw_obs

    def _proprio(self, raw_obs) -> np.ndarray:
        if self._proprio_fn is not None:
            proprio = np.array(self._proprio_fn(raw_obs), dtype=np.float32)  # a copy: never share buffers
            if proprio.ndim != 1:
                raise WMError(f"proprio_fn returned shape {proprio.shape}; it must return a 1-D vector (P,)")
            return proprio
        if self.observation_space["proprio"].shape == (0,):
            return np.zeros(0, np.float32)
        return np.array(gym.spaces.flatten(self.env.observation_space, raw_obs), dtype=np.float32)

    def _obs(self, raw_obs) -> dict:
        proprio = self._proprio(raw_obs)
        if proprio.shape != (self._proprio_dim,):
            raise WMError(f"proprio has shape {proprio.shape}, not ({self._proprio_dim},); make it fixed")
        return {"rgb": self.render(), "proprio": proprio}

    def _info(self, raw_info: dict) -> dict:
        """The wrapped env's info plus `"success"` (and `"state"` when states are available)."""
        info = dict(raw_info)
        state = self.get_state() if self.has_state else None
        info["success"] = self.has_success and self.is_success(state, self._goal)
        if state is not None:
            info["state"] = state
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
