"""The planner contract and the machinery every planner shares.

Shapes: B problems x S samples x H horizon x A action dims.
- `cost_fn(actions (B, S, H, A)) -> costs (B, S)`: lower is better, evaluated on the planner's device.
- `plan(cost_fn, batch_size, init=None, proposals=None) -> (B, H, A)`: the best sequence found per problem, inside
  `[low, high]`. `init (B, H, A)` is a warm start (usually the previous solution after `shift`); it is always
  evaluated, so a plan is never worse than its warm start. `proposals (B, P, H, A)` (population planners, `GUIDED`)
  are sequences from elsewhere, e.g. a policy's (`policies.guide`): the search starts from proposal 0 (the warm
  start becomes one more proposal), the proposals are scored once, beside the first population, and stay in every
  iteration's population with those costs, so the search keeps them until it finds better.
- After a plan, `last_costs (B,)` holds the returned sequences' costs and `last_cost_history (iterations, B)` the
  best cost so far after each iteration; both stay on the device (no host sync).

Every planner is a dataclass (its fields are its JSON config) on `PlannerBase`, whose `plan` is the one loop they
share: start from the warm start, then per iteration `propose` a population (B, S, H, A), score it with ONE
cost_fn call, keep the best sequence ever evaluated, and `update` the search distribution. A planner fills in
`begin` (its search state), `propose` and `update`, and `end` if it keeps anything for the next plan.
`planners.registry` maps names to planner classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from wm.errors import WMError

CostFn = Callable[[Tensor], Tensor]  # (B, S, H, A) -> (B, S)
Bound = float | Sequence[float] | Tensor  # a scalar for every action dim, or one value per dim (A,)


class Planner(Protocol):
    horizon: int
    action_dim: int

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None,
             proposals: Tensor | None = None) -> Tensor:  # (B, H, A)  # fmt: skip
        ...

    def shift(self, solution: Tensor) -> Tensor:  # (B, H, A) -> (B, H, A)
        ...


@dataclass(eq=False)
class PlannerBase:
    """Fields common to every planner: horizon H, action dims A, bounds `low`/`high`, device and seed."""

    horizon: int
    action_dim: int
    low: Bound = -1.0
    high: Bound = 1.0
    device: str = "cpu"
    seed: int = 0

    GUIDED: ClassVar[bool] = False  # whether `plan` takes proposals (the population planners)

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.action_dim < 1:
            raise WMError(f"planner horizon={self.horizon}, action_dim={self.action_dim}: both must be >= 1")
        try:
            bounds = [torch.as_tensor(b, dtype=torch.float32, device=self.device) for b in (self.low, self.high)]
            self.lower, self.upper = (b.broadcast_to((self.action_dim,)).clone() for b in bounds)  # (A,) each
        except RuntimeError as exc:
            raise WMError(f"planner bounds must be scalars or have {self.action_dim} values: pass low/high") from exc
        if not bool((self.lower < self.upper).all()):
            raise WMError(f"planner bounds low={self.low} high={self.high}: need low < high in every action dim")
        same = bool((self.lower == self.lower[0]).all() and (self.upper == self.upper[0]).all())
        self._scalar_bounds = (float(self.lower[0]), float(self.upper[0])) if same else None
        self.generator = torch.Generator(self.device).manual_seed(self.seed)
        self.last_costs: Tensor | None = None  # (B,)
        self.last_cost_history: Tensor | None = None  # (iterations, B)

    @property
    def half_range(self) -> Tensor:
        """(A,) half the width of the bounds: the unit of every relative std in the planners."""
        return (self.upper - self.lower) / 2

    def relative(self, fraction: float) -> float | Tensor:
        """`fraction` of the half-width of the bounds: a float where every dim has the same bounds (a scalar
        multiply of a whole population is several times cheaper than a broadcast one), else (A,)."""
        if self._scalar_bounds is not None:
            return fraction * (self._scalar_bounds[1] - self._scalar_bounds[0]) / 2
        return fraction * self.half_range

    def clip(self, actions: Tensor, inplace: bool = False) -> Tensor:
        """Clamp `(..., A)` actions into `[low, high]`; `inplace` for a population the caller has just made (a new
        large tensor costs a page fault per 4 KB on first write: 0.2 ms of a 1 ms iteration on 64 problems). With
        scalar bounds where every dim has the same ones: torch's clamp by tensors took 10x longer on a CPU."""
        if self._scalar_bounds is not None:
            return actions.clamp_(*self._scalar_bounds) if inplace else actions.clamp(*self._scalar_bounds)
        return actions.clamp_(self.lower, self.upper) if inplace else actions.clamp(self.lower, self.upper)

    def shift(self, solution: Tensor) -> Tensor:
        """Warm start for the next MPC step: drop the executed first step, repeat the last. (B, H, A) -> (B, H, A)."""
        return torch.cat([solution[:, 1:], solution[:, -1:]], dim=1)

    def start(self, batch_size: int, init: Tensor | None) -> Tensor:
        """(B, H, A) starting sequences: the clipped warm start, or the midpoint of the bounds."""
        if init is None:
            mid = (self.lower + self.upper) / 2
            return mid.expand(batch_size, self.horizon, self.action_dim).clone()
        if tuple(init.shape) != (batch_size, self.horizon, self.action_dim):
            expected = (batch_size, self.horizon, self.action_dim)
            raise WMError(f"warm start has shape {tuple(init.shape)}, expected (B, H, A) = {expected}: pass init=None")
        return self.clip(init.detach().to(self.device, torch.float32))

    def evaluate(self, cost_fn: CostFn, actions: Tensor) -> Tensor:
        """Costs (B, S) of `actions (B, S, H, A)`; NaN counts as +inf so a broken sample never wins."""
        costs = cost_fn(actions)
        if costs.shape != actions.shape[:2]:
            raise WMError(f"cost_fn returned shape {tuple(costs.shape)} for actions {tuple(actions.shape)}: "
                          "it must map (B, S, H, A) actions to (B, S) costs")  # fmt: skip
        return costs.nan_to_num(nan=torch.inf, posinf=torch.inf)

    def plan(self, cost_fn: CostFn, batch_size: int, init: Tensor | None = None,
             proposals: Tensor | None = None) -> Tensor:  # fmt: skip
        """(B, H, A) best sequences for B problems; `init (B, H, A)` warm-starts the search (see each planner),
        `proposals (B, P, H, A)` guide it (see the module docstring)."""
        start = self.start(batch_size, init)  # (B, H, A)
        extra, extra_costs = None, None
        if proposals is not None:
            if not self.GUIDED:
                raise WMError(f"{type(self).__name__} takes no proposals; guide cem, icem or mppi")
            extra = self.clip(proposals.detach().to(self.device, torch.float32))  # (B, P, H, A)
            if extra.dim() != 4 or extra.shape[0] != batch_size or extra.shape[2:] != (self.horizon, self.action_dim):
                raise WMError(f"proposals have shape {tuple(proposals.shape)}, expected (B, P, H, A) with B = "
                              f"{batch_size}, H = {self.horizon}, A = {self.action_dim}")  # fmt: skip
            if init is not None:
                extra = torch.cat([extra, start[:, None]], dim=1)
            start = extra[:, 0]
        search = self.begin(start, warm=init is not None)
        best, best_costs = start, torch.full((batch_size,), torch.inf, device=self.device)
        history = []
        for i in range(self.iterations):
            actions = self.propose(search, i)  # (B, S_i, H, A)
            if extra is not None and extra_costs is None:  # scored once, in the same cost_fn call
                costs = self.evaluate(cost_fn, torch.cat([actions, extra], dim=1))
                costs, extra_costs = costs[:, : actions.shape[1]], costs[:, actions.shape[1] :]
            else:
                costs = self.evaluate(cost_fn, actions)  # (B, S_i)
            if extra is not None:
                actions, costs = torch.cat([actions, extra], dim=1), torch.cat([costs, extra_costs], dim=1)
            best, best_costs = keep_best(best, best_costs, actions.detach(), costs.detach())
            self.update(search, i, actions, costs)
            history.append(best_costs)
        self.end(search)
        self.last_costs, self.last_cost_history = best_costs, torch.stack(history)
        return best

    # ------------------------------- what each planner fills in (each also declares an `iterations` field)
    def begin(self, start: Tensor, warm: bool) -> dict:
        """The search state of one plan, from the clipped start sequences `start (B, H, A)`; `warm` says whether
        they are a warm start."""
        raise NotImplementedError

    def propose(self, search: dict, iteration: int) -> Tensor:
        """The population `(B, S_i, H, A)` (inside the bounds) to evaluate at `iteration`."""
        raise NotImplementedError

    def update(self, search: dict, iteration: int, actions: Tensor, costs: Tensor) -> None:
        """Move the search toward the cheap samples: `actions (B, S_i, H, A)`, `costs (B, S_i)`."""
        raise NotImplementedError

    def end(self, search: dict) -> None:
        """Keep what the next plan should start from (nothing by default)."""


def select(actions: Tensor, costs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k cheapest samples per problem, cheapest first: (B, S, H, A), (B, S) -> (B, k, H, A), (B, k)."""
    top, index = costs.topk(k, dim=1, largest=False)
    return actions.gather(1, index[:, :, None, None].expand(-1, -1, *actions.shape[2:])), top


def keep_best(best: Tensor, best_costs: Tensor, actions: Tensor, costs: Tensor) -> tuple[Tensor, Tensor]:
    """Update the best-ever (B, H, A) sequences and (B,) costs with a new population (B, S, H, A), (B, S)."""
    cost, index = costs.min(1)  # (B,) each: fewer kernels than a top-1 (a planning iteration is ~20 small ones)
    better = cost < best_costs
    cheapest = actions[torch.arange(actions.shape[0], device=actions.device), index]  # (B, H, A)
    return torch.where(better[:, None, None], cheapest, best), torch.where(better, cost, best_costs)
