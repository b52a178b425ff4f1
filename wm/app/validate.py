"""`wm validate`: run a controller on a robot over the network bridge and record every episode.

Goals come from `--goals F.npz` (rgb, proprio and optional start/goal states, e.g. recorded on the robot) or from
the held-out episodes of a store (`--goal-store`, default the checkpoint's training store). Controllers: `mpc`
(the checkpoint's world model, planning as `wm plan` does), `policy` (a `wm bc` policy on its world model's
latents) or `random` (the trivial baseline). Judges (`wm.validation.judges`): `latent` (goal distance under the
checkpoint's encoder), `sim` (a simulated robot's own success test, reported with every observation) or `operator`
(y/n on stdin); by default `latent` with a checkpoint, else `sim` on a simulated robot, else `operator`. What a run
records, and where, is in `wm.validation.session`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from envs.controller import Controller
from planners.mpc import MPCConfig, with_preset
from wm.errors import WMError
from wm.models.protocol import ModelSpec
from wm.outputs import require_empty_dir

JUDGES = ("latent", "sim", "operator")


@dataclass
class ValidateConfig:
    robot: str
    token: str
    controller: str
    episodes: int
    out: str
    checkpoint: str | None = None
    policy: str | None = None  # policy checkpoint (--controller policy)
    budget: int | None = None  # control steps per episode (default: the env's episode length, else 100)
    goals: str | None = None  # .npz with rgb (G, H, W, 3), proprio (G, P) and optional start / goal states
    goal_store: str | None = None  # held-out episodes of this store (goal `goal_offset` steps after the start)
    goal_offset: int = 25
    judge: str | None = None  # latent | sim | operator (default: see `resolve_judge`)
    threshold: float = 1.0
    hz: float | None = None  # default: the robot's control rate, else 10
    async_plan: bool = False
    chunk: int = 5  # actions per chunk of the random controller
    seed: int = 0
    timeout: float = 2.0  # seconds per request before a retry
    server_key: str | None = None  # the server's Curve public key file, when it encrypts (wm robot keygen)
    device: str = "auto"  # where the world model and policy run: auto | cpu | cuda[:K]
    mpc: MPCConfig = field(default_factory=MPCConfig)

    def validate(self) -> None:
        if self.controller not in ("mpc", "policy", "random"):
            raise WMError(f"--controller must be mpc, policy or random, got {self.controller!r}")
        if self.controller == "mpc" and not self.checkpoint:
            raise WMError("--controller mpc needs --checkpoint C (a world model trained on this robot's data)")
        if (self.controller == "policy") != bool(self.policy):
            raise WMError("--controller policy goes with --policy P (a policy made by `wm bc`), and only with it")
        self.validate_link()
        if self.goals and self.goal_store:
            raise WMError("pass either --goals FILE or --goal-store STORE, not both")
        if self.goals and not Path(self.goals).is_file():
            raise WMError(f"goal file {self.goals} not found; pass an .npz with rgb (G, H, W, 3) and proprio (G, P)")
        require_empty_dir(self.out, "a validation run")

    def validate_link(self) -> None:
        """The settings of the robot link and the judge (what `wm improve --robot` shares)."""
        if self.judge not in (None, *JUDGES):
            raise WMError(f"--judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if self.judge == "latent" and not (self.checkpoint or self.policy):
            raise WMError("--judge latent needs --checkpoint C (its encoder measures the goal distance)")
        if self.hz is not None and not 0 < self.hz <= 1000:
            raise WMError(f"--hz must be in (0, 1000], got {self.hz}")
        if not 0 < self.timeout <= 60:
            raise WMError(f"--timeout must be in (0, 60] seconds, got {self.timeout}")

    def to_json(self) -> dict:
        """The settings as the flags give them, flat, without the token."""
        top = {k: v for k, v in asdict(self).items() if k not in ("mpc", "token")}
        return {**top, **asdict(self.mpc)}


def load_goals(cfg: ValidateConfig, trained_on, rng: np.random.Generator) -> tuple[list[dict], str]:
    """`(start/goal pairs (see wm.goals), env id)`: the env id of a goal store, "" for a goal file. `trained_on`:
    the checkpoint's `TrainedOn` (its held-out episodes are the goals), None without a checkpoint."""
    from wm.data.store import EpisodeStore
    from wm.goals import dataset_goals, file_goals
    from wm.models.checkpoint_config import TrainedOn

    if cfg.goals:
        return file_goals(Path(cfg.goals)), ""
    store = cfg.goal_store or (trained_on.store if trained_on is not None else None)
    if not store:
        raise WMError("no goals: pass --goals FILE.npz or --goal-store STORE (or a --checkpoint with its store)")
    if trained_on is None:  # no checkpoint, so no held-out split: every episode of the store is a goal source
        with EpisodeStore.open(store) as s:
            trained_on = TrainedOn("", s.spec)
    return dataset_goals(store, trained_on, cfg.episodes, cfg.goal_offset, rng), trained_on.env_id


