"""Benchmark imagination and policies on this machine; prints one JSON object.

- `imagined_env`: env blocks per second of `ImaginedVectorEnv` stepped with random actions (autoreset on, horizon
  10, reward from the success head) at each `--num-envs`, for the shipped JEPA (PointMaze, 1 token per frame) and
  the default pixel diffusion model (64 px, 3 Euler steps; random weights: the cost is the same as trained ones).
  One imagined step is one world-model block (`frameskip` = 5 env steps); `env_steps_per_s` counts those.
- `policy`: blocks per second of `act()` at batch 256 for a Gaussian and a diffusion policy (8 DDIM steps) on the
  JEPA's latents, and env actions per second (x frameskip).

Threads: `--threads N` pins N torch threads for the run; `--threads auto` lets the engine's own budget choose
(`wm.threads`: the free CPUs, as every `wm` command does). `--busy K` starts K busy processes (a Python loop each)
beside the run, to measure it on a loaded machine; the report says the threads used and the load.

`--bf16` imagines under bfloat16 autocast, `--compile` compiles the JEPA's step (`ImaginedVectorEnv`'s switches;
the diffusion model runs with bf16 only); `warmup_s` is the time of the JEPA's first 200 steps (the diffusion
model's first 2), which includes compiling and building bf16 kernels for each row count; the rates are the steady
state after it.

Usage: python scripts/bench_imagine.py [--num-envs 1 64 256] [--steps 50] [--threads 2|auto] [--busy 0]
           [--skip-diffusion] [--bf16] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from envs.collector import collect
from policies.protocol import PolicyConfig
from policies.registry import build_policy
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.imagine import ImaginedVectorEnv, StoreStarts
from wm.models.checkpoint import load_checkpoint
from wm.models.registry import build_world_model
from wm.threads import ThreadBudget

VELOCITY = (2, 3)
WARMUP = 200  # JEPA vector steps before the clock starts (20 episodes of 10 blocks); the diffusion model's: 2


def make_store(path: str) -> None:
    keys, spec = store_layout("wm/PointMaze-v0", 64, 100)
    with EpisodeStore.create(path, keys, spec) as store:
        for episode in collect("wm/PointMaze-v0", 8, 100, policy="expert", seed=0, workers=1):
            store.append_episode(episode)


@torch.no_grad()
def env_rate(model, store: str, num_envs: int, steps: int, warmup: int = WARMUP, **options) -> dict:
    """Blocks per second of `steps` vector steps after `warmup` steps: a compiled step compiles at the first steps
    and the first restarts, and bf16 matmul kernels are built for each new row count (the restarts of a step vary
    it); `options`: `bf16`, `compile`."""
    horizon = 10
    env = ImaginedVectorEnv(model, StoreStarts(model, store, velocity_dims=VELOCITY), num_envs=num_envs,
                            horizon=horizon, **options)  # fmt: skip
    started = time.perf_counter()
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps + warmup)]
    for a in actions[:warmup]:
        env.step(a)
    warmed = time.perf_counter()
    for a in actions[warmup:]:
        env.step(a)
    seconds = time.perf_counter() - warmed
    fs = model.spec.frameskip
    return {
        "num_envs": num_envs,
        "imagined_steps_per_s": round(num_envs * steps / seconds, 1),
        "env_steps_per_s": round(num_envs * steps * fs / seconds, 1),
        "ms_per_vector_step": round(1000 * seconds / steps, 2),
        "warmup_s": round(warmed - started, 2),
    }


@torch.no_grad()
def policy_rate(kind: str, model, batch: int = 256, repeats: int = 20) -> dict:
    spec = model.spec
    policy = build_policy(PolicyConfig.for_world_model(spec, [-1, -1], [1, 1], kind=kind).to_dict()).eval()
    z_hist, z_goal = (
        torch.randn(batch, 1, spec.tokens, spec.latent_dim),
        torch.randn(batch, 1, spec.latent_dim),
    )
    policy.act(z_hist, z_goal)
    started = time.perf_counter()
    for _ in range(repeats):
        policy.act(z_hist, z_goal)
    blocks = batch * repeats / (time.perf_counter() - started)
    return {"batch": batch, "blocks_per_s": round(blocks, 1), "env_actions_per_s": round(blocks * spec.frameskip, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default="checkpoints/jepa-pointmaze")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--diffusion-steps", type=int, default=3)
    parser.add_argument("--threads", default="2", help="torch threads: a number, or auto (the engine's choice)")
    parser.add_argument("--busy", type=int, default=0, help="busy processes to run beside the bench")
    parser.add_argument("--skip-diffusion", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="imagine under bfloat16 autocast")
    parser.add_argument("--compile", action="store_true", help="compile the JEPA's step (torch.compile)")
    args = parser.parse_args()
    torch.manual_seed(0)
    jepa, _ = load_checkpoint(args.checkpoint)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let them start spinning
        threads = ThreadBudget(args.threads).threads  # after the busy ones started, so `auto` sees them
        result = {"machine": {"cpus": os.cpu_count(), "torch_threads": threads, "threads_setting": args.threads,
                              "busy_processes": args.busy, "load_average_at_start": round(os.getloadavg()[0], 2)},
                  "bf16": args.bf16, "compile": args.compile, "imagined_env": {}}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            store = f"{tmp}/store"
            make_store(store)
            options = {"bf16": args.bf16, "compile": args.compile}
            result["imagined_env"]["jepa"] = [env_rate(jepa, store, n, args.steps, **options) for n in args.num_envs]
            if not args.skip_diffusion:
                diffusion = build_world_model({"kind": "diffusion", "success_goal": True}).eval()
                result["imagined_env"]["diffusion"] = [
                    env_rate(diffusion, store, n, args.diffusion_steps, warmup=2, bf16=args.bf16) for n in args.num_envs
                ]
        result["policy"] = {kind: policy_rate(kind, jepa) for kind in ("gaussian", "diffusion")}
    finally:
        for process in busy:
            process.kill()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
