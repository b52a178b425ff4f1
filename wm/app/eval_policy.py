"""`wm eval-policy`: a policy toward goal images in the real env, judged by the env, as `wm plan` judges MPC.

Goals are held-out states 25 env steps ahead (the world model's held-out episodes of its training store, or of
`--data`), starting at least a world-model history into their episode; pairs already solved at the start are
redrawn. Each episode runs exactly `--budget` env
steps; the env judges success. The same start/goal pairs run with zero actions (the trivial baseline) and, with
`--imagined`, inside the world model (`wm.imagine`: the same real history before the start, the same goal, the
same number of blocks, the success head as the judge): the gap between imagined and real success says how far
to trust refinement in imagination. Writes `results.json` (success rates with 95% Wilson intervals, distances,
per-episode outcomes, config), videos (real | imagined | goal) and `summary.png`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from wm.errors import WMError
from wm.evaluation.closed_loop import run_goal_episodes, run_imagined_episodes
from wm.evaluation.media import summary_figure, write_episode_videos
from wm.evaluation.metrics import percentiles, wilson_interval
from wm.goals import dataset_goals
from wm.outputs import require_empty_dir


@dataclass
class EvalPolicyConfig:
    policy: str
    env: str
    out: str
    episodes: int = 100
    budget: int = 50
    goal_offset: int = 25
    data: str | None = None  # goal store (default: the world model's training store)
    world_model: str | None = None  # default: the one the policy names
    imagined: bool = False
    stochastic: bool = False  # sample a Gaussian policy's actions instead of acting with its mean
    goal_velocity: str = "rest"
    seed: int = 0
    videos: int = 4


class ZeroActions:
    """The trivial baseline: a controller that never moves."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def reset(self, goal_obs: dict) -> None:
        self.batch = len(goal_obs["rgb"])

    def act(self, obs: dict) -> np.ndarray:
        return np.zeros((self.batch, self.action_dim), np.float32)


def rate(success: np.ndarray) -> dict:
    lo, hi = wilson_interval(int(success.sum()), len(success))
    return {"rate": float(success.mean()), "95ci": [round(lo, 3), round(hi, 3)], "n": len(success)}


def run_eval_policy(cfg: EvalPolicyConfig) -> dict:
    from envs.registry import is_builtin, make_env
    from policies.checkpoint import load_policy
    from policies.controller import PolicyController
    from wm.imagine import ImaginedVectorEnv, StoreStarts

    if not is_builtin(cfg.env):
        raise WMError(f"`wm eval-policy` needs a built-in env with exact state resets; {cfg.env!r} is not one")
    policy, config, model, wm_config = load_policy(cfg.policy, cfg.world_model)
    trained_on = wm_config["data"]["spec"]["env"]["id"]
    if trained_on != cfg.env:
        raise WMError(f"the policy's world model was trained on {trained_on}, not {cfg.env}; pass --env {trained_on}")
    if cfg.imagined and model.success_mode is None:
        raise WMError("--imagined needs a world model with a success head to judge imagined episodes")
    out = require_empty_dir(cfg.out, "results")
    torch.manual_seed(cfg.seed)
    spec = model.spec
    min_start = (spec["num_hist"] - 1) * spec["frameskip"]
    store = cfg.data or wm_config["data"]["store"]
    rng = np.random.default_rng(cfg.seed)
    envs = [make_env(cfg.env, spec["image_size"], cfg.budget + 1).unwrapped for _ in range(cfg.episodes)]
    pairs = dataset_goals(store, wm_config, cfg.episodes, cfg.goal_offset, rng, min_start, solved=envs[0].is_success)
    started = time.time()
    controller = PolicyController(policy, model, seed=cfg.seed, stochastic=cfg.stochastic)
    real = run_goal_episodes(envs, pairs, controller, cfg.budget, cfg.goal_velocity, cfg.videos, desc="policy")
    zero = run_goal_episodes(envs, pairs, ZeroActions(spec["env_action_dim"]), cfg.budget, cfg.goal_velocity, 0,
                             desc="zero actions")  # fmt: skip
    results = {
        "env": cfg.env,
        "policy": cfg.policy,
        "policy_kind": config["policy"]["kind"],
        "world_model": config["world_model"],
        "episodes": cfg.episodes,
        "budget": cfg.budget,
        "success_rate": float(real.success.mean()),
        "success_95ci": rate(real.success)["95ci"],
        "zero_action_success": rate(zero.success),
        "final_distance": {"mean": float(real.distance.mean()), "median": float(np.median(real.distance))},
        "policy_latency_ms": percentiles(controller.latencies, 1000, 3),
    }
    imagined = None
    if cfg.imagined:
        problems = [(p["source"]["episode"], p["source"]["t"], p["source"]["t"] + cfg.goal_offset) for p in pairs]
        velocity_dims = tuple(envs[0].proprio_velocity_dims) if cfg.goal_velocity == "rest" else ()
        starts = StoreStarts(model, store, pairs=problems, velocity_dims=velocity_dims)
        blocks = cfg.budget // spec["frameskip"]
        env = ImaginedVectorEnv(model, starts, len(pairs), horizon=blocks, history=policy.cfg.history,
                                reward="probability")  # fmt: skip
        generator = torch.Generator().manual_seed(cfg.seed)
        imagined = run_imagined_episodes(env, lambda o: _act(policy, o, generator), blocks, cfg.videos)
        agree = imagined.success == real.success
        results["imagined"] = {
            **rate(imagined.success),
            "blocks": blocks,
            "agreement_with_real": float(agree.mean()),
            "gap": float(imagined.success.mean() - real.success.mean()),
        }
    results["seconds"] = round(time.time() - started, 1)
    results["per_episode"] = [
        {
            "success": bool(real.success[i]),
            "distance": float(real.distance[i]),
            "zero_action_success": bool(zero.success[i]),
            **({"imagined_success": bool(imagined.success[i])} if imagined is not None else {}),
            **p["source"],
        }
        for i, p in enumerate(pairs)
    ]
    results["config"] = asdict(cfg)
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that failed leaves nothing behind
    (Path(out) / "results.json").write_text(json.dumps(results, indent=2))
    n_vid = len(real.real_frames)
    dreamt = None
    if imagined is not None and imagined.frames is not None:
        dreamt = imagined.frames[:n_vid, : real.real_frames.shape[1]]
    write_episode_videos(out, real.real_frames, dreamt, [p["goal_obs"]["rgb"] for p in pairs[:n_vid]])
    outcomes = {"real": (real.success, "tab:green"), "zero actions": (zero.success, "tab:gray")}
    if imagined is not None:
        outcomes["imagined"] = (imagined.success, "tab:purple")
    summary_figure(out / "summary.png", outcomes, np.asarray(controller.latencies) * 1000,
                   latency_label="policy call (ms)")  # fmt: skip
    for e in envs:
        e.close()
    return results


def _act(policy, obs: dict, generator: torch.Generator) -> torch.Tensor:
    """The policy's blocks `(E, frameskip * A)` for imagined observations (a diffusion policy's noise from
    `generator`, a Gaussian policy's mean)."""
    z_hist, z_goal = torch.as_tensor(obs["latents"]), torch.as_tensor(obs["goal"])
    if policy.cfg.kind == "diffusion":
        return policy.act(z_hist, z_goal, generator=generator).flatten(1)
    return policy.act(z_hist, z_goal).flatten(1)