def resolve_judge(cfg: ValidateConfig, robot) -> str:
    """The judge `cfg` names, else `latent` with a checkpoint, `sim` on a robot that reports `sim_success`, else
    `operator`; `sim` on a robot without ground truth is a one-line error."""
    simulated = "sim_success" in robot.observation_features
    if cfg.judge == "sim" and not simulated:
        raise WMError(f"--judge sim needs a simulated robot (one reporting sim_success); {robot.name} is not one")
    if cfg.judge is not None:
        return cfg.judge
    return "latent" if cfg.checkpoint or cfg.policy else "sim" if simulated else "operator"


def make_judge(cfg: ValidateConfig, model):
    """The judge `cfg.judge` names (after `resolve_judge`)."""
    from wm.validation.judges import LatentJudge, OperatorJudge, SimJudge

    if cfg.judge == "latent":
        return LatentJudge(model, cfg.threshold)
    return SimJudge() if cfg.judge == "sim" else OperatorJudge()


def check_model_fits(spec: ModelSpec, robot) -> None:
    obs, action = robot.observation_features, robot.action_features
    size = spec.image_size
    if obs["rgb"].shape != (size, size, 3):
        raise WMError(f"the robot sends {obs['rgb'].shape} images, the checkpoint takes ({size}, {size}, 3)")
    if action.shape != (spec.action_dim,):
        raise WMError(f"the robot takes {action.shape} actions, the checkpoint plans {spec.action_dim}")


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


def make_controller(cfg: ValidateConfig, model, robot, policy=None) -> tuple[Controller, int]:
    """The controller `cfg` names (`envs.controller.Controller`, driving one robot) and its chunk length."""
    if cfg.controller == "random":
        from envs.controller import RandomController

        action = robot.action_features
        controller = RandomController(action.low, action.high, cfg.chunk, cfg.seed)
    elif cfg.controller == "policy":
        from policies.controller import PolicyController

        controller = PolicyController(policy, model, seed=cfg.seed)
    else:
        import torch

        from planners.mpc import build_mpc
        from policies.guide import load_guide
        from wm.device import module_device

        torch.manual_seed(cfg.seed)
        guide = load_guide(cfg.mpc.guide, cfg.checkpoint, model, cfg.mpc.guide_samples, cfg.seed)
        controller = build_mpc(model, cfg.mpc, seed=cfg.seed, device=module_device(model), guide=guide)
    return controller, controller.chunk


def run_validate(cfg: ValidateConfig) -> dict:
    """Run `cfg.episodes` episodes on the robot at `cfg.robot`; returns the results also written to results.json."""
    from envs.registry import default_episode_steps, is_builtin
    from envs.robot.client import RemoteRobot
    from envs.robot.keys import load_public_key
    from wm.device import resolve_device
    from wm.validation.recorder import store_keys
    from wm.validation.session import ValidationSession

    cfg.validate()
    device = resolve_device(cfg.device)
    server_key = load_public_key(cfg.server_key) if cfg.server_key else None
    robot = RemoteRobot(cfg.robot, cfg.token, timeout_s=cfg.timeout, server_key=server_key)
    model = ckpt_config = policy = None
    if cfg.policy:
        from policies.checkpoint import load_policy

        policy, _, model, ckpt_config = load_policy(cfg.policy, cfg.checkpoint, device)
    elif cfg.checkpoint:
        from wm.models.checkpoint import load_checkpoint

        model, ckpt_config = load_checkpoint(cfg.checkpoint, device)
    if cfg.controller == "mpc":  # settings not given: the checkpoint's planning preset, else the defaults
        cfg.mpc = with_preset(cfg.mpc, ckpt_config.plan_preset)
    robot.connect()
    try:
        cfg.judge = resolve_judge(cfg, robot)
        if model is not None:
            check_model_fits(model.spec, robot)
        trained_on = ckpt_config.trained_on if ckpt_config is not None else None
        goals, goal_env = load_goals(cfg, trained_on, np.random.default_rng(cfg.seed))
        env_id = robot.info["name"].removeprefix("sim:")
        check_goals_fit(goals, goal_env, env_id, robot)
        budget = cfg.budget or (default_episode_steps(env_id) if is_builtin(env_id) else 100)
        hz = cfg.hz or robot.control_hz or 10.0
        controller, chunk = make_controller(cfg, model, robot, policy)
        judge = make_judge(cfg, model)
        keys = store_keys(robot, chunk, model is not None, all(g["goal"] is not None for g in goals))
        session = ValidationSession(robot, controller, judge, cfg.out, budget, hz, keys, cfg.to_json(), chunk=chunk,
                                    model=model, async_plan=cfg.async_plan)  # fmt: skip
        return session.run(goals, cfg.episodes)
    finally:
        robot.disconnect()


def print_summary(results: dict) -> None:
    """One paragraph: outcome, loop timing, safety, where everything is."""
    lat, loop = results["latency_ms"], results["loop"]
    truth = results["truth_success_rate"] if results["judge"]["kind"] != "sim" else None  # sim: the verdict itself
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
