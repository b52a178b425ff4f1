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
imagined plan | goal) and a plot of success and latency (`wm.evaluation.goal_reaching`, as every goal-reaching
command). The model and the planner run on `--device` (auto: CUDA when
there is one); `--checkpoint` is a checkpoint or a `wm train --out` folder. MPC settings not given explicitly come
from the checkpoint's planning preset (its config's `"plan"`), else the `MPCConfig` defaults. `--guide POLICY` (a
`wm bc` policy on this world model; a preset may name one, relative to the checkpoint, and `--guide none` turns it
off) guides the search: its rollouts in the model start and join each plan (`policies.guide`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from planners.mpc import MPCConfig, build_mpc, with_preset
from wm.errors import WMError
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

    def validate(self) -> None:
        if self.goal_source not in ("dataset", "random"):
            raise WMError(f"--goal-source must be dataset or random, got {self.goal_source!r}")
        if self.goal_velocity not in ("rest", "observed"):
            raise WMError(f"--goal-velocity must be rest or observed, got {self.goal_velocity!r}")


def plan_problems(cfg: PlanConfig, model, config, out: Path):
    """The run's goal-reaching problems (`wm.evaluation.goal_reaching`): held-out pairs, or random ones."""
    from wm.evaluation.goal_reaching import held_out_problems, random_problems

    if cfg.goal_source == "random":
        return random_problems(model.spec, config.trained_on, cfg.env, episodes=cfg.episodes, budget=cfg.budget,
                               seed=cfg.seed, goal_velocity=cfg.goal_velocity)  # fmt: skip
    return held_out_problems(model.spec, config.trained_on, cfg.env, episodes=cfg.episodes, budget=cfg.budget,
                             goal_offset=cfg.goal_offset, seed=cfg.seed, data=cfg.data, scratch=out / "goal_store",
                             goal_velocity=cfg.goal_velocity, what="`wm plan`")  # fmt: skip


def run_plan(cfg: PlanConfig, loaded=None) -> dict:
    """MPC on the run's problems beside the zero-action baseline; writes and returns `results.json`. `loaded`: the
    checkpoint's `(model, config)` already loaded (`load_checkpoint`), e.g. by `wm demo`."""
    import time

    from policies.guide import load_guide
    from wm.device import module_device, resolve_device
    from wm.evaluation.goal_reaching import decoded_plan, goal_report, run_controller, run_zero_actions, write_report
    from wm.models.checkpoint import load_checkpoint

    cfg.validate()
    model, config = loaded or load_checkpoint(cfg.checkpoint, resolve_device(cfg.device))
    config.trained_on.require_env(cfg.env)
    out = require_empty_dir(cfg.out, "results")
    torch.manual_seed(cfg.seed)
    cfg = replace(cfg, mpc=with_preset(cfg.mpc, config.plan_preset))
    guide = load_guide(cfg.mpc.guide, config.path, model, cfg.mpc.guide_samples, cfg.seed)
    controller = build_mpc(model, cfg.mpc, seed=cfg.seed, device=module_device(model), guide=guide)
    problems = plan_problems(cfg, model, config, out)  # fresh goals are collected into out/goal_store, only now
    started = time.time()
    run = run_controller(problems, controller, f"plan {cfg.mpc.planner}", cfg.videos, decoded_plan(model, controller))
    zero = run_zero_actions(problems, model.spec.action_dim)
    results = {"planner": cfg.mpc.planner, **goal_report(problems, run, zero, started=started),
               "problems_per_replan": cfg.episodes, "config": {**cfg.to_json(), "plan_preset": config.plan_preset},
               "checkpoint_step": config.step}  # fmt: skip
    write_report(out, results, problems, run, zero, latency_label="replan (ms)")
    problems.close()
    return results
