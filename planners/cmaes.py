"""CMA-ES through pycma: one `cma.CMAEvolutionStrategy` per problem over the flattened (H * A) sequence.

Each iteration every strategy `ask`s `popsize` candidates; they are stacked into ONE (B, S, H, A) batch and scored by
ONE cost_fn call (the first call also scores the warm start, as an extra sample: (B, S + 1, H, A)); each strategy is
then `tell`ed its (S,) costs. The loops over B around ask/tell and the costs' transfer to the host are inherent to
pycma, so the no-host-sync rule of the torch planners is waived here. Bounds use pycma's own handling (plus a clip);
`sigma0` is a fraction of the half-width of the bounds, per action dim (pycma's `CMA_stds`). Each strategy's seed
is drawn from the planner's generator, so the same seed gives the same plan. Returns the best sequence evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cma
import numpy as np
import torch
from torch import Tensor

from planners.base import PlannerBase
from wm.errors import WMError


@dataclass(eq=False)
class CMAES(PlannerBase):
    popsize: int = 64
    iterations: int = 30
    sigma0: float = 0.5

    BUDGET: ClassVar[dict[str, str]] = {"samples": "popsize", "iterations": "iterations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.popsize < 2 or self.iterations < 1 or self.sigma0 <= 0:
            raise WMError("CMA-ES needs popsize >= 2, iterations >= 1 and sigma0 > 0: fix the planner config")

    def begin(self, start: Tensor, warm: bool) -> dict:
        batch_size = start.shape[0]
        seeds = torch.randint(1, 2**31 - 1, (batch_size,), generator=self.generator, device=self.device).tolist()
        options = {
            "popsize": self.popsize,
            "bounds": [self.lower.repeat(self.horizon).tolist(), self.upper.repeat(self.horizon).tolist()],
            "CMA_stds": self.half_range.repeat(self.horizon).tolist(),
            "verbose": -9,
        }
        x0 = start.flatten(1).double().cpu().numpy()  # (B, H * A)
        strategies = [
            cma.CMAEvolutionStrategy(x0[b], self.sigma0, {**options, "seed": seeds[b]}) for b in range(batch_size)
        ]
        return {"start": start, "strategies": strategies}

    def propose(self, search: dict, iteration: int) -> Tensor:
        search["asked"] = [es.ask() for es in search["strategies"]]  # B lists of S arrays (H * A,)
        candidates = torch.as_tensor(np.array(search["asked"]), dtype=torch.float32, device=self.device)
        actions = self.clip(candidates.unflatten(2, (self.horizon, self.action_dim)))  # (B, S, H, A)
        if iteration == 0:
            actions = torch.cat([actions, search["start"][:, None]], dim=1)  # (B, S + 1, H, A)
        return actions

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        fitness = costs[:, : self.popsize].double().cpu().numpy()  # (B, S) on the host, for pycma
        for es, solutions, values in zip(search["strategies"], search["asked"], fitness, strict=True):
            es.tell(solutions, values.tolist())
