"""`wm plan`: zero-shot MPC from goal images with a world model, judged honestly by the environment.

Goals (`--goal-source`):
  dataset  start at the state of a held-out episode at time t; the goal is the observation at t + offset (the
           stable-worldmodel protocol: goal 25 env steps ahead, 50-step budget by default);
  random   a random start (env reset) and a random goal state drawn by the env.
Goal velocity (`--goal-velocity`): a goal image shows where the agent should be, not how fast it should move, so
by default the goal's proprio velocities (the env's `proprio_velocity_dims`) are set to zero: the planner is asked
to arrive and stay. `observed` keeps the velocity recorded at the goal frame (DINO-WM's goals), which asks the agent
to pass through the goal at that speed rather than stop there.
All episodes run in one batch: one planner call plans for every episode at once. The controller sees only
observations and the goal observation; after exactly `--budget` env steps the env judges success. Writes
`results.json` (success rate with a 95% Wilson interval, final distances, replan latency p50/p95, config),
videos of the first episodes (real | imagined plan | goal) and a plot of success and latency.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wm.errors import WMError


@dataclass
class PlanConfig:
    checkpoint: str
    env: str
    episodes: int = 50
    planner: str = "cem"
    goal_source: str = "dataset"
    budget: int = 50  # env steps
    goal_offset: int = 25  # env steps between start and goal (dataset goals)
    data: str | None = None  # store for dataset goals (default: the checkpoint's training store)
    out: str = "runs/plan"
    seed: int = 0
    samples: int = 300
    iterations: int = 10  # DINO-WM's count for PointMaze and Wall
    hold_in_block: bool = False  # one env action per world-model block (see planners.mpc)
    elites: int = 30
    horizon: int = 8  # 40 env steps: room to go around a wall toward a goal 25 path steps away (DINO-WM: 5)
    replan_every: int = 1
    objective_mode: str = "weighted"  # see planners.objectives; "last" is DINO-WM's
    proprio_weight: float = 10.0
    proprio_mode: str = "last"  # the proprio term on the last imagined frame only: end the horizon at the goal
    bf16: bool = False  # world-model rollouts under bfloat16 autocast
    goal_velocity: str = "rest"  # "rest": zero the goal's proprio velocities; "observed": keep them
    videos: int = 4


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def dataset_goals(cfg: PlanConfig, config: dict, rng: np.random.Generator) -> list[dict]:
    """Start/goal pairs from held-out episodes: `{"start": state, "goal": state, "goal_obs": {rgb, proprio}}`."""
    from wm.app.eval_model import held_out_episodes
    from wm.data.store import EpisodeStore

    path = cfg.data or config["data"]["store"]
    if not Path(path).is_dir():
        raise WMError(f"goal store {path} not found; pass --data STORE of {cfg.env} or use --goal-source random")
    with EpisodeStore.open(path) as store:
        if "state" not in store.keys:
            raise WMError(f"{path} has no simulator states; dataset goals need a store collected from a built-in env")
        episodes, _ = held_out_episodes(config, store)
        lengths = store.episode_lengths()[episodes]
        usable = episodes[lengths > cfg.goal_offset]
        if len(usable) == 0:
            raise WMError(f"no held-out episode is longer than --goal-offset {cfg.goal_offset}; lower it")
        pairs = []
        for e in rng.choice(usable, size=cfg.episodes, replace=len(usable) < cfg.episodes):
            ep = store.episode(int(e), ["state", "rgb", "proprio"])
            t = int(rng.integers(0, len(ep["state"]) - cfg.goal_offset))
            g = t + cfg.goal_offset
            pairs.append(
                {
                    "start": ep["state"][t],
                    "goal": ep["state"][g],
                    "goal_obs": {"rgb": ep["rgb"][g], "proprio": ep["proprio"][g]},
                    "source": {"episode": int(e), "t": t},
                }
            )
    return pairs


def random_goals(cfg: PlanConfig, env, rng: np.random.Generator) -> list[dict]:
    pairs = []
    for i in range(cfg.episodes):
        _, info = env.reset(seed=int(rng.integers(2**31)))
        goal = env.sample_goal(rng)
        pairs.append({"start": info["state"], "goal": goal, "goal_obs": env.observe_state(goal), "source": {"i": i}})
    return pairs


def goal_batch(pairs: list[dict], goal_velocity: str, velocity_dims: tuple[int, ...]) -> dict:
    """The controller's goal observations `{"rgb": (B, H, W, 3), "proprio": (B, P)}` of start/goal `pairs`; with
    `goal_velocity="rest"` the proprio entries `velocity_dims` are zero (a copy: `pairs` is left as it is)."""
    proprio = np.stack([p["goal_obs"]["proprio"] for p in pairs])
    if goal_velocity == "rest":
        proprio[:, list(velocity_dims)] = 0.0
    return {"rgb": np.stack([p["goal_obs"]["rgb"] for p in pairs]), "proprio": proprio}


def make_controller(model, cfg: PlanConfig):
    """The MPC controller of `cfg` (planner, its search settings, goal objective, replanning) for `model`."""
    from planners.base import make_planner
    from planners.mpc import MPCController
    from planners.objectives import goal_objective

    spec = model.spec
    action_dim = spec["env_action_dim"] if cfg.hold_in_block else spec["action_dim"]
    planner_kwargs = {"horizon": cfg.horizon, "action_dim": action_dim, "seed": cfg.seed}
    if cfg.planner in ("cem", "icem"):
        planner_kwargs.update(samples=cfg.samples, elites=cfg.elites, iterations=cfg.iterations)
    elif cfg.planner == "mppi":
        planner_kwargs.update(samples=cfg.samples, iterations=cfg.iterations)
    elif cfg.planner == "cmaes":
        planner_kwargs.update(popsize=cfg.samples, iterations=cfg.iterations)
    elif cfg.planner == "gradient":
        planner_kwargs.update(iterations=cfg.iterations)
    planner = make_planner(cfg.planner, **planner_kwargs)
    proprio_weight = cfg.proprio_weight if spec.get("proprio_dim", 0) else 0.0  # models without proprio: none
    objective = goal_objective(
        spec["visual_dim"], mode=cfg.objective_mode, proprio_weight=proprio_weight, proprio_mode=cfg.proprio_mode
    )
    return MPCController(model, planner, objective, cfg.replan_every, cfg.hold_in_block, bf16=cfg.bf16)


def run_plan(cfg: PlanConfig) -> dict:
    from envs.registry import is_builtin, make_env
    from wm.models.checkpoint import load_checkpoint

    if not is_builtin(cfg.env):
        raise WMError(f"`wm plan` needs a built-in env with exact state resets; {cfg.env!r} is not one")
    if cfg.goal_source not in ("dataset", "random"):
        raise WMError(f"--goal-source must be dataset or random, got {cfg.goal_source!r}")
    if cfg.goal_velocity not in ("rest", "observed"):
        raise WMError(f"--goal-velocity must be rest or observed, got {cfg.goal_velocity!r}")
    model, config = load_checkpoint(cfg.checkpoint)
    trained_on = config["data"]["spec"]["env"]["id"]
    if trained_on != cfg.env:
        raise WMError(f"the checkpoint was trained on {trained_on}, not {cfg.env}; pass --env {trained_on}")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise WMError(f"{out} already holds results; pass a new --out directory")
    torch.manual_seed(cfg.seed)
    spec = model.spec
    image_size = spec["image_size"]
    envs = [make_env(cfg.env, image_size, max_episode_steps=cfg.budget + 1).unwrapped for _ in range(cfg.episodes)]
    rng = np.random.default_rng(cfg.seed)
    pairs = dataset_goals(cfg, config, rng) if cfg.goal_source == "dataset" else random_goals(cfg, envs[0], rng)
    obs_list = [
        env.reset(options={"state": p["start"], "goal": p["goal"]})[0] for env, p in zip(envs, pairs, strict=True)
    ]
    controller = make_controller(model, cfg)
    out.mkdir(parents=True, exist_ok=True)  # only once every setting has been accepted
    stack = lambda key, items: np.stack([o[key] for o in items])  # noqa: E731
    controller.reset(goal_batch(pairs, cfg.goal_velocity, envs[0].proprio_velocity_dims))
    n_vid = min(cfg.videos, cfg.episodes)
    real_frames, imagined_frames = [], []
    started = time.time()
    for _ in tqdm(range(cfg.budget), desc=f"plan {cfg.planner}", unit="step"):
        obs = {"rgb": stack("rgb", obs_list), "proprio": stack("proprio", obs_list)}
        actions = controller.act(obs).cpu().numpy()
        real_frames.append(obs["rgb"][:n_vid])
        if model.decoder is not None and controller.last_plan_latents is not None:
            imagined = model.decode(controller.last_plan_latents[:n_vid, 0])  # next block as the plan imagines it
            imagined_frames.append((imagined.clamp(0, 1) * 255).byte().cpu().numpy())
        obs_list = [env.step(a)[0] for env, a in zip(envs, actions, strict=True)]
    states = [env.get_state() for env in envs]
    success = np.array([env.is_success(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)])
    distance = np.array([env.goal_distance(s, p["goal"]) for env, s, p in zip(envs, states, pairs, strict=True)])
    lat = np.array(controller.latencies)
    lo, hi = wilson_interval(int(success.sum()), len(success))
    results = {
        "env": cfg.env,
        "planner": cfg.planner,
        "episodes": cfg.episodes,
        "success_rate": float(success.mean()),
        "success_95ci": [round(lo, 3), round(hi, 3)],
        "final_distance": {"mean": float(distance.mean()), "median": float(np.median(distance))},
        "replan_latency_s": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "n": len(lat)},
        "problems_per_replan": cfg.episodes,
        "seconds": round(time.time() - started, 1),
        "per_episode": [
            {"success": bool(s), "distance": float(d), **p["source"]}
            for s, d, p in zip(success, distance, pairs, strict=True)
        ],
        "config": asdict(cfg),
        "checkpoint_step": config.get("step"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_media(out, real_frames, imagined_frames, [p["goal_obs"]["rgb"] for p in pairs[:n_vid]], success, lat)
    for env in envs:
        env.close()
    return results


def write_media(out: Path, real, imagined, goals, success, latencies) -> None:
    """Videos (real | imagined next block | goal) of the first episodes, and a success/latency plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wm.video import upscale, write_mp4

    real = np.stack(real, axis=1)  # (n, T, H, W, 3)
    imagined = np.stack(imagined, axis=1) if imagined else None  # (n, T, H, W, 3)
    for i in range(len(goals)):
        columns = [real[i]]
        if imagined is not None:
            columns.append(imagined[i])
        columns.append(np.repeat(goals[i][None], len(real[i]), axis=0))
        gap = np.full((*real[i].shape[:2], 2, 3), 255, np.uint8)
        clip = np.concatenate([c for col in columns for c in (col, gap)][:-1], axis=2)
        write_mp4(out / f"episode_{i}.mp4", upscale(clip, 4), fps=10)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.bar(["success", "failure"], [int(success.sum()), int((~success).sum())], color=["tab:green", "tab:red"])
    ax1.set_title(f"success {success.mean():.0%} of {len(success)}")
    ax2.hist(latencies, bins=20, color="tab:blue")
    ax2.set_xlabel("replan latency (s)")
    ax2.set_title(f"p50 {np.percentile(latencies, 50):.2f} s")
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=100)
    plt.close(fig)
