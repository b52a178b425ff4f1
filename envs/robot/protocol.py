"""The robot contract, modelled on LeRobot's `Robot`: any controller drives any robot, real or simulated.

A robot observes `{"rgb": (H, W, 3) uint8, "proprio": (P,) float32, ...}` and takes one action vector `(A,)`
float32 per control step. `send_action` returns the action actually sent (after the robot's own clipping, or the
safety guard's), which may differ from the one requested. Extra observation keys beginning with `sim_` are
simulator ground truth (success flag, distance, state): they may be recorded but never reach a controller
(`controller_view` strips them).

A `Controller` (`envs.controller`: MPC, random actions, a learned policy) is what the control loop drives a robot
with.

Optional extensions a robot may have:
  `reset(options) -> obs`  put the scene in a start state (the simulated robot: `{"state": s, "goal": g}`); for a
                           real robot, resetting is an operator action and the method is absent;
  `hold_action() -> (A,)`  the action that keeps the robot where it is (zero velocity for velocity-commanded
                           robots, the current position for position-commanded arms); zeros when absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from wm.errors import WMError

CONTROLLER_KEYS = ("rgb", "proprio")


class RobotError(WMError):
    """The robot (or the link to it) failed: disconnected, timed out, refused, e-stopped."""


@dataclass(frozen=True)
class Feature:
    """One observation entry or the action vector: shape, dtype and, for actions, bounds and per-dim names."""

    shape: tuple[int, ...]
    dtype: str
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    names: tuple[str, ...] | None = None

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "low": self.low, "high": self.high, "names": self.names}

    @classmethod
    def from_json(cls, d: dict) -> Feature:
        tup = lambda v: None if v is None else tuple(v)  # noqa: E731
        return cls(
            tuple(int(s) for s in d["shape"]), d["dtype"], tup(d.get("low")), tup(d.get("high")), tup(d.get("names"))
        )


@runtime_checkable
class Robot(Protocol):
    """connect / disconnect / features / get_observation / send_action, as LeRobot's `Robot` (actions as vectors)."""

    name: str

    @property
    def is_connected(self) -> bool: ...

    @property
    def observation_features(self) -> dict[str, Feature]: ...

    @property
    def action_features(self) -> Feature: ...

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: np.ndarray) -> np.ndarray: ...


def controller_view(obs: dict) -> dict:
    """What a controller may see of an observation: rgb and proprio only (never `sim_*` ground truth)."""
    return {k: obs[k] for k in CONTROLLER_KEYS if k in obs}


def hold_action(robot) -> np.ndarray:
    """The robot's hold action `(A,)` float32 (zeros unless the robot defines `hold_action`)."""
    if hasattr(robot, "hold_action"):
        return np.asarray(robot.hold_action(), np.float32)
    return np.zeros(robot.action_features.shape, np.float32)
