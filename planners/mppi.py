"""MPPI: perturb a nominal sequence with Gaussian noise and average the samples, weighted by exp(-cost / T).

Per problem b and iteration: samples (B, S, H, A) = clip(nominal[b] + noise_std * half-range * N(0, 1)), with
sample 0 the unperturbed nominal; weights (B, S) = softmax(-(cost - min cost) / temperature); the new nominal
(B, H, A) = weighted mean of the samples. The nominal starts at the warm start (the caller shifts the previous
solution) or the bounds' midpoint. The best sequence ever evaluated is returned, so a plan is never worse than its
warm start; `temperature` is in cost units: small = greedy, large = plain average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from planners.base import PlannerBase
from wm.errors import WMError


@dataclass(eq=False)
class MPPI(PlannerBase):
    samples: int = 500
    iterations: int = 1
    temperature: float = 1.0
    noise_std: float = 0.3

    GUIDED: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, str]] = {"samples": "samples", "iterations": "iterations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2 or self.iterations < 1 or self.temperature <= 0:
            raise WMError("MPPI needs samples >= 2, iterations >= 1 and temperature > 0: fix the planner config")

    def begin(self, start: Tensor, warm: bool) -> dict:
        return {"nominal": start}

    def propose(self, search: dict, iteration: int) -> Tensor:
        nominal = search["nominal"]  # (B, H, A)
        noise = torch.randn(
            (nominal.shape[0], self.samples, *nominal.shape[1:]), generator=self.generator, device=self.device
        )
        noise[:, 0] = 0
        return self.clip(nominal[:, None] + self.relative(self.noise_std) * noise, inplace=True)  # (B, S, H, A)

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        weights = torch.softmax(-(costs - costs.min(1, keepdim=True).values) / self.temperature, dim=1)  # (B, S)
        search["nominal"] = torch.bmm(weights[:, None], actions.flatten(2)).view_as(search["nominal"])  # (B, H, A)
