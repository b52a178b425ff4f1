"""Cross-entropy method: a diagonal Gaussian over action sequences, refitted to the elites each iteration.

Per problem b the search distribution is N(mean[b], std[b]^2) over (H, A). Each iteration draws S samples
(B, S, H, A) from the planner's generator, clips them to the bounds, scores them with ONE cost_fn call, and refits
mean/std to the `elites` cheapest. The warm start (or the bounds' midpoint) is sample 0 of the first iteration, and
the best sequence ever evaluated is returned. `init_std` and `min_std` are fractions of the half-width of the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from planners.base import CostFn, PlannerBase, keep_best, select
from wm.errors import WMError

# DINO-WM's planner (ANCHORS.md): horizon 5, 300 samples, top 30, 30 iterations, init std 1 in normalised actions.
DINO_WM_PRESET = {"horizon": 5, "samples": 300, "elites": 30, "iterations": 30, "init_std": 1.0}


@dataclass(eq=False)
class CEM(PlannerBase):
    samples: int = 300
    elites: int = 30
    iterations: int = 30
    init_std: float = 1.0
    min_std: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.elites <= self.samples or self.iterations < 1:
            raise WMError(f"CEM needs 1 <= elites <= samples and iterations >= 1, got {self.elites}/{self.samples}/"
                          f"{self.iterations}: fix the planner config")  # fmt: skip

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None) -> Tensor:
        """(B, H, A) best sequences for B problems; `init (B, H, A)` warm-starts the mean."""
        mean = self.start(batch_size, init)  # (B, H, A)
        std = (self.init_std * self.half_range).expand_as(mean).clone()
        min_std = self.min_std * self.half_range
        best, best_costs = mean, torch.full((batch_size,), torch.inf, device=self.device)
        history = []
        for i in range(self.iterations):
            noise = torch.randn(
                (batch_size, self.samples, *mean.shape[1:]), generator=self.generator, device=self.device
            )
            actions = self.clip(mean[:, None] + std[:, None] * noise)  # (B, S, H, A)
            if i == 0:
                actions[:, 0] = mean
            costs = self.evaluate(cost_fn, actions)  # (B, S)
            best, best_costs = keep_best(best, best_costs, actions, costs)
            elites, _ = select(actions, costs, self.elites)  # (B, E, H, A)
            mean, std = elites.mean(1), elites.std(1, correction=0).maximum(min_std)
            history.append(best_costs)
        return self.finish(best, best_costs, history)
