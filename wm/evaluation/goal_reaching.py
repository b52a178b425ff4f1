"""Goal reaching, evaluated one way for every controller: `wm plan`, `wm eval-policy`, `wm refine --eval-env`,
`wm demo` and the benchmark scripts all run it.

1. Problems (`held_out_problems`, `random_problems`): start/goal pairs (`wm.goals`) from episodes the model never
   trained on, each goal `goal_offset` env steps after its start, pairs already solved at the start redrawn; one
   unwrapped env with state hooks per pair.
2. Runs (`run_controller`): any `Controller` (`envs.controller`: MPC, a policy, zero or random actions) drives all
   problems in lockstep for exactly `budget` env steps, seeing only observations and the goal observations; then each
   env judges success against its goal state. Nothing stops early. `run_imagined` runs the same problems inside the
   world model, judged by its success head.
3. The report (`goal_report`, `write_report`): success with a 95% Wilson interval beside the zero-action baseline on
   the same pairs, final goal distances, decision latency, per-episode outcomes, where the goals came from;
   `results.json`, videos (real | imagined | goal) and `summary.png`.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.controller import Controller, ZeroActions
from envs.registry import make_env, require_state_hooks
from wm import threads
from wm.errors import WMError
from wm.evaluation.media import summary_figure, write_episode_videos
from wm.evaluation.metrics import percentiles, rate
from wm.evaluation.recording import EpisodeRecorder
from wm.goals import dataset_goals, goal_batch, goal_store, random_goals
from wm.models.checkpoint_config import TrainedOn
from wm.models.protocol import ModelSpec


@dataclass
class Problems:
    """Goal-reaching problems: one env per start/goal pair, run for `budget` env steps."""

    env_id: str
    envs: list  # unwrapped envs with state hooks, one per pair
    pairs: list[dict]  # `wm.goals` pairs
    goals: dict  # where the pairs came from (`wm.goals.goal_store`'s account, or {"source": "random"})
    budget: int
    goal_velocity: str = "rest"  # "rest": the goal's proprio velocities zeroed; "observed": as recorded

    @property
    def judged(self) -> bool:
        """Whether the env judges success (an adapted env without an `is_success` hook does not)."""
        return getattr(self.envs[0], "has_success", True)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _envs(env_id: str, spec: ModelSpec, count: int, budget: int, what: str) -> list:
    envs = [make_env(env_id, spec.image_size, budget + 1).unwrapped for _ in range(count)]
    require_state_hooks(envs[0], env_id, what)
    return envs


def held_out_problems(spec: ModelSpec, trained_on: TrainedOn, env_id: str, *, episodes: int, budget: int,
                      goal_offset: int, seed: int, data=None, scratch=None, goal_velocity: str = "rest",
                      what: str = "goal-reaching evaluation") -> Problems:  # fmt: skip
    """`episodes` problems from held-out episodes of `data` (else the training store, else fresh expert episodes
    collected into `scratch`: `wm.goals.goal_store`), drawn with `seed`. Each start is at least a full model history
    (`spec.history_steps`) into its episode, room for the real frames an imagined run starts from: the same store
    and seed give the same pairs for every controller (MPC, a policy, guided MPC), so they compare."""
    trained_on.require_env(env_id)
    min_start = spec.history_steps
    envs = _envs(env_id, spec, episodes, budget, what)
    solved = envs[0].is_success if getattr(envs[0], "has_success", True) else None
    goals = goal_store(trained_on, data, scratch, episodes, goal_offset, seed, min_start)
    rng = np.random.default_rng(seed)
    pairs = dataset_goals(goals["store"], trained_on, episodes, goal_offset, rng, min_start, solved=solved)
    return Problems(env_id, envs, pairs, goals, budget, goal_velocity)


def random_problems(spec: ModelSpec, trained_on: TrainedOn, env_id: str, *, episodes: int, budget: int, seed: int,
                    goal_velocity: str = "rest") -> Problems:  # fmt: skip
    """`episodes` problems of a random start (an env reset) and a random goal state drawn by the env."""
    trained_on.require_env(env_id)
    envs = _envs(env_id, spec, episodes, budget, "random goals")
    if not hasattr(envs[0], "sample_goal"):
        raise WMError(f"{env_id!r} cannot draw random goals (no sample_goal); use --goal-source dataset")
    pairs = random_goals(envs[0], episodes, np.random.default_rng(seed))
    return Problems(env_id, envs, pairs, {"source": "random"}, budget, goal_velocity)


@dataclass
class GoalEpisodes:
    """Outcome of a batch of goal-reaching episodes."""

    success: np.ndarray  # (B,) bool, judged by the env (all False where it has no success test)
    distance: np.ndarray  # (B,) the env's goal distance at the end
    judged: bool
    real_frames: np.ndarray  # (n, T, H, W, 3) uint8, the first n episodes' observations
    imagined_frames: np.ndarray | None  # (n, T, H, W, 3) uint8, what the controller imagined, where it says
    latencies: list[float]  # seconds of each decision of the controller


def decoded_plan(model, controller) -> Callable[[int], np.ndarray | None]:
    """For MPC: the next block as the current plan imagines it, decoded, `(n, H, W, 3)` uint8 (None without one)."""

    def frames(n: int) -> np.ndarray | None:
        if not model.can_decode or controller.last_plan_latents is None:
            return None
        with torch.no_grad():
            imagined = model.decode(controller.last_plan_latents[:n, 0])
        return (imagined.clamp(0, 1) * 255).byte().cpu().numpy()

    return frames


def run_controller(problems: Problems, controller: Controller, desc: str = "episodes", videos: int = 4,
                   imagined: Callable[[int], np.ndarray | None] | None = None,
                   recorder: EpisodeRecorder | None = None) -> GoalEpisodes:  # fmt: skip
    """Run every problem for exactly `problems.budget` env steps with `controller`; `imagined(n)` gives the
    controller's imagined frames of the first n episodes after each decision (for the videos); `recorder` keeps
    every frame of every episode (`wm.evaluation.recording`)."""
    envs, pairs = problems.envs, problems.pairs
    resets = [env.reset(options={"state": p["start"], "goal": p["goal"]}) for env, p in zip(envs, pairs, strict=True)]
    obs_list = [r[0] for r in resets]
    goals = [p["goal"] for p in pairs]
    if recorder is not None:
        recorder.observed(obs_list, [r[1] for r in resets], goals)
    controller.reset(goal_batch(pairs, problems.goal_velocity, envs[0].proprio_velocity_dims))
    n_vid = min(videos, len(pairs))
    real, dreamt, queue, frames = [], [], [], None
    for t in tqdm(range(problems.budget), desc=desc, unit="step"):
        obs = {k: np.stack([o[k] for o in obs_list]) for k in ("rgb", "proprio")}
        if not queue:
            chunk = controller.act({**obs, "step": t})  # (B, K, A)
            chunk = chunk.cpu().numpy() if torch.is_tensor(chunk) else np.asarray(chunk)
            queue = list(chunk.swapaxes(0, 1))
            frames = imagined(n_vid) if imagined is not None else None
        actions = queue.pop(0)  # (B, A)
        real.append(obs["rgb"][:n_vid])
        if frames is not None:
            dreamt.append(frames)
        steps = [env.step(a) for env, a in zip(envs, actions, strict=True)]
        obs_list = [r[0] for r in steps]
        if recorder is not None:
            recorder.stepped(actions, [r[1] for r in steps])
            recorder.observed(obs_list, [r[4] for r in steps], goals)
        controller.executed(t, obs, actions)
        threads.tick()
    states = [env.get_state() for env in envs]
    judged = problems.judged
    success = np.array(
        [judged and env.is_success(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)], bool
    )
    distance = np.array([env.goal_distance(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)])
    return GoalEpisodes(success, distance, judged, np.stack(real, axis=1),
                        np.stack(dreamt, axis=1) if dreamt else None, list(controller.latencies))  # fmt: skip


def run_zero_actions(problems: Problems, action_dim: int) -> GoalEpisodes:
    """The trivial baseline on the same problems."""
    return run_controller(problems, ZeroActions(action_dim), desc="zero actions", videos=0)


@dataclass
class ImaginedEpisodes:
    """Outcome of a batch of goal-reaching episodes imagined by a world model."""

    success: np.ndarray  # (B,) bool: the success head's verdict on the last imagined frame
    success_prob: np.ndarray  # (B,)
    frames: np.ndarray | None  # (n, T, H, W, 3) uint8 decoded imagined frames (each block repeated frameskip times)
    blocks: int  # world-model blocks imagined per episode


@torch.no_grad()
def run_imagined(problems: Problems, model, store, act: Callable[[dict], torch.Tensor], history: int,
                 goal_offset: int, videos: int = 4) -> ImaginedEpisodes:  # fmt: skip
    """The same problems inside `model` (`wm.imagine`): the real history before each start from `store` (where the
    pairs came from), the same goal, `budget // frameskip` blocks of `act(obs) -> (num_envs, frameskip * A)` on
    latent observations (`history` frames), judged by the success head on the last imagined frames."""
    from wm.imagine import ImaginedVectorEnv, StoreStarts

    pairs = [(p["source"]["episode"], p["source"]["t"], p["source"]["t"] + goal_offset) for p in problems.pairs]
    velocity_dims = tuple(problems.envs[0].proprio_velocity_dims) if problems.goal_velocity == "rest" else ()
    starts = StoreStarts(model, store, pairs=pairs, velocity_dims=velocity_dims)
    blocks = problems.budget // model.spec.frameskip
    env = ImaginedVectorEnv(model, starts, len(pairs), horizon=blocks, history=history, reward="probability")
    obs, _ = env.reset()
    n_vid = min(videos, env.num_envs)
    frames = [env.render()[:n_vid]] if model.can_decode else None
    info = {}
    for _ in tqdm(range(blocks), desc="imagine", unit="block"):
        obs, _, _, _, info = env.step(act(obs))
        if frames is not None:
            frames.append(env.render()[:n_vid])
    clip = np.repeat(np.stack(frames[:-1], axis=1), model.spec.frameskip, axis=1) if frames is not None else None
    return ImaginedEpisodes(info["success"], info["success_prob"], clip, blocks)


def goal_report(problems: Problems, run: GoalEpisodes, zero: GoalEpisodes, dreamt: ImaginedEpisodes | None = None,
                started: float | None = None) -> dict:  # fmt: skip
    """The JSON-ready results every goal-reaching command writes (callers add who ran and their config)."""
    judged = run.judged
    results = {
        "env": problems.env_id,
        "episodes": len(problems.pairs),
        "budget": problems.budget,
        "success_rate": float(run.success.mean()) if judged else None,
        "success_95ci": rate(run.success)["95ci"] if judged else None,
        "success_judged": judged,
        "zero_action_success": rate(zero.success) if judged else None,
        "final_distance": {"mean": float(run.distance.mean()), "median": float(np.median(run.distance))},
        "decision_latency_ms": percentiles(run.latencies, 1000, 3),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # resident, this process
    }
    if dreamt is not None:
        results["imagined"] = {
            **rate(dreamt.success),
            "blocks": dreamt.blocks,
            "agreement_with_real": float((dreamt.success == run.success).mean()),
            "gap": float(dreamt.success.mean() - run.success.mean()),
        }
    if started is not None:
        results["seconds"] = round(time.time() - started, 1)
    results["per_episode"] = [
        {
            "success": bool(run.success[i]) if judged else None,
            "distance": float(run.distance[i]),
            "zero_action_success": bool(zero.success[i]) if judged else None,
            "zero_action_distance": float(zero.distance[i]),
            **({"imagined_success": bool(dreamt.success[i])} if dreamt is not None else {}),
            **p["source"],
        }
        for i, p in enumerate(problems.pairs)
    ]
    results["goals"] = problems.goals
    if not judged:
        results["note"] = f"{problems.env_id} has no is_success hook: success was not judged; see final_distance"
    return results


def write_report(out: Path, results: dict, problems: Problems, run: GoalEpisodes, zero: GoalEpisodes,
                 dreamt: ImaginedEpisodes | None = None, latency_label: str = "decision (ms)") -> None:  # fmt: skip
    """`out/results.json`, `out/episode_<i>.mp4` (real | imagined | goal) and `out/summary.png` (success of the
    controller, the zero-action baseline and the imagined runs; decision latency)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    n_vid = len(run.real_frames)
    imagined = run.imagined_frames
    if dreamt is not None and dreamt.frames is not None:
        imagined = dreamt.frames[:n_vid, : run.real_frames.shape[1]]
    write_episode_videos(out, run.real_frames, imagined, [p["goal_obs"]["rgb"] for p in problems.pairs[:n_vid]])
    label = "success" if run.judged else "success (not judged)"
    outcomes = {label: (run.success, "tab:green"), "zero actions": (zero.success, "tab:gray")}
    if dreamt is not None:
        outcomes["imagined"] = (dreamt.success, "tab:purple")
    summary_figure(out / "summary.png", outcomes, np.asarray(run.latencies) * 1000, latency_label=latency_label)
