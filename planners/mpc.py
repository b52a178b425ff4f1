"""Model-predictive control inside a world model: plan toward a goal observation, execute, replan.

The controller sees only observations (`{"rgb": (B, H, W, 3) uint8, "proprio": (B, P)}`) and the goal
observation; nothing from the simulator's ground truth reaches it, and it never stops early: the caller runs a
fixed step budget and asks the environment for success afterwards.

Time scales: the world model steps in blocks of `frameskip` env steps, and its actions are env actions stacked over
a block `(frameskip * A,)`. Every `replan_every` blocks the controller plans a horizon of H blocks from its history
(the observations of the last `num_hist` block boundaries, with the blocks sent in between as past actions) and
returns the first `replan_every` of them as one chunk of env actions.

With `hold_in_block=True` the planner searches one env action per block, held for the block's `frameskip` steps:
the search space shrinks from H*frameskip*A to H*A dimensions. Open-loop, this lets CEM find plans as good as the
expert's; in closed loop on PointMaze with a model trained on expert-only data it did worse (10% vs 36% success),
because held saturated actions exploit the model's ignorance of walls. Off by default.

With `bf16=True` the world model's rollouts and the objective run under bfloat16 autocast (costs come back in fp32);
on CPUs with AVX512-BF16/AMX and on GPUs this is several times faster than fp32. `compile=True` compiles the
latent models' rollout steps (`compile_imagination`): a quarter off a bf16 CEM replan on the 2-core CPU, little in
fp32 (docs/results.md).

`MPCConfig` holds the settings `wm plan` and `wm validate` share; a checkpoint may carry a planning preset of them
(its config's `"plan"` entry, e.g. Wall's `{"hold_in_block": true, "iterations": 20}`), which `with_preset` applies
under the settings given explicitly. `build_mpc(model, cfg, seed)` makes the controller they describe: a
`Controller` (`envs.controller`) that the goal-reaching evaluation, `wm validate` and the robot loop all drive.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import torch

from planners.base import Planner
from planners.objectives import Objective, SuccessObjective, goal_objective
from planners.registry import planner_from_budget
from wm.errors import WMError
from wm.models.protocol import WorldModel, compile_rollouts

log = logging.getLogger("wm.plan")
MAX_ROWS = 4096  # candidate sequences per world-model rollout call (see `MPCController.cost_fn`)


class Guide(Protocol):
    """Proposes action sequences for a plan (`policies.guide.PolicyGuide`: a policy's rollouts in the model)."""

    def propose(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None, z_goal: torch.Tensor, horizon: int,
                hold_in_block: bool) -> torch.Tensor:  # fmt: skip
        """`(B, T, N, D)`, `(B, T-1, fs*A)` or None, `(B, N, D)` -> proposals `(B, P, H, fs*A or A)`."""
        ...


@dataclass
class MPCConfig:
    """Planner, search budget, objective and replanning of an MPC controller (the CLI flags of the same names).
    A setting set to None is not given: `with_preset` takes it from the checkpoint's preset, else the default here."""

    planner: str = "cem"
    samples: int = 300
    iterations: int = 10  # DINO-WM's count for PointMaze and Wall
    elites: int | None = None  # None: a tenth of the samples (DINO-WM's 30 of 300), at least 1
    horizon: int = 8  # 40 env steps: room to go around a wall toward a goal 25 path steps away (DINO-WM: 5)
    replan_every: int = 1
    hold_in_block: bool = False  # one env action per world-model block (see the module docstring)
    objective_mode: str = "weighted"  # see planners.objectives; "last" is DINO-WM's
    proprio_weight: float = 10.0
    proprio_mode: str = "last"  # the proprio term on the last imagined frame only: end the horizon at the goal
    bf16: bool = False  # world-model rollouts under bfloat16 autocast
    compile: bool = False  # the world model's rollout steps compiled (torch.compile; latent models)
    guide: str | None = None  # a policy checkpoint whose rollouts guide the search (`policies.guide`); "none": none
    guide_samples: int = 16  # its rollouts per plan
    success_weight: float = 0.0  # weight of -log p(success) from the model's success head (objectives.SuccessObjective)


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


def elites_for(samples: int) -> int:
    """The default number of elites for `samples` candidates: a tenth (DINO-WM's 30 of 300), at least 1."""
    return max(1, samples // 10)


def build_mpc(model: WorldModel, cfg: MPCConfig, seed: int = 0, device: str = "cpu",
              guide: Guide | None = None) -> MPCController:  # fmt: skip
    """The MPC controller `cfg` describes (planner, budget, goal objective, replanning) for `model`; with `guide`,
    a policy's rollouts join each plan's search (`policies.guide`)."""
    spec = model.spec
    for name in ("proprio_weight", "success_weight"):
        if not 0 <= getattr(cfg, name) < math.inf:
            raise WMError(f"planning setting {name}={getattr(cfg, name)} must be a number >= 0")
    action_dim = spec.action_dim if cfg.hold_in_block else spec.block_action_dim
    elites = cfg.elites if cfg.elites is not None else elites_for(cfg.samples)
    budget = {"samples": cfg.samples, "elites": elites, "iterations": cfg.iterations}
    planner = planner_from_budget(cfg.planner, cfg.horizon, action_dim, seed=seed, device=device, **budget)
    proprio_weight = cfg.proprio_weight if spec.proprio_dim else 0.0  # models without proprio: none
    objective = goal_objective(
        spec.visual_dim, mode=cfg.objective_mode, proprio_weight=proprio_weight, proprio_mode=cfg.proprio_mode
    )
    if cfg.success_weight:
        objective = objective + cfg.success_weight * SuccessObjective(model)
    if guide is not None and not planner.GUIDED:
        raise WMError(f"--guide needs a population planner (cem, icem or mppi), not {cfg.planner}")
    if cfg.compile:
        compile_rollouts(model, "rollouts", "--compile")
    return MPCController(model, planner, objective, cfg.replan_every, cfg.hold_in_block, device, cfg.bf16, guide)


class MPCController:
    """MPC as a `Controller` (`envs.controller`), batched over B problems: `reset(goal_obs)`, then `act(obs) ->
    (B, replan_every * frameskip, A)`: the env actions of the next `replan_every` world-model blocks, planned from
    the observations of control step `obs["step"]`; `executed(step, obs, sent (B, A))` after every step.

    The world model's history for a plan from step t is the observations of steps t - (num_hist - 1) * frameskip,
    ..., t - frameskip, t (those since the reset) and its past actions are the *sent* actions between them (clipped,
    limited or replaced by a hold), not the planned ones. So plans stay exact when a robot loop plans asynchronously:
    from any step, while older actions run, with stale ones dropped. Thread-safe for that: `executed` comes from
    the loop's thread while `act` runs in the planner's. `plan(z_hist, past_actions)` plans from a history given
    directly (latents and past blocks), for callers that keep their own."""

    def __init__(
        self,
        model: WorldModel,
        planner: Planner,
        objective: Objective,
        replan_every: int = 1,
        hold_in_block: bool = False,
        device="cpu",
        bf16: bool = False,
        guide: Guide | None = None,
    ):
        spec = model.spec
        self.guide = guide
        self.hold_in_block = hold_in_block
        self.model, self.planner, self.objective = model, planner, objective
        self.frameskip, self.num_hist = spec.frameskip, spec.num_hist
        self.action_dim = spec.action_dim  # env action dims
        self.replan_every = max(1, min(replan_every, planner.horizon))
        self.device = device
        self.bf16 = bf16
        self._lock = threading.Lock()
        self.reset_history()

    @property
    def chunk(self) -> int:
        """Actions per `act`: `replan_every` blocks of `frameskip` env actions."""
        return self.replan_every * self.frameskip

    def reset_history(self) -> None:
        self._views: dict[int, dict] = {}  # step -> the observations it acted on
        self._sent: dict[int, np.ndarray] = {}  # step -> the actions sent (B, A)
        self._latents: dict[int, torch.Tensor] = {}  # step -> encoded observations (B, N, D)
        self.warm: torch.Tensor | None = None
        self.latencies: list[float] = []  # seconds per replan
        self.last_plan_latents: torch.Tensor | None = None  # (B, H, N, D) imagined under the chosen plan

    def encode(self, obs: dict) -> torch.Tensor:
        """Observations `{"rgb": (B, H, W, 3), "proprio": (B, P)}` -> latents `(B, N, D)`."""
        batch = {k: torch.as_tensor(np.asarray(obs[k]), device=self.device)[:, None] for k in ("rgb", "proprio")}
        return self.model.encode(batch)[:, 0]

    @torch.no_grad()
    def reset(self, goal_obs: dict) -> None:
        """Start new episodes toward `goal_obs` (`rgb (B, H, W, 3)`, `proprio (B, P)`)."""
        self.z_goal = self.encode(goal_obs)  # (B, N, D)
        with self._lock:
            self.reset_history()

    def executed(self, step: int, obs: dict, sent) -> None:
        sent = sent.cpu().numpy() if torch.is_tensor(sent) else sent
        with self._lock:
            self._views[step], self._sent[step] = obs, np.asarray(sent, np.float32).copy()

    def to_blocks(self, actions: torch.Tensor) -> torch.Tensor:
        """Planner actions `(..., H, A or fs*A)` -> world-model blocks `(..., H, fs*A)`."""
        if not self.hold_in_block:
            return actions
        return actions.unsqueeze(-2).expand(*actions.shape[:-1], self.frameskip, actions.shape[-1]).flatten(-2)

    def _autocast(self):
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def act(self, obs: dict) -> torch.Tensor:
        """Env actions `(B, replan_every * frameskip, A)` planned from the observations of step `obs["step"]`."""
        step, fs = int(obs["step"]), self.frameskip
        frames = [s for s in range(step - (self.num_hist - 1) * fs, step + 1, fs) if s >= 0]  # oldest first
        with self._lock:
            missing = [s + i for s in frames[:-1] for i in range(fs) if s + i not in self._sent]
            if missing:
                raise WMError(f"MPC was not told what was sent at steps {missing}; call `executed` after every step")
            views = {s: self._views[s] for s in frames[:-1]} | {step: obs}
            blocks = [np.concatenate([self._sent[s + i] for i in range(fs)], axis=-1) for s in frames[:-1]]
            oldest = step - (self.num_hist - 1) * fs  # later plans, from later steps, need nothing older
            for table in (self._views, self._sent):
                for s in [s for s in table if s < oldest]:
                    del table[s]
        self._latents = {s: z for s, z in self._latents.items() if s >= oldest}
        for s in frames:
            if s not in self._latents:
                self._latents[s] = self.encode(views[s])
        z_hist = torch.stack([self._latents[s] for s in frames], dim=1)  # (B, T, N, D)
        past = torch.as_tensor(np.stack(blocks, axis=1), device=self.device) if blocks else None  # (B, T-1, fs*A)
        return self.plan(z_hist, past)

    def cost_fn(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None = None):
        """The planner's cost from this history: candidate actions `(B, S, H, A)` -> goal costs `(B, S)` (fp32).
        Rollouts run on at most `MAX_ROWS` candidate sequences at once (B x a slice of S), which bounds the memory
        of a plan for many problems (50 problems x 300 samples in one call held ~9 GB; in slices, PointMaze's 50
        problems peak at 3.0 GB resident)."""

        def cost(actions: torch.Tensor) -> torch.Tensor:
            step = max(1, MAX_ROWS // actions.shape[0])
            parts = []
            with self._autocast():
                for i in range(0, actions.shape[1], step):
                    rollout = self.model.rollout(z_hist, self.to_blocks(actions[:, i : i + step]), past_actions)
                    parts.append(self.objective(rollout, self.z_goal).float())
            return torch.cat(parts, dim=1)

        return cost

    @torch.no_grad()
    def plan(self, z_hist: torch.Tensor, past_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Plan from latents `z_hist (B, T, N, D)` and the blocks executed between them `past_actions (B, T-1,
        fs*A)` (None for T = 1); returns the env actions of the first `replan_every` blocks `(B, k*fs, A)` and keeps
        the rest, shifted, as the next plan's warm start."""
        started = time.perf_counter()
        proposals = None
        if self.guide is not None:
            proposals = self.guide.propose(z_hist, past_actions, self.z_goal, self.planner.horizon, self.hold_in_block)
        plan = self.planner.plan(self.cost_fn(z_hist, past_actions), batch_size=z_hist.shape[0], init=self.warm,
                                 proposals=proposals)  # fmt: skip
        with torch.no_grad(), self._autocast():
            self.last_plan_latents = self.model.rollout(z_hist, self.to_blocks(plan), past_actions=past_actions).float()
        self.latencies.append(time.perf_counter() - started)  # the rollout above syncs any device work
        blocks = self.to_blocks(plan[:, : self.replan_every].detach())  # (B, k, fs*A)
        warm = plan.detach()
        for _ in range(self.replan_every):
            warm = self.planner.shift(warm)
        self.warm = warm
        return blocks.reshape(blocks.shape[0], -1, self.action_dim)  # (B, k*fs, A)
