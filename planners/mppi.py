"""MPPI: perturb a nominal sequence with Gaussian noise and average the samples, weighted by exp(-cost / T).

Per problem b and iteration: samples (B, S, H, A) = clip(nominal[b] + noise_std * half-range * N(0, 1)), with
sample 0 the unperturbed nominal; weights (B, S) = softmax(-(cost - min cost) / temperature); the new nominal
(B, H, A) = weighted mean of the samples. The nominal starts at the warm start (the caller shifts the previous
solution) or the bounds' midpoint. The best sequence ever evaluated is returned, so a plan is never worse than its
warm start; `temperature` is in cost units: small = greedy, large = plain average.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from planners.base import CostFn, PlannerBase, keep_best
from wm.errors import WMError


@dataclass(eq=False)
class MPPI(PlannerBase):
    samples: int = 500
    iterations: int = 1
    temperature: float = 1.0
    noise_std: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2 or self.iterations < 1 or self.temperature <= 0:
            raise WMError("MPPI needs samples >= 2, iterations >= 1 and temperature > 0: fix the planner config")

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None) -> Tensor:
        """(B, H, A) best sequences for B problems; `init (B, H, A)` is the nominal sequence to perturb."""
        nominal = self.start(batch_size, init)  # (B, H, A)
        std = self.noise_std * self.half_range  # (A,)
        best, best_costs = nominal, torch.full((batch_size,), torch.inf, device=self.device)
        history = []
        for _ in range(self.iterations):
            noise = torch.randn(
                (batch_size, self.samples, *nominal.shape[1:]), generator=self.generator, device=self.device
            )
            noise[:, 0] = 0
            actions = self.clip(nominal[:, None] + std * noise)  # (B, S, H, A)
            costs = self.evaluate(cost_fn, actions)  # (B, S)
            best, best_costs = keep_best(best, best_costs, actions, costs)
            weights = torch.softmax(-(costs - costs.min(1, keepdim=True).values) / self.temperature, dim=1)
            nominal = (weights[:, :, None, None] * actions).sum(1)
            history.append(best_costs)
        return self.finish(best, best_costs, history)
