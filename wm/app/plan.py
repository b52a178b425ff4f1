"""`wm plan`: zero-shot MPC from goal images with a world model, judged honestly by the environment.

Goals (`--goal-source`):
  dataset  start at the state of a held-out episode at time t; the goal is the observation at t + offset (the
           stable-worldmodel protocol: goal 25 env steps ahead, 50-step budget by default); where neither `--data`
           nor the checkpoint's training store is on this machine (a shipped checkpoint on a fresh clone), from
           expert episodes collected for the run into `OUT/goal_store`, all held out (`wm.goals.goal_store`);
  random   a random start (env reset) and a random goal state drawn by the env.
Pairs already solved at their start (by the env's success test) are redrawn, and the same pairs run with zero actions:
`results.json` reports that trivial baseline beside the planner's success.
Goal velocity (`--goal-velocity`): a goal image shows where the agent should be, not how fast it should move, so
by default the goal's proprio velocities (the env's `proprio_velocity_dims`) are set to zero: the planner is asked
to arrive and stay. `observed` keeps the velocity recorded at the goal frame (DINO-WM's goals), which asks the agent
to pass through the goal at that speed rather than stop there.
All episodes run in one batch: one planner call plans for every episode at once. The controller sees only observations
and the goal observation; after exactly `--budget` env steps the env judges success. Any env with state hooks works
(built-in, `module:factory`, entry point, gymnasium MuJoCo id); one without a success test (`GymImageAdapter` without
`is_success`) gets goal distances only, and `results.json` says success was not judged. Writes `results.json` (success
rate with a 95% Wilson interval, final distances, replan latency p50/p95, config), videos of the first episodes (real |
imagined plan | goal) and a plot of success and latency. The model and the planner run on `--device` (auto: CUDA when
there is one); `--checkpoint` is a checkpoint or a `wm train --out` folder. MPC settings not given explicitly come
from the checkpoint's planning preset (its config's `"plan"`), else the `MPCConfig` defaults.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from planners.mpc import MPCConfig, build_mpc, with_preset
from policies.evaluation import ZeroActions, rate
from wm.errors import WMError
from wm.evaluation.closed_loop import decoded_plan, run_goal_episodes
from wm.evaluation.media import summary_figure, write_episode_videos
from wm.evaluation.metrics import percentiles, wilson_interval
from wm.goals import dataset_goals, goal_store, random_goals
from wm.outputs import require_empty_dir


@dataclass
class PlanConfig:
    checkpoint: str
    env: str
    episodes: int = 50
    goal_source: str = "dataset"
    budget: int = 50  # env steps
    goal_offset: int = 25  # env steps between start and goal (dataset goals)
    data: str | None = None  # store for dataset goals (default: the checkpoint's training store, else fresh ones)
    out: str = "runs/plan"
    seed: int = 0
    goal_velocity: str = "rest"  # "rest": zero the goal's proprio velocities; "observed": keep them
    videos: int = 4
    device: str = "auto"  # auto | cpu | cuda[:K]
    mpc: MPCConfig = field(default_factory=MPCConfig)  # settings left None: the checkpoint's preset, else defaults

    def to_json(self) -> dict:
        """The config as the flags give it: one flat dict (the MPC settings beside the others)."""
        top = {k: v for k, v in asdict(self).items() if k != "mpc"}
        return {**top, **asdict(self.mpc)}


def run_plan(cfg: PlanConfig) -> dict:
    from envs.registry import make_env, require_state_hooks
    from wm.device import resolve_device
    from wm.models.checkpoint import load_checkpoint

    if cfg.goal_source not in ("dataset", "random"):
        raise WMError(f"--goal-source must be dataset or random, got {cfg.goal_source!r}")
    if cfg.goal_velocity not in ("rest", "observed"):
        raise WMError(f"--goal-velocity must be rest or observed, got {cfg.goal_velocity!r}")
    device = resolve_device(cfg.device)
    model, config = load_checkpoint(cfg.checkpoint, device)
    trained_on = config["data"]["spec"]["env"]["id"]
    if trained_on != cfg.env:
        raise WMError(f"the checkpoint was trained on {trained_on}, not {cfg.env}; pass --env {trained_on}")
    out = Path(cfg.out)
    require_empty_dir(out, "results")
    torch.manual_seed(cfg.seed)
    envs = [make_env(cfg.env, model.spec["image_size"], cfg.budget + 1).unwrapped for _ in range(cfg.episodes)]
    require_state_hooks(envs[0], cfg.env, "`wm plan`")
    if cfg.goal_source == "random" and not hasattr(envs[0], "sample_goal"):
        raise WMError(f"{cfg.env!r} cannot draw random goals (no sample_goal); use --goal-source dataset")
    preset = config.get("plan", {})
    cfg = replace(cfg, mpc=with_preset(cfg.mpc, preset))
    controller = build_mpc(model, cfg.mpc, seed=cfg.seed, device=device)
    rng = np.random.default_rng(cfg.seed)
    goals = {"source": "random"}
    if cfg.goal_source == "dataset":  # fresh goals are collected into out/goal_store, only now
        goals = goal_store(config, cfg.data, out / "goal_store", cfg.episodes, cfg.goal_offset, cfg.seed)
        solved = envs[0].is_success if getattr(envs[0], "has_success", True) else None
        pairs = dataset_goals(goals["store"], config, cfg.episodes, cfg.goal_offset, rng, solved=solved)
    else:
        pairs = random_goals(envs[0], cfg.episodes, rng)
    out.mkdir(parents=True, exist_ok=True)  # only once every setting has been accepted
    started = time.time()
    outcome = run_goal_episodes(
        envs,
        pairs,
        controller,
        cfg.budget,
        cfg.goal_velocity,
        videos=cfg.videos,
        imagined=decoded_plan(model, controller),
        desc=f"plan {cfg.mpc.planner}",
    )
    zero = run_goal_episodes(envs, pairs, ZeroActions(model.spec["env_action_dim"]), cfg.budget, cfg.goal_velocity,
                             videos=0, desc="zero actions")  # fmt: skip
    success, distance, lat = outcome.success, outcome.distance, np.array(controller.latencies)
    lo, hi = wilson_interval(int(success.sum()), len(success))
    results = {
        "env": cfg.env,
        "planner": cfg.mpc.planner,
        "episodes": cfg.episodes,
        "success_rate": float(success.mean()) if outcome.judged else None,
        "success_95ci": [round(lo, 3), round(hi, 3)] if outcome.judged else None,
        "success_judged": outcome.judged,
        "zero_action_success": rate(zero.success) if outcome.judged else None,
        "final_distance": {"mean": float(distance.mean()), "median": float(np.median(distance))},
        "replan_latency_s": percentiles(lat),
        "problems_per_replan": cfg.episodes,
        "seconds": round(time.time() - started, 1),
        "per_episode": [
            {
                "success": bool(s) if outcome.judged else None,
                "distance": float(d),
                "zero_action_distance": float(z),
                **p["source"],
            }
            for s, d, z, p in zip(success, distance, zero.distance, pairs, strict=True)
        ],
        "goals": goals,
        "config": {**cfg.to_json(), "plan_preset": preset},
        "checkpoint_step": config.get("step"),
    }
    if not outcome.judged:
        results["note"] = f"{cfg.env} has no is_success hook: success was not judged; see final_distance"
    (out / "results.json").write_text(json.dumps(results, indent=2))
    n_vid = len(outcome.real_frames)
    write_episode_videos(
        out, outcome.real_frames, outcome.imagined_frames, [p["goal_obs"]["rgb"] for p in pairs[:n_vid]]
    )
    label = "success" if outcome.judged else "success (not judged)"
    summary_figure(out / "summary.png", {label: (success, "tab:green")}, lat * 1000, latency_label="replan (ms)")
    for env in envs:
        env.close()
    return results
