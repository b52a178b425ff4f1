"""Model-predictive control inside a world model: plan toward a goal observation, execute, replan.

The controller sees only observations (`{"rgb": (B, H, W, 3) uint8, "proprio": (B, P)}`) and the goal
observation; nothing from the simulator's ground truth reaches it, and it never stops early: the caller runs a
fixed step budget and asks the environment for success afterwards.

Time scales: the world model steps in blocks of `frameskip` env steps, and its actions are env actions stacked over
a block `(frameskip * A,)`. Every `frameskip` env steps the controller encodes the observation into its history
(the last `num_hist` block-spaced frames, with the blocks executed in between as past actions); every
`replan_every` blocks it plans a horizon of H blocks and queues the first `replan_every` of them.

With `hold_in_block=True` the planner searches one env action per block, held for the block's `frameskip` steps:
the search space shrinks from H*frameskip*A to H*A dimensions. Open-loop, this lets CEM find plans as good as the
expert's; in closed loop on PointMaze with a model trained on expert-only data it did worse (10% vs 36% success),
because held saturated actions exploit the model's ignorance of walls. Off by default.

With `bf16=True` the world model's rollouts and the objective run under bfloat16 autocast (costs come back in fp32);
on CPUs with AVX512-BF16/AMX and on GPUs this is several times faster than fp32.

`MPCConfig` holds the settings `wm plan` and `wm validate` share; a checkpoint may carry a planning preset of them
(its config's `"plan"` entry, e.g. Wall's `{"hold_in_block": true, "iterations": 20}`), which `with_preset` applies
under the settings given explicitly. `build_mpc(model, cfg, seed)` makes the controller they describe, and `RobotMPC`
drives one robot with it (the robot control loop's `Controller` interface).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from planners.base import Planner
from planners.objectives import Objective, goal_objective
from planners.registry import planner_from_budget
from wm.errors import WMError
from wm.models.protocol import WorldModel

log = logging.getLogger("wm.plan")


@dataclass
class MPCConfig:
    """Planner, search budget, objective and replanning of an MPC controller (the CLI flags of the same names).
    A setting set to None is not given: `with_preset` takes it from the checkpoint's preset, else the default here."""

    planner: str = "cem"
    samples: int = 300
    iterations: int = 10  # DINO-WM's count for PointMaze and Wall
    elites: int = 30
    horizon: int = 8  # 40 env steps: room to go around a wall toward a goal 25 path steps away (DINO-WM: 5)
    replan_every: int = 1
    hold_in_block: bool = False  # one env action per world-model block (see the module docstring)
    objective_mode: str = "weighted"  # see planners.objectives; "last" is DINO-WM's
    proprio_weight: float = 10.0
    proprio_mode: str = "last"  # the proprio term on the last imagined frame only: end the horizon at the goal
    bf16: bool = False  # world-model rollouts under bfloat16 autocast


def with_preset(cfg: MPCConfig, preset: dict) -> MPCConfig:
    """`cfg` with each setting it leaves None taken from `preset` (a checkpoint's `"plan"` entry), else from the
    defaults: explicit settings win over the preset, the preset over the defaults. Logs the preset settings used."""
    names = [f.name for f in fields(MPCConfig)]
    unknown = sorted(set(preset) - set(names))
    if unknown:
        raise WMError(f"the checkpoint's planning preset has unknown setting(s) {', '.join(unknown)}; known: "
                      f"{', '.join(names)}")  # fmt: skip
    used = {k: v for k, v in preset.items() if getattr(cfg, k) is None}
    if used:
        log.info("planning preset from the checkpoint: %s", " ".join(f"{k}={v}" for k, v in used.items()))
    default = MPCConfig()
    given = {n: getattr(cfg, n) for n in names}
    return MPCConfig(**{n: preset.get(n, getattr(default, n)) if v is None else v for n, v in given.items()})


