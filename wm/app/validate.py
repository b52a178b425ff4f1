"""`wm validate`: run a controller on a robot over the network bridge and record every episode.

For each episode: the robot is reset to the goal's start state (simulated robots: the `reset` extension; real
robots: the operator resets the scene and presses Enter), the controller is given the goal image, the control
loop runs `--budget` steps at `--hz`, the final observation is recorded and the judge decides success:
  latent    the visual-latent MSE between final observation and goal under the checkpoint's encoder is below
            `--threshold` (default 1.0: on held-out PointMaze pairs 1% false successes, a quarter of true ones);
  operator  a y/n answer on stdin.
Simulated robots also report the env's own success flag; it is recorded as ground truth (`success`) and never
reaches the controller.

Written to `--out DIR`:
  store/               episode store (open with `wm info DIR/store`), one frame per step plus the final frame:
                       rgb, proprio, action (what the robot sent), action_requested (what the controller asked),
                       plan (K, A) the action chunk the step's action came from, plan_step (step of the
                       observation it was planned from; -1 on the final frame), new_plan, t_observe / t_plan /
                       t_send / t_step (s), late, safety (a guard event arrived with this step's reply),
                       success (ground truth where the robot reports it, else the verdict on the final frame),
                       judged_success (the verdict, final frame), complete (False for an episode cut short by a
                       robot failure), goal_latent_distance (with a checkpoint), state / goal (simulated robots).
                       The final frame has action 0, as in every store.
  safety_events.jsonl  every guard event the robot reported: wall time, reason, detail, episode, step
  results.json         success rate (judged, and ground truth), latencies p50/p95 per loop section and per replan,
                       safety event counts, per-episode outcomes, the config (without the token); rewritten after
                       every episode, so it survives a failure
  summary.png          success per episode and step latency
Episodes are appended as they finish; if the robot fails mid-episode, the partial episode is saved with
`complete=False`, the results are written and the error is reported in one line.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wm.app.validate_record import SECTIONS, EpisodeRecorder, latent_distance, store_keys, write_plot
from wm.errors import WMError


@dataclass
class ValidateConfig:
    robot: str
    token: str
    controller: str
    episodes: int
    out: str
    checkpoint: str | None = None
    budget: int | None = None  # control steps per episode (default: the env's episode length, else 100)
    goals: str | None = None  # .npz with rgb (G, H, W, 3), proprio (G, P) and optional start / goal states
    goal_store: str | None = None  # held-out episodes of this store (goal `goal_offset` steps after the start)
    goal_offset: int = 25
    judge: str | None = None  # latent | operator (default: latent with a checkpoint, else operator)
    threshold: float = 1.0
    hz: float | None = None  # default: the robot's control rate, else 10
    async_plan: bool = False
    chunk: int = 5  # actions per chunk of the random controller
    planner: str = "cem"
    samples: int = 300
    iterations: int = 10
    elites: int = 30
    horizon: int = 8
    replan_every: int = 1
    bf16: bool = False  # world-model rollouts under bfloat16 autocast
    seed: int = 0
    timeout: float = 2.0  # seconds per request before a retry

    def validate(self) -> None:
        if self.controller not in ("mpc", "random"):
            raise WMError(f"--controller must be mpc or random, got {self.controller!r}")
        if self.controller == "mpc" and not self.checkpoint:
            raise WMError("--controller mpc needs --checkpoint C (a world model trained on this robot's data)")
        if self.judge is None:
            self.judge = "latent" if self.checkpoint else "operator"
        if self.judge not in ("latent", "operator"):
            raise WMError(f"--judge must be latent or operator, got {self.judge!r}")
        if self.judge == "latent" and not self.checkpoint:
            raise WMError("--judge latent needs --checkpoint C (its encoder measures the goal distance)")
        if self.goals and self.goal_store:
            raise WMError("pass either --goals FILE or --goal-store STORE, not both")
        if self.goals and not Path(self.goals).is_file():
            raise WMError(f"goal file {self.goals} not found; pass an .npz with rgb (G, H, W, 3) and proprio (G, P)")
        if self.hz is not None and not 0 < self.hz <= 1000:
            raise WMError(f"--hz must be in (0, 1000], got {self.hz}")
        if not 0 < self.timeout <= 60:
            raise WMError(f"--timeout must be in (0, 60] seconds, got {self.timeout}")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise WMError(f"{out} already exists and is not empty; pass a new --out directory")


# ----------------------------------------------------------------------------------------------- goals
def load_goals(cfg: ValidateConfig, ckpt_config: dict | None, rng: np.random.Generator) -> tuple[list[dict], str]:
    """`([{"goal_obs": {rgb, proprio}, "start": state | None, "goal": state | None, "source": {...}}], env id)`
    (the env id of a goal store, "" for a goal file)."""
    if cfg.goals:
        return _file_goals(Path(cfg.goals)), ""
    from wm.app.plan import PlanConfig, dataset_goals
    from wm.data.store import EpisodeStore

    store = cfg.goal_store or (ckpt_config or {}).get("data", {}).get("store")
    if not store:
        raise WMError("no goals: pass --goals FILE.npz or --goal-store STORE (or a --checkpoint with its store)")
    config = ckpt_config
    if config is None:  # no checkpoint, so no held-out split: every episode of the store is a goal source
        with EpisodeStore.open(store) as s:
            config = {"data": {"spec": s.spec, "store": ""}}
    env_id = config["data"]["spec"]["env"]["id"]
    plan_cfg = PlanConfig(checkpoint="", env=env_id, episodes=cfg.episodes, data=store, goal_offset=cfg.goal_offset)
    return dataset_goals(plan_cfg, config, rng), env_id


def _file_goals(path: Path) -> list[dict]:
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise WMError(
            f"cannot read goals from {path} ({e}); pass an .npz with rgb (G, H, W, 3) and proprio (G, P)"
        ) from None
    if "rgb" not in arrays or "proprio" not in arrays:
        raise WMError(f"{path} holds {sorted(arrays)}; goal files need rgb (G, H, W, 3) and proprio (G, P)")
    n = len(arrays["rgb"])
    if arrays["rgb"].ndim != 4 or arrays["proprio"].ndim != 2 or len(arrays["proprio"]) != n or n == 0:
        raise WMError(f"{path}: rgb must be (G, H, W, 3) and proprio (G, P) with the same G > 0")
    return [
        {
            "goal_obs": {"rgb": arrays["rgb"][i].astype(np.uint8), "proprio": arrays["proprio"][i].astype(np.float32)},
            "start": arrays["start"][i] if "start" in arrays else None,
            "goal": arrays["goal"][i] if "goal" in arrays else None,
            "source": {"file": str(path), "index": i},
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------- controllers
def make_policy(cfg: ValidateConfig, model, action):
    """`(policy(obs) -> (K, A), reset(goal_obs), replan_latencies() -> seconds of this episode's replans)`."""
    if cfg.controller == "random":
        rng = np.random.default_rng(cfg.seed)
        low, high = np.asarray(action.low, np.float32), np.asarray(action.high, np.float32)
        policy = lambda obs: rng.uniform(low, high, (cfg.chunk, len(low))).astype(np.float32)  # noqa: E731
        return policy, (lambda goal: None), list
    import torch

    from wm.app.plan import PlanConfig, make_controller

    fields = ("checkpoint", "planner", "samples", "iterations", "elites", "horizon", "replan_every", "bf16", "seed")
    plan_cfg = PlanConfig(env="", **{k: getattr(cfg, k) for k in fields})
    torch.manual_seed(cfg.seed)
    controller = make_controller(model, plan_cfg)

    def policy(obs: dict) -> np.ndarray:  # one world-model block: frameskip actions from this observation
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        return np.stack([controller.act(batch)[0].cpu().numpy() for _ in range(controller.frameskip)])

    def reset(goal_obs: dict) -> None:
        controller.reset({k: np.asarray(v)[None] for k, v in goal_obs.items()})

    return policy, reset, lambda: list(controller.latencies)


def check_model_fits(spec: dict, robot) -> None:
    obs, action = robot.observation_features, robot.action_features
    size = spec["image_size"]
    if obs["rgb"].shape != (size, size, 3):
        raise WMError(f"the robot sends {obs['rgb'].shape} images, the checkpoint takes ({size}, {size}, 3)")
    if action.shape != (spec["env_action_dim"],):
        raise WMError(f"the robot takes {action.shape} actions, the checkpoint plans {spec['env_action_dim']}")


def check_goals_fit(goals: list[dict], goal_env: str, env_id: str, robot) -> None:
    obs = robot.observation_features
    g = goals[0]["goal_obs"]
    if g["rgb"].shape != obs["rgb"].shape or g["proprio"].shape != obs["proprio"].shape:
        raise WMError(
            f"goal images {g['rgb'].shape} / proprio {g['proprio'].shape} do not match the robot's "
            f"{obs['rgb'].shape} / {obs['proprio'].shape}; pass goals recorded on this robot"
        )
    if goal_env and robot.info["name"].startswith("sim:") and goal_env != env_id:
        raise WMError(f"the goals come from {goal_env} but the robot simulates {env_id}; pass a store of {env_id}")


# -------------------------------------------------------------------------------------------- judging
def ask_operator(prompt: str) -> bool | None:
    """y/n from stdin; None when stdin is closed."""
    while True:
        print(prompt, end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            return None
        if line.strip().lower() in ("y", "yes", "n", "no"):
            return line.strip().lower().startswith("y")


# ------------------------------------------------------------------------------------------------ the run
def run_validate(cfg: ValidateConfig) -> dict:
    """Run `cfg.episodes` episodes on the robot at `cfg.robot`; returns the results also written to results.json."""
    from envs.registry import default_episode_steps, is_builtin
    from envs.robot.client import RemoteRobot

    cfg.validate()
    robot = RemoteRobot(cfg.robot, cfg.token, timeout_s=cfg.timeout)
    model = ckpt_config = None
    if cfg.checkpoint:
        from wm.models.checkpoint import load_checkpoint

        model, ckpt_config = load_checkpoint(cfg.checkpoint)
    robot.connect()
    try:
        if model is not None:
            check_model_fits(model.spec, robot)
        goals, goal_env = load_goals(cfg, ckpt_config, np.random.default_rng(cfg.seed))
        env_id = robot.info["name"].removeprefix("sim:")
        check_goals_fit(goals, goal_env, env_id, robot)
        budget = cfg.budget or (default_episode_steps(env_id) if is_builtin(env_id) else 100)
        hz = cfg.hz or robot.control_hz or 10.0
        policy, reset_policy, replan_latencies = make_policy(cfg, model, robot.action_features)
        chunk = model.spec["frameskip"] if cfg.controller == "mpc" else cfg.chunk
        has_goal_states = all(g["goal"] is not None for g in goals)
        keys = store_keys(robot, chunk, model is not None, has_goal_states)
        return _episodes(cfg, robot, model, goals, budget, hz, policy, reset_policy, replan_latencies, chunk, keys)
    finally:
        robot.disconnect()


def _episodes(cfg, robot, model, goals, budget, hz, policy, reset_policy, replan_latencies, chunk, keys) -> dict:
    from envs.robot.loop import ControlLoop
    from envs.robot.protocol import RobotError
    from wm.data.store import EpisodeStore

    out = Path(cfg.out)
    action = robot.action_features
    spec = {
        "env": {"id": robot.info["name"], "image_size": keys["rgb"]["shape"][0], "episode_steps": budget + 1},
        "observation": {"rgb": keys["rgb"], "proprio": keys["proprio"]},
        "action": {"shape": list(action.shape), "low": action.low, "high": action.high, "alignment": "sent action"},
        "validation": {"controller": cfg.controller, "checkpoint": cfg.checkpoint, "hz": hz, "robot": cfg.robot},
    }
    store = EpisodeStore.create(out / "store", keys, spec)
    has_truth = "sim_success" in robot.observation_features
    loop = ControlLoop(robot, policy, hz, async_plan=cfg.async_plan, refill_at=max(1, chunk // 2))
    state = {"per_episode": [], "steps": {k: [] for k in SECTIONS}, "replans": [], "late": 0, "dropped": 0}
    state["aborted"] = None
    events_file = out / "safety_events.jsonl"
    started = time.time()
    bar = tqdm(total=cfg.episodes * budget, desc=f"validate {cfg.controller}", unit="step")
    try:
        for episode in range(cfg.episodes):
            goal = goals[episode % len(goals)]
            recorder = EpisodeRecorder(keys, chunk, action.shape[0])
            seen = len(robot.events)

            def on_step(record, recorder=recorder, goal=goal, episode=episode):
                nonlocal seen
                recorder.add(record, model, goal["goal_obs"], safety=len(robot.events) > seen)
                _log_events(events_file, robot.events[seen:], episode, record.step)
                seen = len(robot.events)
                bar.update(1)

            complete, verdict = False, False
            try:
                _reset_robot(robot, goal, episode)
                reset_policy(goal["goal_obs"])
                stats = loop.run(budget, on_step)
                final = robot.get_observation()
                recorder.add_final(final, model, goal["goal_obs"])
                complete = True
            except (RobotError, KeyboardInterrupt) as e:
                state["aborted"] = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
                stats = loop.stats
            if complete:
                verdict = _judge(cfg, model, final, goal, episode)
            if recorder.rows:
                arrays = recorder.arrays(complete, bool(verdict), goal["goal"], has_truth)
                store.append_episode(arrays)
                state["per_episode"].append(
                    {
                        "episode": episode,
                        "complete": complete,
                        "judged_success": bool(verdict),
                        "truth_success": bool(arrays["success"][-1]) if has_truth else None,
                        "final_goal_latent_distance": float(arrays["goal_latent_distance"][-1])
                        if "goal_latent_distance" in arrays
                        else None,
                        "steps": stats.steps,
                        "late_steps": stats.late_steps,
                        "rate_hz": round(stats.rate_hz, 2),
                        "safety_events": int(arrays["safety"].sum()),
                        "goal_source": goal["source"],
                    }
                )
                state["replans"].extend(replan_latencies())
                for k in SECTIONS:
                    state["steps"][k].extend(arrays[k][:-1] if complete else arrays[k])
                state["late"] += stats.late_steps
                state["dropped"] += stats.dropped_actions
            results = _results(cfg, robot, state, hz, budget, has_truth, time.time() - started)
            (out / "results.json").write_text(json.dumps(results, indent=2))
            if state["aborted"] is not None:
                break
            if verdict is None:
                state["aborted"] = "the operator judge got no answer (stdin closed)"
                break
            bar.set_postfix(success=f"{sum(e['judged_success'] for e in state['per_episode'])}/{episode + 1}")
    finally:
        bar.close()
        if store.num_episodes:
            record = {"kind": "validation", "policy": cfg.controller, **_public(cfg)}
            store.record_collection({**record, "episodes_written": store.num_episodes, "steps": budget})
        store.close()
    if state["per_episode"]:
        write_plot(out / "summary.png", state, hz)
    if state["aborted"] is not None:
        kept = sum(e["complete"] for e in state["per_episode"])
        partial = len(state["per_episode"]) - kept
        raise WMError(
            f"validation stopped at episode {len(state['per_episode']) - partial}: {state['aborted']}; "
            f"{kept} complete episode(s){' and the partial one' if partial else ''} are saved in {out}"
        )
    return results


def _reset_robot(robot, goal: dict, episode: int) -> None:
    if robot.can_reset:
        options = {k: np.asarray(goal[k], np.float64) for k in ("start", "goal") if goal[k] is not None}
        robot.reset({"state" if k == "start" else k: v for k, v in options.items()})
    else:
        print(f"episode {episode}: put the robot in its start pose, then press Enter", file=sys.stderr, flush=True)
        sys.stdin.readline()


def _judge(cfg: ValidateConfig, model, final: dict, goal: dict, episode: int) -> bool | None:
    if cfg.judge == "latent":
        return latent_distance(model, final, goal["goal_obs"]) < cfg.threshold
    return ask_operator(f"episode {episode}: did the robot reach the goal? [y/n] ")


def _log_events(path: Path, events: list[dict], episode: int, step: int) -> None:
    if events:
        with path.open("a") as f:
            for e in events:
                f.write(json.dumps({**e, "episode": episode, "loop_step": step}) + "\n")


def _public(cfg: ValidateConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "token"}


def _percentiles(values) -> dict:
    v = np.asarray(values, np.float64) * 1000
    if not len(v):
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": round(float(np.percentile(v, 50)), 2), "p95": round(float(np.percentile(v, 95)), 2), "n": len(v)}


def _results(cfg, robot, state, hz, budget, has_truth, seconds) -> dict:
    from wm.app.plan import wilson_interval

    episodes = [e for e in state["per_episode"] if e["complete"]]
    wins = sum(e["judged_success"] for e in episodes)
    lo, hi = wilson_interval(wins, len(episodes))
    results = {
        "robot": cfg.robot,
        "robot_name": robot.info["name"] if robot.info else None,
        "controller": cfg.controller,
        "episodes_requested": cfg.episodes,
        "episodes_complete": len(episodes),
        "aborted": state["aborted"],
        "judge": {"kind": cfg.judge, "threshold": cfg.threshold if cfg.judge == "latent" else None},
        "success_rate": wins / len(episodes) if episodes else None,
        "success_95ci": [round(lo, 3), round(hi, 3)],
        "truth_success_rate": (sum(e["truth_success"] for e in episodes) / len(episodes))
        if has_truth and episodes
        else None,
        "latency_ms": {k.removeprefix("t_"): _percentiles(v) for k, v in state["steps"].items()},
        "replan_latency_ms": _percentiles(state["replans"]),
        "loop": {
            "hz_target": hz,
            "hz_achieved": round(sum(e["rate_hz"] for e in episodes) / len(episodes), 2) if episodes else None,
            "late_steps": state["late"],
            "dropped_stale_actions": state["dropped"],
            "steps": len(state["steps"]["t_step"]),
            "budget": budget,
        },
        "safety_events": {"total": len(robot.events), "by_reason": dict(Counter(e["reason"] for e in robot.events))},
        "seconds": round(seconds, 1),
        "per_episode": state["per_episode"],
        "config": _public(cfg),
        "store": str(Path(cfg.out) / "store"),
    }
    return results


def print_summary(results: dict) -> None:
    """One paragraph: outcome, loop timing, safety, where everything is."""
    lat, loop = results["latency_ms"], results["loop"]
    truth = results["truth_success_rate"]
    out = Path(results["store"]).parent
    print(
        f"Validated {results['episodes_complete']} episode(s) of {results['controller']} on {results['robot_name']}: "
        f"success {results['success_rate']:.0%} by the {results['judge']['kind']} judge"
        + (f" ({truth:.0%} by the simulator's ground truth)" if truth is not None else "")
        + f". The loop ran at {loop['hz_achieved']} Hz for a {loop['hz_target']:g} Hz target, {loop['late_steps']} "
        f"late step(s); per step observe {lat['observe']['p50']} ms, plan {lat['plan']['p50']} ms, send "
        f"{lat['send']['p50']} ms (p50), step p95 {lat['step']['p95']} ms"
        + (f", replan p50 {results['replan_latency_ms']['p50']} ms" if results["replan_latency_ms"]["n"] else "")
        + f". The guard reported {results['safety_events']['total']} safety event(s)"
        + (f" {results['safety_events']['by_reason']}" if results["safety_events"]["total"] else "")
        + f". Recorded to {out}/store (`wm info {out}/store`), "
        f"{out}/results.json and {out}/summary.png."
    )
