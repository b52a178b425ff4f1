"""Making environments by id: the built-ins, `module:factory` references and `wm.envs` entry points
(`envs.entry_points`), or any installed gymnasium id, with the engine's observation contract.

An env that already meets the contract (`meets_contract`) is used as it is; any other goes behind
`GymImageAdapter` (which must find `render_mode="rgb_array"` frames, and finds MuJoCo state hooks on its own).
"""

from __future__ import annotations

import logging
import sys

import gymnasium as gym
import numpy as np

import envs
from envs.entry_points import is_reference, make_from_reference, registered
from wm.errors import WMError

log = logging.getLogger("wm.envs")

DEFAULT_EPISODE_STEPS = 1000
"""Episode length of an env that has no TimeLimit of its own."""


def is_builtin(env_id: str) -> bool:
    return env_id in envs.BUILTIN


def meets_contract(env: gym.Env) -> bool:
    """Whether observations are already `Dict(rgb=(H, W, 3) uint8, proprio=(P,))` with actions a Box."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Dict) or set(space.spaces) < {"rgb", "proprio"}:
        return False
    rgb, proprio = space["rgb"], space["proprio"]
    return (
        isinstance(rgb, gym.spaces.Box)
        and rgb.dtype == np.uint8
        and len(rgb.shape) == 3
        and rgb.shape[2] == 3
        and isinstance(proprio, gym.spaces.Box)
        and len(proprio.shape) == 1
        and isinstance(env.action_space, gym.spaces.Box)
    )


def _time_limit(env: gym.Env) -> int | None:
    """The episode length `env` or an env it wraps (wrappers' and the adapter's `.env`) declares, if any."""
    while env is not None:
        if isinstance(env, gym.wrappers.TimeLimit):
            return env._max_episode_steps
        steps = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        if steps:
            return steps
        env = getattr(env, "env", None)
    return None


def _make_foreign(env_id: str, image_size: int) -> gym.Env:
    """A non-built-in env with the contract: the factory's or gymnasium's env, behind the adapter if it needs it.

    The adapter draws a MuJoCo env itself at `image_size` px without shadows (gymnasium's own frames are 480 px
    with shadows: ~40x the cost); return your own `GymImageAdapter` from a factory to choose otherwise."""
    from envs.adapter import GymImageAdapter
    from envs.mujoco_sim import find_simulator

    if is_reference(env_id):
        env = make_from_reference(env_id, image_size)
    else:
        try:
            env = gym.make(env_id, render_mode="rgb_array")
        except gym.error.Error as e:
            raise WMError(
                f"unknown environment {env_id!r} ({e}); run `wm envs` for the built-ins and entry points, "
                "or pass an installed gymnasium id or package.module:factory"
            ) from None
    if meets_contract(env):
        return env
    return GymImageAdapter(env, image_size, render_size=image_size if find_simulator(env) is not None else None)


def make_env(env_id: str, image_size: int = 64, max_episode_steps: int | None = None) -> gym.Env:
    """A gymnasium env with the engine's observation contract `{"rgb": (H, W, 3) uint8, "proprio": (P,)}`.

    Built-in ids (`wm/...`) are made directly; `module:factory` references and `wm.envs` entry points are called
    (`envs.entry_points`); other ids are made by gymnasium with `render_mode="rgb_array"`. What does not meet the
    contract already is wrapped in `GymImageAdapter` (for a gymnasium MuJoCo id: drawn at `image_size` px without
    shadows). A TimeLimit of `max_episode_steps` (default: the env's own, else `DEFAULT_EPISODE_STEPS`) is added
    unless the env already has one of that length.
    """
    if is_builtin(env_id):
        kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        return gym.make(env_id, image_size=image_size, **kwargs)
    env = _make_foreign(env_id, image_size)
    own = _time_limit(env)
    steps = max_episode_steps or own or DEFAULT_EPISODE_STEPS
    return env if isinstance(env, gym.wrappers.TimeLimit) and own == steps else gym.wrappers.TimeLimit(env, steps)


def episode_limit(env_id: str) -> int | None:
    """The episode length (TimeLimit) an env id registers (for a factory: of the env it returns), None if none."""
    if is_builtin(env_id):
        return envs.BUILTIN[env_id][1]
    if is_reference(env_id):
        env = make_from_reference(env_id, 64)
        try:
            return _time_limit(env)
        finally:
            env.close()
    try:
        return gym.spec(env_id).max_episode_steps
    except gym.error.Error as e:
        raise WMError(
            f"unknown environment {env_id!r} ({e}); run `wm envs` to list the built-ins and entry points"
        ) from None


def default_episode_steps(env_id: str) -> int:
    """The registered episode length of an env id, else `DEFAULT_EPISODE_STEPS`."""
    return episode_limit(env_id) or DEFAULT_EPISODE_STEPS


def proprio_velocity_dims(env_id: str) -> tuple[int, ...]:
    """The proprio dims of `env_id` that are velocities (zeroed in goals at rest); () where the env names none."""
    env = make_env(env_id)
    try:
        return tuple(getattr(env.unwrapped, "proprio_velocity_dims", ()))
    finally:
        env.close()


def require_state_hooks(env: gym.Env, env_id: str, what: str) -> None:
    """Raise WMError unless the (unwrapped) `env` can save and restore its state, as `what` needs."""
    has_state = getattr(env, "has_state", None)
    hooks = all(callable(getattr(env, name, None)) for name in ("get_state", "set_state"))
    if not hooks or has_state is False:
        raise WMError(
            f"{what} needs an env with state hooks; {env_id!r} has none: return it from a factory as "
            "GymImageAdapter(env, get_state=..., set_state=...) or give it get_state()/set_state()"
        )
    from envs.mujoco_sim import restore_drift

    env.reset(seed=0)
    drift = restore_drift(env, np.zeros(env.action_space.shape, env.action_space.dtype))
    if drift > 1e-6:
        log.warning("%s: 2 steps from a restored state end %.3g away from the same steps taken live: its state "
                    "misses something the dynamics read (a mocap target, a controller's memory), so episodes started "
                    "from stored states drift; pass get_state/set_state hooks that hold it", env_id, drift)  # fmt: skip


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


def list_entry_points() -> list[dict]:
    """One row per installed `wm.envs` entry point: its name (the `--env` id) and the factory it names."""
    return [{"id": name, "factory": value} for name, value in sorted(registered().items())]