def build_mpc(model: WorldModel, cfg: MPCConfig, seed: int = 0, device: str = "cpu") -> MPCController:
    """The MPC controller `cfg` describes (planner, budget, goal objective, replanning) for `model`."""
    spec = model.spec
    action_dim = spec["env_action_dim"] if cfg.hold_in_block else spec["action_dim"]
    budget = {"samples": cfg.samples, "elites": cfg.elites, "iterations": cfg.iterations}
    planner = planner_from_budget(cfg.planner, cfg.horizon, action_dim, seed=seed, device=device, **budget)
    proprio_weight = cfg.proprio_weight if spec.get("proprio_dim", 0) else 0.0  # models without proprio: none
    objective = goal_objective(
        spec["visual_dim"], mode=cfg.objective_mode, proprio_weight=proprio_weight, proprio_mode=cfg.proprio_mode
    )
    return MPCController(model, planner, objective, cfg.replan_every, cfg.hold_in_block, device, cfg.bf16)


class MPCController:
    """Batched over B problems. `reset(goal_obs)`, then `act(obs) -> (B, A)` env actions every env step."""

    def __init__(
        self,
        model: WorldModel,
        planner: Planner,
        objective: Objective,
        replan_every: int = 1,
        hold_in_block: bool = False,
        device="cpu",
        bf16: bool = False,
    ):
        spec = model.spec
        self.hold_in_block = hold_in_block
        self.model, self.planner, self.objective = model, planner, objective
        self.frameskip, self.num_hist = spec["frameskip"], spec["num_hist"]
        self.env_action_dim = spec["env_action_dim"]
        self.replan_every = max(1, min(replan_every, planner.horizon))
        self.device = device
        self.bf16 = bf16
        self.latencies: list[float] = []  # seconds per replan
        self.last_plan_latents: torch.Tensor | None = None  # (B, H, N, D) imagined under the chosen plan

    def _encode(self, obs: dict) -> torch.Tensor:
        batch = {k: torch.as_tensor(v, device=self.device)[:, None] for k, v in obs.items() if k in ("rgb", "proprio")}
        return self.model.encode(batch)  # (B, 1, N, D)

    @torch.no_grad()
    def reset(self, goal_obs: dict) -> None:
        """Start new episodes toward `goal_obs` (`rgb (B, H, W, 3)`, `proprio (B, P)`)."""
        self.z_goal = self._encode(goal_obs)[:, 0]  # (B, N, D)
        self.history: list[torch.Tensor] = []  # block-spaced latents (B, N, D)
        self.past_blocks: list[torch.Tensor] = []  # stacked actions executed after each history frame
        self.queue: list[torch.Tensor] = []  # env actions (B, A) waiting to be executed
        self.warm: torch.Tensor | None = None
        self._executed: list[torch.Tensor] = []  # env actions since the episode started
        self.steps = 0
        self.latencies = []

    def to_blocks(self, actions: torch.Tensor) -> torch.Tensor:
        """Planner actions `(..., H, A or fs*A)` -> world-model blocks `(..., H, fs*A)`."""
        if not self.hold_in_block:
            return actions
        return actions.unsqueeze(-2).expand(*actions.shape[:-1], self.frameskip, actions.shape[-1]).flatten(-2)

    def _cost_fn(self, z_hist: torch.Tensor, past: torch.Tensor | None):
        def cost(actions: torch.Tensor) -> torch.Tensor:  # (B, S, H, A) -> (B, S)
            with self._autocast():
                rollout = self.model.rollout(z_hist, self.to_blocks(actions), past_actions=past)
                return self.objective(rollout, self.z_goal).float()

        return cost

    def _autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16)

    def _replan(self) -> None:
        z_hist = torch.stack(self.history[-self.num_hist :], dim=1)  # (B, T, N, D)
        past = None
        if z_hist.shape[1] > 1:
            past = torch.stack(self.past_blocks[-(z_hist.shape[1] - 1) :], dim=1)  # (B, T-1, fs*A)
        started = time.perf_counter()
        plan = self.planner.plan(self._cost_fn(z_hist, past), batch_size=z_hist.shape[0], init=self.warm)
        with torch.no_grad(), self._autocast():
            self.last_plan_latents = self.model.rollout(z_hist, self.to_blocks(plan), past_actions=past).float()
        self.latencies.append(time.perf_counter() - started)  # the rollout above syncs any device work
        blocks = self.to_blocks(plan[:, : self.replan_every].detach())  # (B, k, fs*A)
        env_actions = blocks.reshape(blocks.shape[0], -1, self.env_action_dim)  # (B, k*fs, A)
        self.queue = list(env_actions.unbind(1))
        warm = plan.detach()
        for _ in range(self.replan_every):
            warm = self.planner.shift(warm)
        self.warm = warm

    @torch.no_grad()
    def act(self, obs: dict) -> torch.Tensor:
        """Next env actions `(B, A)` for the current observations."""
        if self.steps % self.frameskip == 0:
            if self.history:
                executed = torch.stack(self._executed[-self.frameskip :], dim=1)  # (B, fs, A)
                self.past_blocks.append(executed.reshape(executed.shape[0], -1))
            self.history.append(self._encode(obs)[:, 0])
            self.history = self.history[-self.num_hist :]
            self.past_blocks = self.past_blocks[-(self.num_hist - 1) :] if self.num_hist > 1 else []
        if not self.queue:
            self._replan()
        action = self.queue.pop(0)
        self._executed = [*self._executed[-self.frameskip :], action]
        self.steps += 1
        return action


