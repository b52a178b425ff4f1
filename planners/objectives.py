"""Goal objectives: how far imagined latents are from the latent of a goal observation (zero-shot, no reward).

Latents are `(..., N, D)` with the visual part first (`visual_dim` channels) and the proprio embedding after it.
`GoalObjective(...)(z_future (B, S, H, N, D), z_goal (B, N, D)) -> (B, S)`; objectives compose by `+` and
scaling (`0.5 * a + b`), as DINO-WM adds a proprio term to the visual one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wm.errors import WMError

METRICS = ("mse", "l1", "cosine")
MODES = ("last", "all", "weighted")


def _distance(pred: torch.Tensor, goal: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-step distance `(B, S, H)` between `pred (B, S, H, N, C)` and `goal (B, 1, 1, N, C)`."""
    if metric == "mse":
        return ((pred - goal) ** 2).mean((-2, -1))
    if metric == "l1":
        return (pred - goal).abs().mean((-2, -1))
    return 1.0 - F.cosine_similarity(pred, goal.expand_as(pred), dim=-1).mean(-1)


class Objective:
    """Base: `__call__(z_future (B, S, H, N, D), z_goal (B, N, D)) -> costs (B, S)`; supports `+` and `*`."""

    def __call__(self, z_future: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        return WeightedSum([(1.0, self), (1.0, other)])

    def __rmul__(self, weight: float) -> Objective:
        return WeightedSum([(float(weight), self)])


class GoalObjective(Objective):
    """Distance to the goal over the channels `[start, stop)` of each token.

    mode "last": the last imagined frame only (DINO-WM); "all": mean over the horizon; "weighted": horizon steps
    weighted linearly 1..H, so later frames count more but every frame is pulled toward the goal.
    """

    def __init__(self, metric: str = "mse", mode: str = "last", start: int = 0, stop: int | None = None):
        if metric not in METRICS:
            raise WMError(f"unknown objective metric {metric!r}; use one of {', '.join(METRICS)}")
        if mode not in MODES:
            raise WMError(f"unknown objective mode {mode!r}; use one of {', '.join(MODES)}")
        self.metric, self.mode, self.start, self.stop = metric, mode, start, stop

    def __call__(self, z_future: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        pred = z_future[..., self.start : self.stop]
        goal = z_goal[:, None, None, ..., self.start : self.stop]
        if self.mode == "last":
            return _distance(pred[:, :, -1:], goal, self.metric)[..., 0]
        per_step = _distance(pred, goal, self.metric)  # (B, S, H)
        if self.mode == "all":
            return per_step.mean(-1)
        weights = torch.arange(1, per_step.shape[-1] + 1, device=per_step.device, dtype=per_step.dtype)
        return (per_step * weights).sum(-1) / weights.sum()


class SuccessObjective(Objective):
    """`-log p(success)` of the last imagined frame against the goal, from the world model's success head: a learned
    judge of the env's own success test (trained on env-judged hindsight labels of the offline data), where a
    latent distance weighs everything in the image alike (on PushT, the pusher as much as the block's pose). The
    model must have a head (`success_mode`); a frame-only head ignores the goal."""

    def __init__(self, model):
        if model.success_mode is None:
            raise WMError("a success objective needs a success head; train one with `wm train --init CK "
                          "success_head=true only=success`")  # fmt: skip
        self.model = model

    def __call__(self, z_future: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        goal = z_goal[:, None] if self.model.success_mode == "goal" else None  # (B, 1, N, D)
        return F.softplus(-self.model.success_logits(z_future[:, :, -1], goal))  # (B, S)


class WeightedSum(Objective):
    def __init__(self, terms: list[tuple[float, Objective]]):
        self.terms = [
            (w * cw, c) for w, o in terms for cw, c in (o.terms if isinstance(o, WeightedSum) else [(1.0, o)])
        ]

    def __call__(self, z_future: torch.Tensor, z_goal: torch.Tensor) -> torch.Tensor:
        return sum(w * term(z_future, z_goal) for w, term in self.terms)


def goal_objective(
    visual_dim: int,
    metric: str = "mse",
    mode: str = "last",
    proprio_weight: float = 0.0,
    proprio_mode: str | None = None,
) -> Objective:
    """The standard objective: visual distance to the goal image over the horizon (`mode`), plus `proprio_weight` x
    proprio distance over the horizon (`proprio_mode`, default: the same as `mode`)."""
    objective = GoalObjective(metric, mode, 0, visual_dim)
    if proprio_weight > 0:
        objective = objective + proprio_weight * GoalObjective("mse", proprio_mode or mode, visual_dim, None)
    return objective
