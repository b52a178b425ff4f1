"""Benchmark the built-in envs: render ms/frame, step ms (physics + render) and collection frames/s.

Prints one JSON object. Usage: python scripts/bench_envs.py [--frames 500] [--episodes 20] [--sizes 64 224]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

import envs
from envs.registry import make_env
from wm.data.collection import CollectConfig, run_collect


def bench_render(env_id: str, size: int, frames: int) -> dict:
    env = make_env(env_id, size)
    env.reset(seed=0)
    base = env.unwrapped
    base.render()  # context creation is not part of the steady state
    t = time.perf_counter()
    for _ in range(frames):
        base.render()
    render_ms = (time.perf_counter() - t) / frames * 1e3
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(frames):
        env.step(rng.uniform(-1, 1, base.action_dim).astype(np.float32))
    step_ms = (time.perf_counter() - t) / frames * 1e3
    env.close()
    return {"render_ms_per_frame": round(render_ms, 3), "step_ms_with_render": round(step_ms, 3)}


def bench_collect(env_id: str, episodes: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectConfig(env=env_id, episodes=episodes, out=f"{tmp}/store", workers=workers)
        summary = run_collect(cfg)
    return {
        "workers": workers,
        "episodes": episodes,
        "frames_per_second": summary["frames_per_second"],
        "seconds": summary["seconds"],
        "expert_goals_reached_per_episode": summary["goals_reached_per_episode"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
        },
        "envs": {},
    }
    for env_id in envs.BUILTIN:
        row = {f"{size}px": bench_render(env_id, size, args.frames) for size in args.sizes}
        row["collect"] = [bench_collect(env_id, args.episodes, w) for w in args.workers]
        result["envs"][env_id] = row
    result["machine"]["mujoco_gl"] = os.environ.get("MUJOCO_GL")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
