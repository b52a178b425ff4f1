"""What an env's episode store looks like (per-frame keys and the env/observation/action spec), and what its
`success` column says about an episode."""

from __future__ import annotations

import numpy as np


def store_layout(env_id: str, image_size: int, steps: int) -> tuple[dict, dict]:
    """`(keys, spec)` of a store for `env_id`: per-frame shapes/dtypes and the env/observation/action spec."""
    from envs.registry import is_builtin, make_env

    env = make_env(env_id, image_size, steps)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        proprio_dim = obs_space["proprio"].shape[0]
        action_dim = act_space.shape[0]
        base = env.unwrapped
        state_dim = getattr(base, "state_dim", None)  # None: an env without state hooks
        state_dim = int(state_dim) if state_dim is not None else None
        control_dt = float(getattr(base, "control_dt", 0.0)) or None
    finally:
        env.close()
    keys = {
        "rgb": {"shape": [image_size, image_size, 3], "dtype": "uint8"},
        "proprio": {"shape": [proprio_dim], "dtype": "float32"},
        "action": {"shape": [action_dim], "dtype": "float32"},
        "success": {"shape": [], "dtype": "bool"},
        "reward": {"shape": [], "dtype": "float32"},
    }
    if state_dim is not None:
        keys["state"] = {"shape": [state_dim], "dtype": "float64"}
        if is_builtin(env_id):
            keys["goal"] = {"shape": [state_dim], "dtype": "float64"}
    spec = {
        "env": {"id": env_id, "image_size": image_size, "episode_steps": steps, "control_dt": control_dt},
        "observation": {"rgb": keys["rgb"], "proprio": keys["proprio"]},
        "action": {
            "shape": [action_dim],
            "low": np.asarray(act_space.low).tolist(),
            "high": np.asarray(act_space.high).tolist(),
            "alignment": "action[t] is applied at frame t; the last frame of an episode has action 0",
        },
    }
    return keys, spec


def judges_success(env_id: str, image_size: int = 64) -> bool:
    """Whether env `env_id` judges success (built-ins do; an adapted env only with an `is_success` hook): without a
    test, a store's `success` column is all False and says nothing."""
    from envs.registry import make_env

    env = make_env(env_id, image_size)
    try:
        base = env.unwrapped
        return callable(getattr(base, "is_success", None)) and bool(getattr(base, "has_success", True))
    finally:
        env.close()


def honours_reset_seeds(env_id: str, image_size: int = 64, seed: int = 1234) -> bool:
    """Whether two `reset(seed=seed)` of env `env_id` (another seed between them) start the same: what seeded
    collections and their replays rely on."""
    from envs.registry import make_env

    env = make_env(env_id, image_size)
    try:
        first, info = env.reset(seed=seed)
        env.reset(seed=seed + 1)
        again, info_again = env.reset(seed=seed)
    finally:
        env.close()
    same = np.array_equal(first["proprio"], again["proprio"]) and np.array_equal(first["rgb"], again["rgb"])
    return same and np.array_equal(info.get("state", 0), info_again.get("state", 0))


def goals_reached_in(success: np.ndarray) -> int:
    """Number of times an episode's `success (L,)` column switches on: goals reached (goals chain mid-episode)."""
    return int(np.sum(np.diff(np.asarray(success, dtype=np.int8), prepend=0) == 1))