class RobotMPC:
    """MPC for one robot, as the control loop drives it (`envs.robot.loop`): `reset(goal_obs)` with one goal
    observation; `act(obs) -> (replan_every * frameskip, A)`: the env actions of the next `replan_every` world-model
    blocks, planned from the observation of control step `obs["step"]`; `executed(step, obs, action (A,))` after
    every step: the observation the step acted on and the action the robot reports it sent.

    The world model's history for a plan from step t is the observations of steps t - (num_hist - 1) * frameskip,
    ..., t - frameskip, t (those since the reset) and its past actions are the *sent* actions between them (clipped,
    limited or replaced by a hold), not the planned ones. So plans stay exact when the loop plans asynchronously:
    from any step, while older actions run, with stale ones dropped. Thread-safe for that: `executed` comes from
    the loop's thread while `act` runs in the planner's."""

    def __init__(self, mpc: MPCController):
        self.mpc = mpc
        self._lock = threading.Lock()
        self._views: dict[int, dict] = {}  # step -> the observation it acted on
        self._sent: dict[int, np.ndarray] = {}  # step -> the action sent (A,)
        self._latents: dict[int, torch.Tensor] = {}  # step -> encoded observation (1, N, D)

    @property
    def chunk(self) -> int:
        """Actions per `act`: `replan_every` blocks of `frameskip` env actions."""
        return self.mpc.replan_every * self.mpc.frameskip

    def reset(self, goal_obs: dict) -> None:
        self.mpc.reset({k: np.asarray(v)[None] for k, v in goal_obs.items()})
        with self._lock:
            self._views, self._sent, self._latents = {}, {}, {}

    def executed(self, step: int, obs: dict, action: np.ndarray) -> None:
        with self._lock:
            self._views[step], self._sent[step] = obs, np.asarray(action, np.float32).copy()

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        mpc, step = self.mpc, int(obs["step"])
        fs = mpc.frameskip
        frames = [s for s in range(step - (mpc.num_hist - 1) * fs, step + 1, fs) if s >= 0]  # oldest first
        with self._lock:
            missing = [s + i for s in frames[:-1] for i in range(fs) if s + i not in self._sent]
            if missing:
                raise WMError(f"RobotMPC was not told what was sent at steps {missing}; give the loop its `executed`")
            views = {s: self._views[s] for s in frames[:-1]} | {step: obs}
            blocks = [np.concatenate([self._sent[s + i] for i in range(fs)]) for s in frames[:-1]]  # (fs*A,) each
            oldest = step - (mpc.num_hist - 1) * fs  # later plans, from later steps, need nothing older
            for table in (self._views, self._sent):
                for s in [s for s in table if s < oldest]:
                    del table[s]
        self._latents = {s: z for s, z in self._latents.items() if s >= oldest}
        for s in frames:
            if s not in self._latents:
                self._latents[s] = mpc._encode({k: np.asarray(views[s][k])[None] for k in ("rgb", "proprio")})[:, 0]
        mpc.history = [self._latents[s] for s in frames]
        mpc.past_blocks = [torch.as_tensor(b, device=mpc.device)[None] for b in blocks]
        mpc._replan()
        return torch.stack(mpc.queue, dim=1)[0].cpu().numpy()

    @property
    def latencies(self) -> list[float]:
        """Seconds of each replan since the last reset."""
        return list(self.mpc.latencies)
