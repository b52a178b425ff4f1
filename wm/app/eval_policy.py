"""`wm eval-policy`: a policy toward goal images in the real env, judged by the env, as `wm plan` judges MPC.

Goals are held-out states 25 env steps ahead (the world model's held-out episodes of its training store, or of
`--data`; where neither is on this machine, expert episodes collected for the run into `OUT/goal_store`, all held
out: `wm.goals.goal_store`), starting at least a world-model history into their episode; pairs already solved at
the start are redrawn. Each episode runs exactly `--budget` env steps; the env judges success. The same start/goal
pairs run with zero actions (the trivial baseline) and, with `--imagined`, inside the world model (`wm.imagine`: the
same real history before the start, the same goal, the same number of blocks, the success head as the judge): the gap
between imagined and real success says how far to trust refinement in imagination. Writes `results.json`
(success rates with 95% Wilson intervals, distances, per-episode outcomes, config), videos (real | imagined |
goal) and `summary.png` (`wm.evaluation.goal_reaching`, as every goal-reaching command). The policy and its world
model run on `--device`; `--policy` (and `--world-model`) may be the `wm bc` / `wm refine --out` (`wm train --out`)
folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from wm.errors import WMError
from wm.outputs import require_empty_dir


@dataclass
class EvalPolicyConfig:
    policy: str
    env: str
    out: str
    episodes: int = 100
    budget: int = 50
    goal_offset: int = 25
    data: str | None = None  # goal store (default: the world model's training store, else fresh episodes)
    world_model: str | None = None  # default: the one the policy names
    imagined: bool = False
    stochastic: bool = False  # sample a Gaussian policy's actions instead of acting with its mean
    goal_velocity: str = "rest"
    seed: int = 0
    videos: int = 4
    device: str = "auto"  # auto | cpu | cuda[:K]


def run_eval_policy(cfg: EvalPolicyConfig) -> dict:
    from policies.checkpoint import load_policy
    from policies.evaluation import evaluate_policy
    from wm.device import resolve_device
    from wm.evaluation.goal_reaching import held_out_problems, write_report

    policy, config, model, wm_config = load_policy(cfg.policy, cfg.world_model, resolve_device(cfg.device))
    if cfg.imagined and model.success_mode is None:
        raise WMError("--imagined needs a world model with a success head to judge imagined episodes")
    out = require_empty_dir(cfg.out, "results")
    problems = held_out_problems(model.spec, wm_config.trained_on, cfg.env, episodes=cfg.episodes, budget=cfg.budget,
                                 goal_offset=cfg.goal_offset, seed=cfg.seed, data=cfg.data, scratch=out / "goal_store",
                                 goal_velocity=cfg.goal_velocity,
                                 what="policy evaluation")  # fmt: skip
    ev = evaluate_policy(policy, model, problems, problems.goals["store"], cfg.goal_offset, cfg.imagined, cfg.seed,
                         cfg.stochastic, cfg.videos)  # fmt: skip
    results = {"policy": cfg.policy, "world_model": config.world_model, **ev.results, "config": asdict(cfg)}
    write_report(out, results, problems, ev.run, ev.zero, ev.imagined, "policy call (ms)")  # only now: a failed
    problems.close()  # run leaves nothing behind (but fresh goals)
    return results
