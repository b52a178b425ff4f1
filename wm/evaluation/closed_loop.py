"""Closed-loop goal-reaching episodes in real envs, judged by the env after a fixed step budget.

Every episode runs in its own env, all in lockstep, so one controller call acts for the whole batch. The
controller (`reset(goal_obs (B, ...))`, `act(obs (B, ...)) -> (B, A)`) sees only observations and the goal
observations; after exactly `budget` steps each env judges success against its goal state. Nothing stops early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from wm.goals import goal_batch


@dataclass
class GoalEpisodes:
    """Outcome of a batch of goal-reaching episodes."""

    success: np.ndarray  # (B,) bool, judged by the env (all False where it has no success test)
    distance: np.ndarray  # (B,) the env's goal distance at the end
    judged: bool  # whether the env judged success (an adapted env without an is_success hook does not)
    real_frames: np.ndarray  # (n, T, H, W, 3) uint8, the first n episodes' observations
    imagined_frames: np.ndarray | None  # (n, T, H, W, 3) uint8, what the controller imagined, where it says


def decoded_plan(model, controller) -> Callable[[int], np.ndarray | None]:
    """For MPC: the next block as the current plan imagines it, decoded, `(n, H, W, 3)` uint8 (None without one)."""

    def frames(n: int) -> np.ndarray | None:
        if not model.can_decode or controller.last_plan_latents is None:
            return None
        with torch.no_grad():
            imagined = model.decode(controller.last_plan_latents[:n, 0])
        return (imagined.clamp(0, 1) * 255).byte().cpu().numpy()

    return frames


def run_goal_episodes(
    envs: list,
    pairs: list[dict],
    controller,
    budget: int,
    goal_velocity: str = "rest",
    videos: int = 4,
    imagined: Callable[[int], np.ndarray | None] | None = None,
    desc: str = "episodes",
) -> GoalEpisodes:
    """Run `len(pairs)` episodes (env i from `pairs[i]["start"]` toward `pairs[i]["goal"]`) for `budget` steps.

    `envs` are unwrapped envs with state hooks (`reset(options={"state", "goal"})`, `get_state`, `is_success`,
    `goal_distance`, `proprio_velocity_dims`: the built-ins, `GymImageAdapter`), one per pair; `imagined(n)` gives the
    controller's imagined frames for the first n episodes after each action (for the videos)."""
    obs_list = [
        env.reset(options={"state": p["start"], "goal": p["goal"]})[0] for env, p in zip(envs, pairs, strict=True)
    ]
    controller.reset(goal_batch(pairs, goal_velocity, envs[0].proprio_velocity_dims))
    n_vid = min(videos, len(pairs))
    real, dreamt = [], []
    for _ in tqdm(range(budget), desc=desc, unit="step"):
        obs = {k: np.stack([o[k] for o in obs_list]) for k in ("rgb", "proprio")}
        actions = controller.act(obs)
        actions = actions.cpu().numpy() if torch.is_tensor(actions) else np.asarray(actions)
        real.append(obs["rgb"][:n_vid])
        frames = imagined(n_vid) if imagined is not None else None
        if frames is not None:
            dreamt.append(frames)
        obs_list = [env.step(a)[0] for env, a in zip(envs, actions, strict=True)]
    states = [env.get_state() for env in envs]
    judged = getattr(envs[0], "has_success", True)
    success = np.array(
        [judged and env.is_success(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)], bool
    )
    distance = np.array([env.goal_distance(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)])
    return GoalEpisodes(
        success=success,
        distance=distance,
        judged=judged,
        real_frames=np.stack(real, axis=1),
        imagined_frames=np.stack(dreamt, axis=1) if dreamt else None,
    )


@dataclass
class ImaginedEpisodes:
    """Outcome of a batch of goal-reaching episodes imagined by a world model."""

    success: np.ndarray  # (B,) bool: the success head's verdict on the last imagined frame
    success_prob: np.ndarray  # (B,)
    frames: np.ndarray | None  # (n, T, H, W, 3) uint8 decoded imagined frames (each block repeated frameskip times)


@torch.no_grad()
def run_imagined_episodes(env, act: Callable[[dict], torch.Tensor], blocks: int, videos: int = 4) -> ImaginedEpisodes:
    """Run every env of an `ImaginedVectorEnv` for exactly `blocks` world-model blocks with `act(obs) ->
    (num_envs, frameskip * A)`, and judge the last imagined frames with the success head (as the real env judges
    its last state). The env should have `horizon >= blocks` and `reward="probability"` (no early ends)."""
    obs, _ = env.reset()
    n_vid = min(videos, env.num_envs)
    frames = [env.render()[:n_vid]] if env.model.can_decode else None
    info = {}
    for _ in tqdm(range(blocks), desc="imagine", unit="block"):
        obs, _, _, _, info = env.step(act(obs))
        if frames is not None:
            frames.append(env.render()[:n_vid])
    fs = env.model.spec["frameskip"]
    clip = np.repeat(np.stack(frames[:-1], axis=1), fs, axis=1) if frames is not None else None
    return ImaginedEpisodes(success=info["success"], success_prob=info["success_prob"], frames=clip)
