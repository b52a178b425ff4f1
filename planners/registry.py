"""Planners by name, and building one from a planning budget that every planner reads its own way.

`make_planner(name, **fields)` takes the planner's own dataclass fields. `planner_from_budget` takes the generic
budget of the CLI (`samples`, `elites`, `iterations`) and hands each planner the parts it has, under its own field
names (`BUDGET` on each class: CMA-ES calls samples `popsize`; the gradient planner has only iterations).
"""

from __future__ import annotations

from planners.base import Planner
from planners.cem import CEM
from planners.cmaes import CMAES
from planners.gradient import GradientPlanner
from planners.icem import ICEM
from planners.mppi import MPPI
from wm.errors import WMError

PLANNERS: dict[str, type] = {"cem": CEM, "icem": ICEM, "mppi": MPPI, "cmaes": CMAES, "gradient": GradientPlanner}


def make_planner(name: str, **fields) -> Planner:
    """Build the planner called `name` ("cem", "icem", "mppi", "cmaes", "gradient") from its dataclass fields."""
    if name not in PLANNERS:
        raise WMError(f"unknown planner {name!r}: choose one of {', '.join(PLANNERS)}")
    try:
        return PLANNERS[name](**fields)
    except TypeError as exc:
        raise WMError(f"planner {name!r}: {exc}; see the fields of {PLANNERS[name].__name__}") from exc


def planner_from_budget(name: str, horizon: int, action_dim: int, seed: int = 0, device: str = "cpu", **budget):
    """The planner `name` for `horizon` x `action_dim` sequences, given a generic budget (`samples`, `elites`,
    `iterations`); budget entries the planner has no use for are ignored."""
    if name not in PLANNERS:
        raise WMError(f"unknown planner {name!r}: choose one of {', '.join(PLANNERS)}")
    own = {field: budget[key] for key, field in PLANNERS[name].BUDGET.items() if key in budget}
    return make_planner(name, horizon=horizon, action_dim=action_dim, seed=seed, device=device, **own)
