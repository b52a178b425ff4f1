"""A policy toward goal images in the real env, judged by the env, beside the zero-action baseline on the same
start/goal pairs and, optionally, the same pairs inside its world model (judged by the success head).

`evaluate_policy` returns the JSON-ready results and the frames for the videos; `write_report` puts
`results.json`, videos (real | imagined | goal) and `summary.png` in a folder. `wm eval-policy` and `wm refine`
(BC and refined policy on the same pairs) both use them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from envs.registry import make_env, require_state_hooks
from policies.controller import PolicyController
from wm.device import module_device
from wm.errors import WMError
from wm.evaluation.closed_loop import run_goal_episodes, run_imagined_episodes
from wm.evaluation.media import summary_figure, write_episode_videos
from wm.evaluation.metrics import percentiles, wilson_interval
from wm.goals import dataset_goals, goal_store
from wm.imagine import ImaginedVectorEnv, StoreStarts


class ZeroActions:
    """The trivial baseline: a controller that never moves."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def reset(self, goal_obs: dict) -> None:
        self.batch = len(goal_obs["rgb"])

    def act(self, obs: dict) -> np.ndarray:
        return np.zeros((self.batch, self.action_dim), np.float32)


def rate(success: np.ndarray) -> dict:
    """`{"rate", "95ci" (Wilson), "n"}` of a boolean success array."""
    lo, hi = wilson_interval(int(success.sum()), len(success))
    return {"rate": float(success.mean()), "95ci": [round(lo, 3), round(hi, 3)], "n": len(success)}


def act_on_latents(policy, generator: torch.Generator):
    """`act(obs) -> (E, frameskip * A)` on the policy's device for imagined observations (a diffusion policy's
    noise from `generator`, on that device too)."""
    device = module_device(policy)

    def act(obs: dict) -> torch.Tensor:
        z_hist, z_goal = (torch.as_tensor(obs[k], device=device) for k in ("latents", "goal"))
        if policy.cfg.kind == "diffusion":
            return policy.act(z_hist, z_goal, generator=generator).flatten(1)
        return policy.act(z_hist, z_goal).flatten(1)

    return act


def held_out_problems(model, wm_config: dict, env_id: str, data, scratch, episodes: int, budget: int,
                      goal_offset: int, seed: int):  # fmt: skip
    """`(envs, pairs, goals)`: one unwrapped env per start/goal pair of held-out episodes, the starts at least a
    world-model history into their episode, pairs solved at the start redrawn; `goals` is `wm.goals.goal_store`'s
    account of their store (`data`, else the training store, else fresh episodes collected into `scratch`)."""
    trained_on = wm_config["data"]["spec"]["env"]["id"]
    if trained_on != env_id:
        raise WMError(f"the policy's world model was trained on {trained_on}, not {env_id}; pass --env {trained_on}")
    spec = model.spec
    envs = [make_env(env_id, spec["image_size"], budget + 1).unwrapped for _ in range(episodes)]
    require_state_hooks(envs[0], env_id, "policy evaluation")
    solved = envs[0].is_success if getattr(envs[0], "has_success", True) else None
    min_start = (spec["num_hist"] - 1) * spec["frameskip"]
    goals = goal_store(wm_config, data, scratch, episodes, goal_offset, seed, min_start)
    rng = np.random.default_rng(seed)
    pairs = dataset_goals(goals["store"], wm_config, episodes, goal_offset, rng, min_start, solved=solved)
    return envs, pairs, goals


def evaluate_policy(policy, model, envs, pairs, store, budget: int, goal_offset: int, imagined: bool = False,
                    seed: int = 0, stochastic: bool = False, goal_velocity: str = "rest", videos: int = 4,
                    zero=None):  # fmt: skip
    """`(results, media)`: the policy on `pairs` (from `wm.goals.dataset_goals` on `store`), one unwrapped env
    each, for exactly `budget` env steps; the zero-action baseline on the same pairs (`zero`: its episodes from an
    earlier call on the same pairs, `media["zero"]`, not run again); with `imagined`, the same pairs in `model`
    (the real history before each start, the same goal and number of blocks)."""
    started = time.time()
    spec = model.spec
    torch.manual_seed(seed)
    controller = PolicyController(policy, model, seed=seed, stochastic=stochastic)
    real = run_goal_episodes(envs, pairs, controller, budget, goal_velocity, videos, desc="policy")
    if zero is None:
        zero = run_goal_episodes(envs, pairs, ZeroActions(spec["env_action_dim"]), budget, goal_velocity, 0,
                                 desc="zero actions")  # fmt: skip
    results = {
        "policy_kind": policy.cfg.kind,
        "episodes": len(pairs),
        "budget": budget,
        "success_rate": float(real.success.mean()),
        "success_95ci": rate(real.success)["95ci"],
        "success_judged": real.judged,
        "zero_action_success": rate(zero.success),
        "final_distance": {"mean": float(real.distance.mean()), "median": float(np.median(real.distance))},
        "policy_latency_ms": percentiles(controller.latencies, 1000, 3),
    }
    dreamt = None
    if imagined:
        problems = [(p["source"]["episode"], p["source"]["t"], p["source"]["t"] + goal_offset) for p in pairs]
        velocity_dims = tuple(envs[0].proprio_velocity_dims) if goal_velocity == "rest" else ()
        starts = StoreStarts(model, store, pairs=problems, velocity_dims=velocity_dims)
        blocks = budget // spec["frameskip"]
        env = ImaginedVectorEnv(model, starts, len(pairs), horizon=blocks, history=policy.cfg.history,
                                reward="probability")  # fmt: skip
        generator = torch.Generator(module_device(policy)).manual_seed(seed)
        dreamt = run_imagined_episodes(env, act_on_latents(policy, generator), blocks, videos)
        results["imagined"] = {
            **rate(dreamt.success),
            "blocks": blocks,
            "agreement_with_real": float((dreamt.success == real.success).mean()),
            "gap": float(dreamt.success.mean() - real.success.mean()),
        }
    results["seconds"] = round(time.time() - started, 1)
    results["per_episode"] = [
        {
            "success": bool(real.success[i]),
            "distance": float(real.distance[i]),
            "zero_action_success": bool(zero.success[i]),
            **({"imagined_success": bool(dreamt.success[i])} if dreamt is not None else {}),
            **p["source"],
        }
        for i, p in enumerate(pairs)
    ]
    media = {"real": real, "zero": zero, "imagined": dreamt, "latencies": controller.latencies}
    return results, media


def write_report(out: Path, results: dict, media: dict, pairs: list[dict]) -> None:
    """`out/results.json`, `out/episode_<i>.mp4` (real | imagined | goal) and `out/summary.png`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    real, dreamt = media["real"], media["imagined"]
    n_vid = len(real.real_frames)
    imagined_frames = None
    if dreamt is not None and dreamt.frames is not None:
        imagined_frames = dreamt.frames[:n_vid, : real.real_frames.shape[1]]
    write_episode_videos(out, real.real_frames, imagined_frames, [p["goal_obs"]["rgb"] for p in pairs[:n_vid]])
    outcomes = {"real": (real.success, "tab:green"), "zero actions": (media["zero"].success, "tab:gray")}
    if dreamt is not None:
        outcomes["imagined"] = (dreamt.success, "tab:purple")
    summary_figure(out / "summary.png", outcomes, np.asarray(media["latencies"]) * 1000,
                   latency_label="policy call (ms)")  # fmt: skip
