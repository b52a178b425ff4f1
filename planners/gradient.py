"""Gradient planner: Adam on unconstrained parameters u, actions = low + (high - low) * sigmoid(u).

`restarts` = S parallel starting points per problem, optimised together as one (B, S, H, A) tensor: restart 0 is
the warm start when one is given, the others are uniform in the bounds (drawn from the planner's generator). Each
iteration makes ONE cost_fn call with actions that require grad (inside `torch.enable_grad()`, so a caller under
`torch.no_grad()` still works); the cost must be differentiable. Adam is elementwise, so the sum of all (B, S) costs
gives every restart its own gradient; no gradient reaches the world model's weights (`torch.autograd.grad` w.r.t. u
only). Returns the best sequence evaluated per problem (the warm start included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from planners.base import CostFn, PlannerBase
from wm.errors import WMError


@dataclass(eq=False)
class GradientPlanner(PlannerBase):
    restarts: int = 16
    iterations: int = 100
    lr: float = 0.1

    BUDGET: ClassVar[dict[str, str]] = {"iterations": "iterations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restarts < 1 or self.iterations < 1 or self.lr <= 0:
            raise WMError("gradient planner needs restarts >= 1, iterations >= 1 and lr > 0: fix the planner config")

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None,
             proposals: Tensor | None = None) -> Tensor:  # fmt: skip
        """(B, H, A) best sequences for B problems; `init (B, H, A)` is restart 0 (proposals: a WMError, unguided)."""
        with torch.enable_grad():  # a caller under torch.no_grad() still gets gradients
            return super().plan(cost_fn, batch_size, init, proposals)

    def begin(self, start: Tensor, warm: bool) -> dict:
        shape = (start.shape[0], self.restarts, self.horizon, self.action_dim)
        fraction = torch.rand(shape, generator=self.generator, device=self.device)  # position inside the bounds
        if warm:
            fraction[:, 0] = (start - self.lower) / (self.upper - self.lower)
        params = torch.logit(fraction, eps=1e-6).requires_grad_()
        return {"params": params, "optimizer": torch.optim.Adam([params], lr=self.lr)}

    def propose(self, search: dict, iteration: int) -> Tensor:
        return self.lower + (self.upper - self.lower) * torch.sigmoid(search["params"])  # (B, S, H, A)

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        if not costs.requires_grad:
            raise WMError("cost_fn is not differentiable (no grad through it): use a sampling planner "
                          "or remove torch.no_grad()/detach() from the world model and objective")  # fmt: skip
        (search["params"].grad,) = torch.autograd.grad(costs.sum(), search["params"])  # not into the model's weights
        search["optimizer"].step()
