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

import torch
from torch import Tensor

from planners.base import CostFn, PlannerBase, keep_best
from wm.errors import WMError


@dataclass(eq=False)
class GradientPlanner(PlannerBase):
    restarts: int = 16
    iterations: int = 100
    lr: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restarts < 1 or self.iterations < 1 or self.lr <= 0:
            raise WMError("gradient planner needs restarts >= 1, iterations >= 1 and lr > 0: fix the planner config")

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None) -> Tensor:
        """(B, H, A) best sequences for B problems; `init (B, H, A)` is restart 0."""
        start = self.start(batch_size, init)  # (B, H, A)
        shape = (batch_size, self.restarts, self.horizon, self.action_dim)
        fraction = torch.rand(shape, generator=self.generator, device=self.device)  # position inside the bounds
        if init is not None:
            fraction[:, 0] = (start - self.lower) / (self.upper - self.lower)
        params = torch.logit(fraction, eps=1e-6).requires_grad_()
        optimizer = torch.optim.Adam([params], lr=self.lr)
        best, best_costs = start, torch.full((batch_size,), torch.inf, device=self.device)
        history = []
        with torch.enable_grad():
            for _ in range(self.iterations):
                actions = self.lower + (self.upper - self.lower) * torch.sigmoid(params)  # (B, S, H, A)
                costs = self.evaluate(cost_fn, actions)  # (B, S)
                if not costs.requires_grad:
                    raise WMError("cost_fn is not differentiable (no grad through it): use a sampling planner "
                                  "or remove torch.no_grad()/detach() from the world model and objective")  # fmt: skip
                best, best_costs = keep_best(best, best_costs, actions.detach(), costs.detach())
                (params.grad,) = torch.autograd.grad(costs.sum(), params)  # not into the world model's weights
                optimizer.step()
                history.append(best_costs)
        return self.finish(best, best_costs, history)
