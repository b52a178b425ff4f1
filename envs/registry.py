"""Making environments by id: the built-ins, or any installed gymnasium id behind the image adapter."""

from __future__ import annotations

import sys

import gymnasium as gym

import envs
from wm.errors import WMError


def is_builtin(env_id: str) -> bool:
    return env_id in envs.BUILTIN


def make_env(env_id: str, image_size: int = 64, max_episode_steps: int | None = None) -> gym.Env:
    """A gymnasium env with the engine's observation contract `{"rgb": (H, W, 3) uint8, "proprio": (P,)}`.

    Built-in ids (`wm/...`) are made directly; any other registered gymnasium id is wrapped in
    `GymImageAdapter` (it must support `render_mode="rgb_array"`).
    """
    if is_builtin(env_id):
        kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        return gym.make(env_id, image_size=image_size, **kwargs)
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise WMError(
            f"unknown environment {env_id!r} ({e}); run `wm envs` for the built-ins or pass an installed gymnasium id"
        ) from None
    from envs.adapter import GymImageAdapter

    env = GymImageAdapter(env_id, image_size=image_size)
    steps = max_episode_steps or gym.spec(env_id).max_episode_steps or 1000
    return gym.wrappers.TimeLimit(env, max_episode_steps=steps)


def default_episode_steps(env_id: str) -> int:
    """The registered episode length (TimeLimit) of an env id."""
    if is_builtin(env_id):
        return envs.BUILTIN[env_id][1]
    try:
        return gym.spec(env_id).max_episode_steps or 1000
    except gym.error.Error as e:
        raise WMError(f"unknown environment {env_id!r} ({e}); run `wm envs` to list the built-ins") from None


def list_builtin() -> list[dict]:
    """One row per built-in env: id, one-line description, action/proprio dims, default episode length."""
    rows = []
    for env_id, (entry_point, steps) in envs.BUILTIN.items():
        cls = gym.envs.registration.load_env_creator(entry_point)
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or env_id
        rows.append(
            {
                "id": env_id,
                "description": doc.strip().splitlines()[0],
                "action_dim": cls.action_dim,
                "proprio_dim": cls.proprio_dim,
                "episode_steps": steps,
            }
        )
    return rows
