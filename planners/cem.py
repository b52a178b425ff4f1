"""Cross-entropy method: a diagonal Gaussian over action sequences, refitted to the elites each iteration.

Per problem b the search distribution is N(mean[b], std[b]^2) over (H, A). Each iteration draws S samples
(B, S, H, A) from the planner's generator, clips them to the bounds, scores them with ONE cost_fn call, and refits
mean/std to the `elites` cheapest. The warm start (or the bounds' midpoint) is sample 0 of the first iteration, and
the best sequence ever evaluated is returned. `init_std` and `min_std` are fractions of the half-width of the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from planners.base import PlannerBase, select
from wm.errors import WMError


@dataclass(eq=False)
class CEM(PlannerBase):
    samples: int = 300
    elites: int = 30
    iterations: int = 30
    init_std: float = 1.0
    min_std: float = 1e-3

    GUIDED: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, str]] = {"samples": "samples", "elites": "elites", "iterations": "iterations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.elites <= self.samples or self.iterations < 1:
            raise WMError(f"CEM needs 1 <= elites <= samples and iterations >= 1, got {self.elites}/{self.samples}/"
                          f"{self.iterations}: fix the planner config")  # fmt: skip

    def begin(self, start: Tensor, warm: bool) -> dict:
        return {"mean": start, "std": (self.init_std * self.half_range).expand_as(start).clone()}

    def propose(self, search: dict, iteration: int) -> Tensor:
        mean, std = search["mean"], search["std"]  # (B, H, A) each
        noise = torch.randn(
            (mean.shape[0], self.samples, *mean.shape[1:]), generator=self.generator, device=self.device
        )
        actions = self.clip(mean[:, None] + std[:, None] * noise, inplace=True)  # (B, S, H, A)
        if iteration == 0:
            actions[:, 0] = mean
        return actions

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        elites, _ = select(actions, costs, self.elites)  # (B, E, H, A)
        search["mean"] = elites.mean(1)
        search["std"] = elites.std(1, correction=0).clamp(min=self.relative(self.min_std))
