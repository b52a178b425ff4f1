"""Which representation can reach the goals at all? The simulator as the world model, scored by several encoders.

Before training time goes into a model, the oracle (`wm.evaluation.oracle.SimulatorWorldModel`: perfect dynamics,
every candidate's frames rendered by the simulator) plans with the same MPC (planner, budget, objective) on the
same tuning pairs, once per representation of a frame:
  each `--checkpoint`  its learned encoder (e.g. one 64-d token per frame, or a grid of pooled patch tokens);
  `--pixels SIDE`      frames average-pooled to SIDE x SIDE colours (`PooledPixels`: nothing visual learned);
each beside its own proprio embedding (pooled pixels beside the first checkpoint's). Where a representation fails
with perfect dynamics, no model on it will plan; where it succeeds, the learned dynamics are what remains.
`--proprio-weight 0` asks what the image alone tells (on Reacher the joint angles in proprio give the fingertip
away). Zero actions run on the same pairs. One JSON line per row as it finishes. The oracle renders and encodes
every candidate (~4 ms per candidate block on one core at 64 px): keep budgets small.

    python scripts/oracle_representations.py --env envs.reacher:make_reacher --data data/Tune-Reacher \
        --checkpoint runs/reacher-p8t4/model --pixels 16 --episodes 8 --proprio-weight 0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.registry import make_env
from planners.mpc import MPCConfig, build_mpc
from wm.evaluation.goal_reaching import held_out_problems, run_controller, run_zero_actions
from wm.evaluation.metrics import rate
from wm.evaluation.oracle import PooledPixels, SimulatorWorldModel
from wm.models.checkpoint import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True)
    p.add_argument("--data", required=True, help="store of tuning pairs (never the evaluation goals)")
    p.add_argument("--checkpoint", nargs="+", required=True, help="models whose encoders are scored")
    p.add_argument("--pixels", type=int, nargs="*", default=[16], help="pooled-pixel sides to score")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planner", default="icem")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--proprio-weight", type=float, default=MPCConfig.proprio_weight)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [load_checkpoint(c, "cpu") for c in args.checkpoint]
    first, config = models[0]
    problems = held_out_problems(first.spec, config.trained_on, args.env, episodes=args.episodes, budget=50,
                                 goal_offset=25, seed=args.seed, data=args.data)  # fmt: skip
    cfg = MPCConfig(planner=args.planner, samples=args.samples, iterations=args.iterations, horizon=args.horizon,
                    proprio_weight=args.proprio_weight)  # fmt: skip
    print(json.dumps({"env": args.env, "pairs": len(problems.pairs), "goals": problems.goals, "mpc": vars(cfg),
                      "threads": torch.get_num_threads()}), flush=True)  # fmt: skip
    zero = run_zero_actions(problems, first.spec.action_dim)
    print(json.dumps({"representation": "zero actions", **rate(zero.success),
                      "median_final_distance": round(float(np.median(zero.distance)), 4)}), flush=True)  # fmt: skip
    representations = [
        (f"{c} ({m.spec.tokens} x {m.spec.visual_dim})", m) for c, (m, _) in zip(args.checkpoint, models, strict=True)
    ]
    representations += [(f"pooled pixels {s} x {s} (x 3)", PooledPixels(first, s)) for s in args.pixels]
    sim = make_env(args.env, first.spec.image_size).unwrapped
    sim.reset(seed=0)
    for name, representation in representations:
        started = time.time()
        with torch.no_grad():
            mpc = build_mpc(SimulatorWorldModel(representation, problems.envs, sim), cfg, seed=args.seed)
            run = run_controller(problems, mpc, f"oracle: {name}", videos=0)
        print(json.dumps({"representation": name, **rate(run.success),
                          "median_final_distance": round(float(np.median(run.distance)), 4),
                          "seconds": round(time.time() - started, 1)}), flush=True)  # fmt: skip
    sim.close()
    problems.close()


if __name__ == "__main__":
    main()
