"""Benchmark: the README's Python quick start on an external env (`--env`, a `module:factory` or any `--env` id).

Collects smooth random-action episodes (AR(1) actions: the agent travels and runs into things), trains a JEPA world
model for at most `--train-minutes`, runs `wm plan` (iCEM) toward 50 held-out goals 25 steps ahead in a 50-step
budget, then zero actions and uniform random actions on the same start/goal pairs (`wm plan`'s: same seed, same
store, pairs solved at the start redrawn). Prints JSON: success rates with 95% intervals, final goal distances,
seconds per stage. The default env is the quick start's, gymnasium-robotics' PointMaze (`envs.robotics_maze`);
`--env envs.reacher:make_reacher` runs gymnasium's Reacher-v5. `--render-only` instead times one frame of
Reacher-v5 as gymnasium draws it (480 px, shadows) and as the adapter draws it (64 px, no shadows).

    python scripts/bench_external_env.py --out runs/bench_maze
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.controller import RandomController
from envs.reacher import make_reacher
from wm.app.api import collect, plan, train
from wm.evaluation.goal_reaching import held_out_problems, run_controller
from wm.evaluation.metrics import rate
from wm.models.checkpoint import load_checkpoint

QUICK_START_ENV = "envs.robotics_maze:make_point_maze"
BUDGET, GOAL_OFFSET = 50, 25


def frame_ms(adapter, frames: int = 50) -> float:
    adapter.reset(seed=0)
    adapter.render()
    started = time.perf_counter()
    for _ in range(frames):
        adapter.render()
    return round((time.perf_counter() - started) / frames * 1000, 2)


def render_costs() -> dict:
    from envs.adapter import GymImageAdapter

    return {
        "gymnasium_480px_shadows_ms": frame_ms(GymImageAdapter("Reacher-v5", 480)),
        "adapter_480px_shadows_ms": frame_ms(GymImageAdapter("Reacher-v5", 480, render_size=480, shadows=True)),
        "adapter_64px_no_shadows_ms": frame_ms(make_reacher(64)),
        "gymnasium_480px_resized_to_64px_ms": frame_ms(GymImageAdapter("Reacher-v5", 64)),
    }


def random_baseline(env: str, checkpoint: str, episodes: int, seed: int) -> dict:
    """Uniform random actions on the start/goal pairs `wm plan` drew (same seed, same store, same redraws); `wm plan`
    runs the zero-action baseline on them itself."""
    model, config = load_checkpoint(checkpoint, "cpu")
    problems = held_out_problems(model.spec, config.trained_on, env, episodes=episodes, budget=BUDGET,
                                 goal_offset=GOAL_OFFSET, seed=seed)  # fmt: skip
    dims = problems.envs[0].action_space.shape[0]
    controller = RandomController(-np.ones(dims), np.ones(dims), chunk=1, seed=seed)  # one draw per env and step
    run = run_controller(problems, controller, desc="random actions", videos=0)
    return {**rate(run.success), "median_distance_m": round(float(np.median(run.distance)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=QUICK_START_ENV)
    parser.add_argument("--out", default="runs/bench_maze")
    parser.add_argument("--episodes", type=int, default=300, help="collected episodes (of the env's length)")
    parser.add_argument("--train-minutes", type=float, default=10.0, help="the quick start's time_limit_s=600")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.render_only:
        print(json.dumps(render_costs(), indent=2))
        return
    out, seconds = Path(args.out), {}
    started = time.time()
    # --- the README's quick start, with the benchmark's sizes ---
    store = collect(args.env, str(out / "data"), episodes=args.episodes, workers=2)
    seconds["collect"] = round(time.time() - started, 1)
    checkpoint = train(store, str(out / "wm"), steps=20000, time_limit_s=int(args.train_minutes * 60))
    seconds["train"] = round(time.time() - started - sum(seconds.values()), 1)
    results = plan(checkpoint, args.env, str(out / "plan"), episodes=50, planner="icem")
    seconds["plan"] = round(time.time() - started - sum(seconds.values()), 1)
    report = {
        "env": args.env,
        "episodes_collected": args.episodes,
        "mpc": {
            "success_rate": results["success_rate"],
            "95ci": results["success_95ci"],
            "median_distance_m": round(results["final_distance"]["median"], 4),
            "replan_ms": results["decision_latency_ms"],
        },
        "zero_actions": {
            **results["zero_action_success"],
            "median_distance_m": round(
                float(np.median([e["zero_action_distance"] for e in results["per_episode"]])), 4
            ),
        },
        "random_actions": random_baseline(args.env, checkpoint, 50, 0),
        "seconds": {**seconds, "total": round(time.time() - started, 1)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
