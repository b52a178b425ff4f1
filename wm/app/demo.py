"""`wm demo`: the main job end to end on a built-in env, offline, on a CPU, ending with where the results are.

Pipeline: collect noisy-expert and random-action episodes (the random ones show the model what walls and
contacts do, which expert data alone never shows) -> train a JEPA world model (a fixed number of steps, so the
same model on an idle or a busy machine; a time limit guards it) -> evaluate its open-loop
predictions on held-out episodes against copy-last -> video of real vs imagined frames -> MPC with iCEM from goal
images of held-out episodes (iCEM replans ~2x faster than CEM at the same settings, which keeps the demo inside 10
minutes on 2 cores), success judged by the env after a fixed budget. Each stage prints what it did;
`demo.json` (the config) and `report.json` sit next to every artefact in a fresh run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from planners.mpc import MPCConfig
from wm.app.info import print_info
from wm.app.plan import PlanConfig, run_plan
from wm.app.train import TrainRunConfig, run_train
from wm.data.collection import CollectConfig, run_collect
from wm.data.summary import summarize
from wm.device import native_bf16, resolve_device
from wm.errors import WMError
from wm.evaluation.open_loop import evaluate, imagine_episode
from wm.models.checkpoint import load_checkpoint


@dataclass
class DemoConfig:
    env: str = "wm/PointMaze-v0"  # a built-in env id
    out: str = "runs/demo"  # parent directory for the run (a new subfolder is made)
    episodes: int = 100  # noisy-expert episodes to collect
    random_episodes: int = 50  # random-action episodes to collect
    train_steps: int = 2500  # training steps of the world model: the same model on an idle or a busy machine
    train_minutes: float = 10.0  # a guard: training stops here even if its steps are not done, in (0, 600]
    refine: bool = False  # then clone a policy and refine it in imagination
    seed: int = 0
    plan_goals: int = 20  # held-out goal images MPC plans toward


def new_run_dir(parent) -> Path:
    """A fresh folder `parent/<timestamp>[-k]`: a demo never overwrites an earlier run."""
    parent = Path(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(100):
        run = parent / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            run.mkdir(parents=True, exist_ok=False)
            return run
        except FileExistsError:
            continue
        except OSError as e:
            raise WMError(f"cannot create {run}: {e.strerror}; pass a writable --out") from e
    raise WMError(f"too many runs started this second in {parent}; try again")


def run_refine_stage(run: Path, env_id: str, seed: int) -> dict:
    """`wm demo --refine`: clone a Gaussian policy from 30 of the demo's expert episodes, refine it with PPO inside
    the demo's world model (no real step), and run both on the same held-out goals in the real env."""
    from wm.app.bc import BCConfig, run_bc
    from wm.app.refine import RefineRunConfig, run_refine

    print("[6/7] behaviour cloning a Gaussian policy from 30 expert episodes on the world model's latents")
    bc = run_bc(BCConfig(data=str(run / "data"), world_model=str(run / "model" / "model"), policy="gaussian",
                         out=str(run / "bc"), demos=30, steps=2000, seed=seed))  # fmt: skip
    print("[7/7] PPO inside the world model (no real env step), then BC and refined on the same held-out goals")
    refine_cfg = RefineRunConfig(policy=bc["checkpoint"], algo="ppo", out=str(run / "refine"),
                                 imagined_steps=262_144, eval_env=env_id, eval_episodes=50, seed=seed)  # fmt: skip
    refined = run_refine(refine_cfg)
    real = refined["real"]
    print(f"  real success: BC {real['bc']:.0%}, refined {real['refined']:.0%} (imagined "
          f"{real['refined_imagined']:.0%}); curve {run / 'refine' / 'curve.png'}")  # fmt: skip
    return {"bc": bc["checkpoint"], "refined": refined["policy"], "real": real}


def open_loop_stages(run: Path, stages: int, model, config) -> tuple[dict, dict]:
    """Stages 3 and 4: the trained model's open-loop predictions on held-out episodes against copy-last
    (`eval.json`), and a video of real | imagined frames of the first held-out episode."""
    print(f"[3/{stages}] open-loop predictions on held-out episodes vs copy-last-frame")
    evaluation = evaluate(model, config, run / "data", horizon=5, max_windows=256)
    (run / "eval.json").write_text(json.dumps(evaluation, indent=2))
    model_err, copy_err = evaluation["latent_mse"]["model"], evaluation["latent_mse"]["copy_last"]
    for k, (m, c) in enumerate(zip(model_err, copy_err, strict=True), start=1):
        print(f"  horizon {k}: model {m:.4f}  copy-last {c:.4f}  {'better' if m < c else 'WORSE'}")
    print(f"[4/{stages}] video: real frames | imagined frames")
    video = imagine_episode(model, run / "data", config.trained_on.val_episodes[0], run / "imagined.mp4")
    return evaluation, video


