"""Benchmark planning on this machine: one JSON line per row as it finishes, then the whole report as one object.

- `planners`: per-replan latency of every planner through the MPC controller, on the same world model, the same
  B problems (real observations and goals of a built-in env) and the same budget of samples x iterations;
- `reference`: the same CEM budget through a loop in the style of DINO-WM's planner (Zhou et al. 2024, "DINO-WM",
  arXiv:2411.04983): one problem at a time, the start observation re-encoded for every sample in every iteration,
  rollouts recomputed from scratch (no KV cache), fp32, a host sync (`.item()`) every iteration; `speedup` = its
  time per problem / ours per problem;
- `mppi_vs_pytorch_mppi`: ms per MPC command of our MPPI and of the `pytorch_mppi` package (`pip install -e
  ".[bench]"`) on the same toy dynamics and cost (a 2-D double integrator, K samples, horizon T);
- `flops`: the machine's dense matmul FLOP/s (fp32 and bf16) and the FLOP/s our CEM replan achieves in each
  (FLOPs counted by `torch.utils.flop_counter`) as a fraction of it.
Every planner runs in fp32, and under bf16 autocast (`MPCController(bf16=True)`) where the CPU multiplies bf16
natively (AVX512-BF16 or AMX; `--bf16 on` forces the emulated kind, which is slower than fp32 and took this bench
past 15 minutes on an AVX2 CPU); the reference stays fp32. `--compile` compiles our rollout steps for every row
(`MPCConfig.compile`; the reference loop is never compiled). The defaults finish in about 3 minutes on 2 cores.

Usage: python scripts/bench_planning.py [--checkpoint checkpoints/jepa-pointmaze] [--problems 8] [--repeats 3]
           [--bf16 auto|on|off] [--compile]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from envs.registry import make_env
from planners.mpc import MPCController
from planners.objectives import goal_objective
from planners.registry import make_planner
from wm.device import native_bf16
from wm.models.checkpoint import load_checkpoint

PLANNER_BUDGETS = {  # the same 3000 candidate evaluations per replan (gradient: 30 restarts x 100 Adam steps)
    "cem": {"samples": 300, "elites": 30, "iterations": 10},
    "icem": {"samples": 300, "elites": 30, "iterations": 10},
    "mppi": {"samples": 300, "iterations": 10},
    "cmaes": {"popsize": 300, "iterations": 10},
    "gradient": {"restarts": 30, "iterations": 100},
}


def problems(env_id: str, image_size: int, n: int, seed: int) -> tuple[dict, dict]:
    """Start and goal observations `{"rgb": (n, H, W, 3) uint8, "proprio": (n, P)}` of n random problems."""
    env = make_env(env_id, image_size).unwrapped
    rng = np.random.default_rng(seed)
    starts, goals = [], []
    for _ in range(n):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        starts.append(obs)
        goals.append(env.observe_state(env.sample_goal(rng)))
    env.close()
    stack = lambda items: {k: np.stack([o[k] for o in items]) for k in ("rgb", "proprio")}  # noqa: E731
    return stack(starts), stack(goals)


def warmed_controller(model, name: str, start: dict, goal: dict, horizon: int, bf16: bool = False):
    """`(controller, replan)`: an MPC controller with planner `name` at its benchmark budget, and a function that
    replans it in the steady state (a history of `num_hist` start frames, zero past actions, the warm start set),
    called once here."""
    spec = model.spec
    planner = make_planner(name, horizon=horizon, action_dim=spec.block_action_dim, **PLANNER_BUDGETS[name])
    controller = MPCController(model, planner, goal_objective(spec.visual_dim), bf16=bf16)
    controller.reset(goal)
    with torch.no_grad():
        z = controller.encode(start)  # (B, N, D)
    z_hist = z[:, None].expand(-1, spec.num_hist, -1, -1)
    past = torch.zeros(len(z), spec.num_hist - 1, spec.block_action_dim) if spec.num_hist > 1 else None

    def replan() -> None:
        controller.plan(z_hist, past)

    replan()
    return controller, replan


def replan_latency(model, name: str, start: dict, goal: dict, repeats: int, horizon: int, bf16: bool) -> list[float]:
    """Seconds per steady-state replan for all problems at once (the first steady replan warms up and is dropped)."""
    controller, replan = warmed_controller(model, name, start, goal, horizon, bf16)
    for _ in range(repeats + 1):
        replan()
    return controller.latencies[2:]


def reference_cem(model, start: dict, goal: dict, horizon: int, samples: int, elites: int, iterations: int) -> float:
    """DINO-WM's planning loop, one problem at a time, from the same `num_hist`-frame history as the controller's
    steady state (the start observation repeated, zero past actions); returns seconds per problem."""
    spec = model.spec
    visual, hist = spec.visual_dim, spec.num_hist
    past = torch.zeros(samples, hist - 1, spec.block_action_dim)
    started = time.perf_counter()
    for b in range(len(start["rgb"])):
        obs = {k: torch.as_tensor(v[b : b + 1, None]).repeat_interleave(hist, 1) for k, v in start.items()}
        z_goal = model.encode({k: torch.as_tensor(v[b : b + 1, None]) for k, v in goal.items()})[:, 0]
        mu = torch.zeros(horizon, spec.block_action_dim)
        sigma = torch.ones(horizon, spec.block_action_dim)
        losses = []
        for _ in range(iterations):
            expanded = {k: v.expand(samples, *v.shape[1:]) for k, v in obs.items()}
            z0 = model.encode(expanded)  # every sample re-encodes the start, as wm.rollout does
            actions = (mu + sigma * torch.randn(samples, horizon, spec.block_action_dim)).clamp(-1, 1)
            z = model.rollout(z0, actions, past, use_cache=False)  # (S, H, N, D)
            loss = ((z[:, -1, :, :visual] - z_goal[..., :visual]) ** 2).mean((-2, -1))  # (S,)
            top = torch.argsort(loss)[:elites]
            losses.append(loss[top[0]].item())  # the per-iteration host sync
            mu, sigma = actions[top].mean(0), actions[top].std(0)
    return (time.perf_counter() - started) / len(start["rgb"])


def matmul_flops(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    """Dense matmul FLOP/s of this machine in `dtype` (best of `repeats`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def replan_flops(model, start: dict, goal: dict, horizon: int, name: str = "cem") -> int:
    """FLOPs of one steady-state replan of planner `name` (all problems) as counted by torch's flop counter."""
    _, replan = warmed_controller(model, name, start, goal, horizon)
    with FlopCounterMode(display=False) as counter, torch.compiler.set_stance("force_eager"):  # compiled: not seen
        replan()
    return counter.get_total_flops()


def double_integrator(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """`state (K, 4)` = position, velocity in 2-D; `action (K, 2)` accelerations; dt 0.1."""
    pos, vel = state[:, :2], state[:, 2:]
    vel = vel + 0.1 * action
    return torch.cat([pos + 0.1 * vel, vel], dim=1)


def running_cost(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """`(K, 4), (K, 2) -> (K,)`: distance of the position to the origin plus a small effort term."""
    return (state[:, :2] ** 2).sum(1) + 0.01 * (action**2).sum(1)


def mppi_comparison(samples: int, horizon: int, commands: int) -> dict:
    """ms per command of our MPPI and of pytorch_mppi on the double integrator, both warm-started by shifting."""
    start = torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    planner = make_planner("mppi", horizon=horizon, action_dim=2, samples=samples, iterations=1, temperature=1.0)

    def cost(actions: torch.Tensor) -> torch.Tensor:  # (1, S, H, 2) -> (1, S)
        state = state_now.expand(actions.shape[1], -1)
        total = torch.zeros(actions.shape[1])
        for t in range(actions.shape[2]):
            state = double_integrator(state, actions[0, :, t])
            total = total + running_cost(state, actions[0, :, t])
        return total[None]

    state_now, warm, ours = start, None, []
    for _ in range(commands):
        t = time.perf_counter()
        plan = planner.plan(cost, 1, init=warm)
        action = plan[:, 0]
        ours.append(time.perf_counter() - t)
        warm = planner.shift(plan)
        state_now = double_integrator(state_now, action)
    result = {"ours_ms": round(1e3 * float(np.median(ours[1:])), 3), "ours_final_distance": _norm(state_now)}
    try:
        from pytorch_mppi import MPPI
    except ImportError:
        result["pytorch_mppi"] = "not installed: pip install -e '.[bench]'"
        return result
    ctrl = MPPI(
        double_integrator,
        running_cost,
        4,
        noise_sigma=torch.eye(2) * 0.3**2,
        num_samples=samples,
        horizon=horizon,
        lambda_=1.0,
        u_min=-torch.ones(2),
        u_max=torch.ones(2),
    )
    state_now, theirs = start[0], []
    for _ in range(commands):
        t = time.perf_counter()
        action = ctrl.command(state_now)
        theirs.append(time.perf_counter() - t)
        state_now = double_integrator(state_now[None], action[None])[0]
    result["pytorch_mppi_ms"] = round(1e3 * float(np.median(theirs[1:])), 3)
    result["pytorch_mppi_final_distance"] = _norm(state_now)
    result["ratio"] = round(result["pytorch_mppi_ms"] / result["ours_ms"], 2)
    return result


def _norm(state: torch.Tensor) -> float:
    return round(float(state.reshape(-1)[:2].norm()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/jepa-pointmaze")
    parser.add_argument("--problems", type=int, default=8, help="problems planned at once (B)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-problems", type=int, default=2, help="problems the slow reference loop plans")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="auto: only where native")
    parser.add_argument("--compile", action="store_true", help="compile our rollout steps (not the reference's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    precisions = ["fp32", "bf16"] if args.bf16 == "on" or (args.bf16 == "auto" and native_bf16()) else ["fp32"]
    model, config = load_checkpoint(args.checkpoint)
    if args.compile:
        model.compile_imagination()
    horizon = 5
    env_id = config.trained_on.env_id
    start, goal = problems(env_id, model.spec.image_size, args.problems, seed=0)
    report = {
        "checkpoint": args.checkpoint,
        "env": env_id,
        "problems": args.problems,
        "threads": args.threads,
        "horizon": horizon,
        "device": "cpu",
        "compile": args.compile,
        "precisions": precisions if "bf16" in precisions else ["fp32 (bf16 is emulated on this CPU: --bf16 on)"],
        "planners": {},
    }
    stream({k: v for k, v in report.items() if k != "planners"})
    for precision in precisions:
        for name in PLANNER_BUDGETS:
            with torch.set_grad_enabled(name == "gradient"):
                times = replan_latency(model, name, start, goal, args.repeats, horizon, bf16=precision == "bf16")
            row = _latency(times, args.problems, PLANNER_BUDGETS[name])
            report["planners"][f"{name}_{precision}"] = row
            stream({"planner": name, "precision": precision, **row})
    with torch.no_grad():
        ref_start = {k: v[: args.reference_problems] for k, v in start.items()}
        ref_goal = {k: v[: args.reference_problems] for k, v in goal.items()}
        reference = reference_cem(model, ref_start, ref_goal, horizon, samples=300, elites=30, iterations=10)
        report["reference"] = {"per_problem_s": round(reference, 4), "budget": "CEM 300 x 10 iterations, horizon 5"}
        for precision in precisions:
            ours = report["planners"][f"cem_{precision}"]["per_problem_s"]
            report["reference"][f"speedup_{precision}"] = round(reference / ours, 1)
        stream({"reference": report["reference"]})
        flops = replan_flops(model, start, goal, horizon)
    report["flops"] = {"cem_replan_gflop": round(flops / 1e9, 3)}
    for dtype, precision in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if precision not in precisions:
            continue
        peak = matmul_flops(dtype)
        achieved = flops / report["planners"][f"cem_{precision}"]["p50_s"]
        report["flops"][precision] = {
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "cem_achieved_gflops": round(achieved / 1e9, 2),
            "fraction_of_peak": round(achieved / peak, 3),
            # the speedup over the reference loop were every FLOP of our replan run at the matmul peak: the ceiling
            # of P1 for this model and budget unless a replan does fewer FLOPs
            "speedup_at_peak": round(report["reference"]["per_problem_s"] / (flops / peak / args.problems), 1),
        }
    stream({"flops": report["flops"]})
    report["mppi_vs_pytorch_mppi"] = {"samples": 500, "horizon": 15, **mppi_comparison(500, 15, commands=50)}
    stream({"mppi_vs_pytorch_mppi": report["mppi_vs_pytorch_mppi"]})
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2), flush=True)


def stream(row: dict) -> None:
    """One row of the report as a JSON line, now (a long bench shows its progress)."""
    print(json.dumps(row), flush=True)


def _latency(times: list[float], problems: int, budget: dict) -> dict:
    p50 = float(np.median(times))
    return {
        "p50_s": round(p50, 4),
        "max_s": round(max(times), 4),
        "per_problem_s": round(p50 / problems, 4),
        "budget": budget,
    }


if __name__ == "__main__":
    main()
