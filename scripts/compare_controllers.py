"""Benchmark: MPC alone, a policy alone and policy-guided MPC on the same start/goal pairs, beside zero and random
actions.

Every controller runs the one goal-reaching evaluation (`wm.evaluation.goal_reaching`) on the same held-out pairs
(`--data`, `--seed`: as `wm plan` and `wm eval-policy` draw them; goal `--goal-offset` steps ahead, `--budget`-step
episodes, success judged by the env), one after the other on this process's threads. Each row is printed as a JSON
line as soon as it finishes: success with its 95% interval, median final goal distance, and milliseconds per
decision (p50 / p95: one MPC replan or one policy call, for all problems at once, and per problem). `--out FILE`
also writes the rows as one JSON document.

    python scripts/compare_controllers.py --checkpoint checkpoints/jepa-reacher --policy checkpoints/bc-reacher \
        --env envs.reacher:make_reacher --data data/Fresh-Reacher --episodes 50 --seed 0 --out runs/compare.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

import envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.controller import RandomController
from planners.mpc import MPCConfig, build_mpc, with_preset
from policies.checkpoint import load_policy
from policies.controller import PolicyController
from policies.guide import PolicyGuide
from wm.evaluation.goal_reaching import held_out_problems, run_controller, run_zero_actions
from wm.evaluation.metrics import percentiles, rate


def row(name: str, run, problems, started: float) -> dict:
    latency = percentiles(run.latencies, 1000, 3)
    per_problem = {k: round(latency[k] / len(problems.pairs), 3) for k in ("p50", "p95") if latency[k] is not None}
    return {"controller": name, **rate(run.success), "median_final_distance": round(float(np.median(run.distance)), 4),
            "decision_ms": latency, "decision_ms_per_problem": per_problem,
            "seconds": round(time.time() - started, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="world model")
    p.add_argument("--policy", required=True, help="policy cloned on that world model (`wm bc`)")
    p.add_argument("--env", required=True)
    p.add_argument("--data", help="store of held-out goals (default: the world model's training store)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--goal-offset", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planner", default="icem")
    p.add_argument("--samples", type=int, default=None, help="default: the preset's, else 300")
    p.add_argument("--iterations", type=int, default=None, help="default: the preset's, else 10")
    p.add_argument("--guide-samples", type=int, default=16)
    p.add_argument("--only", nargs="*", default=["zero", "random", "policy", "mpc", "guided"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", help="also write all rows to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    policy, _, model, config = load_policy(args.policy, args.checkpoint, "cpu")
    given = {"planner": args.planner, "samples": args.samples, "iterations": args.iterations, "guide": "none"}
    mpc_cfg = with_preset(MPCConfig(**{f.name: None for f in fields(MPCConfig)} | given), config.plan_preset)
    problems = held_out_problems(model.spec, config.trained_on, args.env, episodes=args.episodes, budget=args.budget,
                                 goal_offset=args.goal_offset, seed=args.seed, data=args.data)  # fmt: skip
    dims = problems.envs[0].action_space.shape[0]
    controllers = {
        "zero": lambda: None,
        "random": lambda: RandomController(-np.ones(dims), np.ones(dims), chunk=1, seed=args.seed),
        "policy": lambda: PolicyController(policy, model, seed=args.seed),
        "mpc": lambda: build_mpc(model, mpc_cfg, seed=args.seed),
        "guided": lambda: build_mpc(model, mpc_cfg, seed=args.seed,
                                    guide=PolicyGuide(policy, model, args.guide_samples, seed=args.seed)),
    }  # fmt: skip
    rows = []
    header = {"env": args.env, "checkpoint": args.checkpoint, "policy": args.policy, "pairs": len(problems.pairs),
              "goals": problems.goals, "mpc": asdict(mpc_cfg), "guide_samples": args.guide_samples,
              "torch_threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps(header), flush=True)
    for name in args.only:
        started = time.time()
        controller = controllers[name]()
        with torch.no_grad():
            run = run_zero_actions(problems, dims) if controller is None else run_controller(problems, controller, name)
        rows.append(row(name, run, problems, started))
        print(json.dumps(rows[-1]), flush=True)
    problems.close()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**header, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