def plan_stage(cfg: DemoConfig, run: Path, stages: int, loaded) -> dict:
    """Stage 5: MPC with iCEM toward goal images of held-out episodes, judged by the env."""
    print(f"[5/{stages}] MPC with iCEM toward {cfg.plan_goals} goal images of held-out episodes (25 steps ahead, "
          "50-step budget)")  # fmt: skip
    plan_cfg = PlanConfig(
        checkpoint=str(run / "model" / "model"),
        env=cfg.env,
        episodes=cfg.plan_goals,
        out=str(run / "plan"),
        seed=cfg.seed,
        mpc=MPCConfig(planner="icem", bf16=native_bf16()),
    )
    planned = run_plan(plan_cfg, loaded)
    lo, hi = planned["success_95ci"]
    print(
        f"  success {planned['success_rate']:.0%} (95% CI {lo:.0%}-{hi:.0%}), replan p50 "
        f"{planned['decision_latency_ms']['p50'] / 1000:.2f} s for {cfg.plan_goals} problems at once"
    )
    return planned


def run_demo(cfg: DemoConfig) -> Path:
    from envs.registry import is_builtin

    if not is_builtin(cfg.env):
        raise WMError(f"`wm demo` runs on the built-in envs; {cfg.env!r} is not one (see `wm envs`)")
    if not 0 < cfg.train_minutes <= 600:
        raise WMError(f"--train-minutes must be in (0, 600], got {cfg.train_minutes}")
    if cfg.train_steps < 1:
        raise WMError(f"--train-steps must be at least 1, got {cfg.train_steps}")
    started = time.time()
    stages = 7 if cfg.refine else 5
    run = new_run_dir(cfg.out)
    data = str(run / "data")
    collects = [CollectConfig(env=cfg.env, episodes=cfg.episodes, out=data, seed=cfg.seed)]
    if cfg.random_episodes:
        collects.append(
            CollectConfig(env=cfg.env, episodes=cfg.random_episodes, out=data, policy="random", seed=cfg.seed + 1)
        )
    train_cfg = TrainRunConfig(data=data, model="jepa", out=str(run / "model"), steps=cfg.train_steps,
                               overrides={"time_limit_s": round(cfg.train_minutes * 60), "seed": cfg.seed})  # fmt: skip
    config = {"collect": [asdict(c) for c in collects], "train": asdict(train_cfg)}
    (run / "demo.json").write_text(json.dumps(config, indent=2))

    print(f"[1/{stages}] collecting {cfg.episodes} noisy-expert and {cfg.random_episodes} random-action episodes of "
          f"{cfg.env}")  # fmt: skip
    collected = [run_collect(c) for c in collects]
    print_info(summarize(run / "data"))

    print(f"[2/{stages}] training a JEPA world model for {cfg.train_steps} steps (at most {cfg.train_minutes:g} min)")
    trained = run_train(train_cfg)
    loaded = load_checkpoint(run / "model" / "model", resolve_device("auto"))  # once, for stages 3 to 5
    evaluation, video = open_loop_stages(run, stages, *loaded)
    planned = plan_stage(cfg, run, stages, loaded)
    refined = run_refine_stage(run, cfg.env, cfg.seed) if cfg.refine else None

    report = {
        "env": cfg.env,
        "collect": collected,
        "train": trained,
        "eval": {k: evaluation[k] for k in ("latent_mse", "beats_copy_last_every_step", "windows", "held_out")},
        "video": video["video"],
        "plan": {k: planned[k] for k in ("success_rate", "success_95ci", "final_distance", "decision_latency_ms")},
        **({"refine": refined} if refined is not None else {}),
        "seconds": round(time.time() - started, 1),
    }
    (run / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"done in {report['seconds']} s: success {planned['success_rate']:.0%}; report {run / 'report.json'}, "
        f"videos {video['video']} and {run / 'plan'}/episode_*.mp4, checkpoint {run / 'model' / 'model'}"
    )
    return run
