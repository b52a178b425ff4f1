"""Benchmark: what spatial latents cost to plan with, per token count (JSON lines, one per row as it finishes).

A JEPA's frame latent is a grid of `encoder.tokens` pooled patch tokens (`wm.models.pixel_encoder`); the predictor
and its KV cache then run over frames x tokens. For each token count this builds the `--checkpoint`'s model with
only `encoder.tokens` changed (untrained weights: the cost does not depend on them) and times a steady-state MPC
replan (`bench_planning.replan_latency`: iCEM 300 samples x 10 iterations, `--problems` problems at once, horizon
8, fp32 and bf16 autocast), its FLOPs (torch's flop counter) as a fraction of this CPU's dense fp32 matmul rate,
and one encoder + training step on a batch of 32 windows.

    python scripts/bench_tokens.py --checkpoint checkpoints/jepa-reacher --tokens 1 4 16 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from bench_planning import matmul_flops, replan_flops, replan_latency

import envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.registry import make_env
from wm.models.checkpoint import load_checkpoint
from wm.models.registry import build_world_model


def observations(env_id: str, image_size: int, n: int) -> tuple[dict, dict]:
    """Start and goal observations `{"rgb": (n, H, W, 3), "proprio": (n, P)}` of n problems: resets with
    different seeds (any env will do: only the cost is measured)."""
    env = make_env(env_id, image_size)
    frames = [env.reset(seed=i)[0] for i in range(2 * n)]
    env.close()
    stack = lambda items: {k: np.stack([o[k] for o in items]) for k in ("rgb", "proprio")}  # noqa: E731
    return stack(frames[:n]), stack(frames[n:])


def train_step_s(model, batch: int = 32, repeats: int = 3) -> float:
    """Seconds per training step (forward, loss, backward) on random windows of the model's shape."""
    spec = model.spec
    n = spec.num_hist + 1
    window = {
        "rgb": torch.randint(0, 255, (batch, n, spec.image_size, spec.image_size, 3), dtype=torch.uint8),
        "proprio": torch.randn(batch, n, spec.proprio_dim),
        "action": torch.randn(batch, n - 1, spec.block_action_dim),
    }
    model.train()
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        loss, _ = model(window)
        loss.backward()
        times.append(time.perf_counter() - started)
    model.eval()
    return float(np.median(times[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/jepa-pointmaze", help="model whose settings are varied")
    p.add_argument("--env", default=None, help="env of the start/goal observations (default: the checkpoint's)")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--patch-size", type=int, default=None, help="encoder.patch_size (default: the checkpoint's)")
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, config = load_checkpoint(args.checkpoint)
    env_id = args.env or config.trained_on.env_id
    print(json.dumps({"checkpoint": args.checkpoint, "env": env_id, "problems": args.problems,
                      "threads": args.threads, "planner": "icem 300 x 10, horizon 8"}), flush=True)  # fmt: skip
    peak = matmul_flops(torch.float32)  # this CPU's dense fp32 matmul FLOP/s at these threads
    for tokens in args.tokens:
        settings = copy.deepcopy(config.model)
        settings["encoder"]["tokens"] = tokens
        if args.patch_size:
            settings["encoder"]["patch_size"] = args.patch_size
        torch.manual_seed(0)
        model = build_world_model(settings).eval()
        start, goal = observations(env_id, model.spec.image_size, args.problems)
        row = {"tokens": tokens, "patch_size": settings["encoder"]["patch_size"],
               "parameters_m": round(sum(t.numel() for t in model.parameters()) / 1e6, 3)}  # fmt: skip
        for precision in ("fp32", "bf16"):
            with torch.no_grad():
                times = replan_latency(model, "icem", start, goal, args.repeats, 8, bf16=precision == "bf16")
            row[f"replan_s_{precision}"] = round(float(np.median(times)), 3)
            row[f"replan_s_per_problem_{precision}"] = round(float(np.median(times)) / args.problems, 4)
        with torch.no_grad():
            flops = replan_flops(model, start, goal, 8, name="icem")
        row["replan_gflop"] = round(flops / 1e9, 2)
        row["fraction_of_fp32_peak"] = round(flops / row["replan_s_fp32"] / peak, 3)
        row["train_step_s_batch32"] = round(train_step_s(model), 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
