"""Side by side with the peer library: our CEM, iCEM and MPPI against stable-worldmodel 0.1.1's (`pip install -e
".[bench]"`) on the same cost function and the same budget, in one process, the two libraries interleaved solve
by solve. One JSON line per row as it finishes, then a summary line.

Costs (both libraries call the same function; a wrapper counts the candidate sequences it scores):
- `analytic`: a point mass in the plane, `x_{t+1} = x_t + 0.1 * clip(a_t, -1, 1)`, from a start to a goal drawn
  in [-1, 1]^2; cost `||x_H - goal||^2 + 0.01 * mean ||clip(a)||^2`, horizon 25;
- `jepa`: the shipped PointMaze JEPA (`--checkpoint`): the imagined latents of the action blocks from a history of
  the start observation, cost the goal image's latent distance on the last frame (the engine's default objective),
  horizon 5 blocks of 5 env steps. Starts and goals are real observations of the env.
Actions are clamped to the bounds inside the cost, so a plan outside them (the peer's can be) is scored as what the
env would apply. Budget: 300 samples x 10 iterations, 30 elites (MPPI: 300 x 10); our iCEM with `decay=1` (no
population decay) and 292 samples, so both iCEMs score the same number of sequences (3,002 and 3,000 per
problem). Problems: 1, 8 and 64 at once.

Each row: library, planner, cost, problems, `ms` (median solve over `--repeats`, all problems at once),
`evaluations` (sequences scored per solve), `final_cost` (the returned plan scored by the cost, mean over
problems and repeats) and `out_of_bounds` (fraction of the returned plan's entries outside [-1, 1]). Threads are
pinned (`--threads`, default 2) and reported.

    python scripts/bench_peer.py [--costs analytic jepa] [--problems 1 8 64] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from bench_planning import problems

from planners.registry import make_planner
from wm.models.checkpoint import load_checkpoint

BUDGET = {"samples": 300, "elites": 30, "iterations": 10}
OURS = {  # the same budget in our planners' terms
    "cem": {**BUDGET, "init_std": 1.0},
    # our iCEM scores its kept elites (9 per iteration after the first) and, last, its mean beside the samples:
    # 292 samples make its 3,002 evaluations per problem match the peer's 3,000
    "icem": {**BUDGET, "samples": 292, "init_std": 1.0, "decay": 1.0},
    "mppi": {"samples": BUDGET["samples"], "iterations": BUDGET["iterations"]},
}


class CountedCost:
    """A cost over action sequences `(B, S, H, A) -> (B, S)` that counts the sequences it scores; as the peer's
    `Costable` too (`get_cost(info_dict, candidates)`, the problems' indices in `info_dict["problem"]`)."""

    def __init__(self, cost):
        self.cost, self.evaluations = cost, 0

    def __call__(self, actions: torch.Tensor, problems: torch.Tensor | None = None) -> torch.Tensor:
        self.evaluations += actions.shape[0] * actions.shape[1]
        return self.cost(actions.clamp(-1.0, 1.0), problems)

    def get_cost(self, info_dict: dict, candidates: torch.Tensor) -> torch.Tensor:
        return self(candidates.float(), info_dict["problem"][:, 0].long())


def analytic_cost(n: int, seed: int):
    """`(cost, horizon, action_dim)` of n point-mass problems."""
    rng = np.random.default_rng(seed)
    start = torch.as_tensor(rng.uniform(-1, 1, (n, 2)), dtype=torch.float32)
    goal = torch.as_tensor(rng.uniform(-1, 1, (n, 2)), dtype=torch.float32)

    def cost(actions: torch.Tensor, problems: torch.Tensor | None) -> torch.Tensor:
        idx = torch.arange(n) if problems is None else problems
        end = start[idx, None] + 0.1 * actions.sum(2)  # (B, S, 2)
        return ((end - goal[idx, None]) ** 2).sum(-1) + 0.01 * (actions**2).sum(-1).mean(-1)

    return cost, 25, 2


def jepa_cost(checkpoint: str, n: int, seed: int):
    """`(cost, horizon, action_dim)` of n problems on the world model `checkpoint`: real start and goal observations
    of its env, a history of the start repeated, zero past actions."""
    model, config = load_checkpoint(checkpoint)
    spec = model.spec
    start, goal = problems(config.trained_on.env_id, spec.image_size, n, seed)  # `bench_planning`'s problems
    with torch.no_grad():
        z_start = model.encode({k: torch.as_tensor(v)[:, None] for k, v in start.items()})  # (n, 1, N, D)
        z_goal = model.encode({k: torch.as_tensor(v)[:, None] for k, v in goal.items()})[:, 0]  # (n, N, D)
    z_hist = z_start.expand(-1, spec.num_hist, -1, -1)
    past = torch.zeros(n, spec.num_hist - 1, spec.block_action_dim) if spec.num_hist > 1 else None
    visual = spec.visual_dim

    @torch.no_grad()
    def cost(actions: torch.Tensor, problems: torch.Tensor | None) -> torch.Tensor:
        idx = torch.arange(n) if problems is None else problems
        z = model.rollout(z_hist[idx], actions, None if past is None else past[idx])  # (B, S, H, N, D)
        return ((z[:, :, -1, :, :visual] - z_goal[idx, None, :, :visual]) ** 2).mean((-2, -1))

    return cost, 5, spec.block_action_dim


def ours(name: str, cost: CountedCost, n: int, horizon: int, action_dim: int, seed: int) -> torch.Tensor:
    planner = make_planner(name, horizon=horizon, action_dim=action_dim, seed=seed, **OURS[name])
    return planner.plan(cost, n)


def peer(name: str, cost: CountedCost, n: int, horizon: int, action_dim: int, seed: int) -> torch.Tensor:
    from gymnasium.spaces import Box
    from stable_worldmodel.policy import PlanConfig
    from stable_worldmodel.solver import CEMSolver, ICEMSolver, MPPISolver

    common = {"batch_size": n, "num_samples": BUDGET["samples"], "n_steps": BUDGET["iterations"], "var_scale": 1.0,
              "topk": BUDGET["elites"], "seed": seed}  # fmt: skip
    solver = {"cem": CEMSolver, "icem": ICEMSolver, "mppi": MPPISolver}[name](cost, **common)
    solver.configure(action_space=Box(-1.0, 1.0, (n, action_dim), np.float32), n_envs=n,
                     config=PlanConfig(horizon=horizon, receding_horizon=1))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its solve time
        out = solver.solve({"problem": torch.arange(n)})
    return out["actions"].float()


def pair(name: str, cost_name: str, n: int, make_cost, repeats: int, seed: int) -> dict:
    """Both libraries' planner on n problems: `repeats` solves each (plus one to warm up), each with its own seed,
    the two interleaved solve by solve, which goes first alternating, so that a drift in the machine's speed or a
    cache warmed by the other hits both alike."""
    runs = {library: {"times": [], "finals": [], "outside": [], "evaluations": 0} for library in ("peer", "ours")}
    for r in range(repeats + 1):
        order = (("peer", peer), ("ours", ours))
        for library, fn in order if r % 2 else order[::-1]:
            cost, horizon, action_dim = make_cost(n, seed)
            counted = CountedCost(cost)
            started = time.perf_counter()
            plan = fn(name, counted, n, horizon, action_dim, seed + r)
            elapsed = time.perf_counter() - started
            if r == 0:
                continue  # warm-up
            run = runs[library]
            run["times"].append(elapsed)
            run["evaluations"] = counted.evaluations
            with torch.no_grad():
                run["finals"].append(float(cost(plan[:, None].clamp(-1, 1), None).mean()))
            run["outside"].append(float((plan.abs() > 1.0 + 1e-6).float().mean()))
    return {library: {"library": library, "planner": name, "cost": cost_name, "problems": n,
                      "ms": round(1000 * statistics.median(run["times"]), 2), "evaluations": run["evaluations"],
                      "final_cost": round(float(np.mean(run["finals"])), 5),
                      "out_of_bounds": round(float(np.mean(run["outside"])), 3)}
            for library, run in runs.items()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/jepa-pointmaze", help="world model of the jepa cost")
    p.add_argument("--costs", nargs="+", default=["analytic", "jepa"], choices=["analytic", "jepa"])
    p.add_argument("--planners", nargs="+", default=["cem", "icem", "mppi"], choices=list(OURS))
    p.add_argument("--problems", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads, pinned for the whole run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        import stable_worldmodel  # noqa: F401
    except ImportError as e:
        sys.exit(f'bench_peer: error: the peer library is not installed ({e}); pip install -e ".[bench]"')
    torch.set_num_threads(args.threads)
    makers = {"analytic": analytic_cost, "jepa": lambda n, seed: jepa_cost(args.checkpoint, n, seed)}
    load = os.getloadavg()[0]
    rows = []
    for cost_name in args.costs:
        for n in args.problems:
            for name in args.planners:
                both = pair(name, cost_name, n, makers[cost_name], args.repeats, args.seed)
                for library in ("peer", "ours"):
                    print(json.dumps({**both[library], "threads": args.threads}), flush=True)
                rows.append(both)
    wins = [
        p for p in rows if p["ours"]["ms"] <= p["peer"]["ms"] and p["ours"]["final_cost"] <= p["peer"]["final_cost"]
    ]
    print(json.dumps({"pairs": len(rows), "ours_faster_and_not_worse": len(wins), "threads": args.threads,
                      "load_average_at_start": round(load, 2), "torch": torch.__version__}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
