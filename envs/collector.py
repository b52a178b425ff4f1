"""Vectorised data collection: run a policy in N parallel copies of an env and yield whole episodes.

With the expert policy, goals are chained: once the expert has held a goal for a few steps it is given a new
random one (the env's goal is updated, so the `goal`, `success` and `reward` columns always describe the goal
being pursued). Episodes are then motion from end to end instead of a short approach and a long idle tail.

Policies: "expert" (the env's noisy scripted expert), "random" (independent uniform actions each step: the agent
jitters around its start, DINO-WM's data), "smooth" (random actions correlated in time, an AR(1) process with a
time constant of about `SMOOTH_STEPS` steps: the agent travels, runs into walls and keeps pushing, which is the
contact a world model must learn for planners not to imagine their way through walls), or a `package.module:factory`
of your own (`envs.behaviour`: scripted, teleoperated or learned).

Episode `i` is reset with its own seed and drives its own policy generator, both derived from
`(seed, i)`, so the data does not depend on the number of workers and appending to a store continues the
sequence instead of repeating it. Each yielded episode holds `steps + 1` frames, time-major:
  rgb (L, H, W, 3) uint8, proprio (L, P) float32, action (L, A) float32 (action[t] was applied at frame t;
  the last frame's action is 0: nothing follows it), state (L, S) float64, goal (L, S) float64 (built-ins),
  success (L,) bool, reward (L,) float32 (reward[t] was received for action[t]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np

from envs import behaviour
from envs.experts import NoisyExpert, make_expert
from envs.registry import is_builtin, make_env
from wm.errors import WMError

SMOOTH_STEPS = 10  # time constant (env steps) of the "smooth" policy's AR(1) actions


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode `index` in a collection seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_policy(env_id: str, policy: str) -> None:
    """Raise WMError unless `policy` can drive `env_id` (experts exist only for the built-in envs; a reference must
    name a callable)."""
    if policy not in behaviour.BUILTIN:
        behaviour.load_behaviour(policy)
    if policy == "expert" and not is_builtin(env_id):
        raise WMError(f"no scripted expert for {env_id!r}; collect with --policy random, smooth or module:factory")


def smooth_step(state: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    """One step of the "smooth" policy's AR(1) process per env: `state (N, A)` -> `(N, A)`, stationary std 0.8
    (about a quarter of the actions saturate at the bounds once clipped)."""
    rho = np.exp(-1.0 / SMOOTH_STEPS)
    noise = np.stack([r.normal(0.0, 0.8, state.shape[1]) for r in rngs])
    return rho * state + np.sqrt(1.0 - rho**2) * noise


def _env_info(info: dict, k: int) -> dict:
    """Env `k`'s entries of a vector env's `info` (without gymnasium's `_key` masks)."""
    return {key: value[k] for key, value in info.items() if not key.startswith("_")}


def _make_vector_env(env_id: str, num_envs: int, image_size: int, steps: int) -> gym.vector.VectorEnv:
    fns = [functools.partial(make_env, env_id, image_size, steps) for _ in range(num_envs)]
    if num_envs == 1:
        return gym.vector.SyncVectorEnv(fns)
    # spawn: workers start clean, never inheriting the parent's GL context or torch state
    return gym.vector.AsyncVectorEnv(fns, context="spawn")


def collect(
    env_id: str,
    episodes: int,
    steps: int,
    policy: str = "expert",
    seed: int = 0,
    workers: int = 1,
    image_size: int = 64,
    first_index: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield `episodes` episodes (numbered from `first_index`) in order; `on_step(n)` reports n new frames."""
    check_policy(env_id, policy)
    workers = max(1, min(workers, episodes))
    local = make_env(env_id, image_size, steps).unwrapped  # geometry for the expert; never rendered
    if policy == "expert":
        expert = make_expert(env_id, local)
    elif policy not in behaviour.BUILTIN:
        factory = behaviour.load_behaviour(policy)
    has_goal = is_builtin(env_id)
    action_dim = local.action_space.shape[0]
    vec = _make_vector_env(env_id, workers, image_size, steps)
    try:
        for batch_start in range(first_index, first_index + episodes, workers):
            indices = [batch_start + k for k in range(workers)]
            wanted = np.array([i < first_index + episodes for i in indices])  # the last batch may overshoot
            seeds = [episode_seed(seed, i) for i in indices]
            rngs = [np.random.default_rng([seed, i, 1]) for i in indices]
            if policy == "expert":
                actors = [NoisyExpert(expert, rng) for rng in rngs]
            elif policy not in behaviour.BUILTIN:
                actors = [behaviour.start_episode(factory, policy, local.action_space, rng) for rng in rngs]
            obs, info = vec.reset(seed=seeds)
            frames = {"rgb": [obs["rgb"]], "proprio": [obs["proprio"]], "success": [info["success"]]}
            if "state" in info:
                frames["state"] = [info["state"]]
            if has_goal:
                frames["goal"] = [info["goal"]]
            if policy == "smooth":  # (workers, A) AR(1) state, drawn from its stationary law
                smooth = np.stack([r.normal(0.0, 0.8, action_dim) for r in rngs])
            held = np.zeros(workers, dtype=int)  # steps each env has spent at its current goal
            hold_for = [int(r.integers(1, 6)) for r in rngs]
            actions, rewards = [], []
            lengths = np.full(workers, steps + 1)  # frames per episode; shorter if the env terminates early
            for t in range(1, steps + 1):
                if policy == "expert":
                    act = np.stack([a.act(s, g) for a, s, g in zip(actors, info["state"], info["goal"], strict=True)])
                elif policy == "smooth":
                    smooth = smooth_step(smooth, rngs)
                    act = np.clip(smooth, -1.0, 1.0).astype(np.float32)
                elif policy == "random":
                    act = np.stack([r.uniform(-1.0, 1.0, action_dim) for r in rngs]).astype(np.float32)
                else:
                    act = np.stack([behaviour.act(actor, policy, {"rgb": obs["rgb"][k], "proprio": obs["proprio"][k]},
                                                  _env_info(info, k), local.action_space)
                                    for k, actor in enumerate(actors)])  # fmt: skip
                obs, reward, terminated, truncated, info = vec.step(act)
                actions.append(act)
                rewards.append(reward)
                frames["rgb"].append(obs["rgb"])
                frames["proprio"].append(obs["proprio"])
                frames["success"].append(info["success"])
                for key in ("state", "goal"):
                    if key in frames:
                        frames[key].append(info[key])
                if policy == "expert":
                    held = np.where(info["success"], held + 1, 0)
                    if np.any(held >= hold_for):
                        goals = list(info["goal"])
                        for k in np.flatnonzero(held >= hold_for):
                            goals[k] = local.sample_goal(rngs[k])
                            held[k], hold_for[k] = 0, int(rngs[k].integers(1, 6))
                        vec.set_attr("goal", goals)
                        info["goal"] = np.stack(goals)  # the goal pursued from here on
                if on_step:
                    on_step(int(np.sum((lengths > t) & wanted)))
                ended = (terminated | truncated) & (lengths == steps + 1)
                lengths[ended] = t + 1
                if np.all(lengths <= t + 1):
                    break  # after an end, gymnasium's next step would autoreset: nothing more to record
            actions.append(np.zeros_like(actions[-1]))
            rewards.append(np.zeros_like(rewards[-1]))
            stacked = {k: np.stack(v, axis=1) for k, v in frames.items()}
            stacked["action"] = np.stack(actions, axis=1)
            stacked["reward"] = np.stack(rewards, axis=1).astype(np.float32)
            for k in np.flatnonzero(wanted):
                episode = {key: value[k, : lengths[k]].copy() for key, value in stacked.items()}
                episode["action"][-1] = 0.0
                episode["reward"][-1] = 0.0
                yield episode
    finally:
        vec.close()
        local.close()
