"""Who decides whether a validation episode reached its goal, and the operator's part of a run on a real robot.

- `LatentJudge`: the visual-latent MSE between the final observation and the goal under the checkpoint's encoder
  is below a threshold (default 1.0: on held-out PointMaze pairs 1% false successes, a quarter of true ones);
- `SimJudge`: the simulated robot's own ground truth, the env's `is_success(state, goal)` on the final state, which
  the robot reports as `sim_success` in every observation (`envs.robot.sim`); scripted runs need no operator;
- `OperatorJudge`: a y/n answer on stdin (None when stdin is closed, which stops the run).
"""

from __future__ import annotations

import sys

from wm.validation.recorder import latent_distance


class LatentJudge:
    kind = "latent"

    def __init__(self, model, threshold: float = 1.0):
        self.model, self.threshold = model, threshold

    def __call__(self, final_obs: dict, goal_obs: dict, episode: int) -> bool:
        return latent_distance(self.model, final_obs, goal_obs) < self.threshold

    def describe(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold}


class SimJudge:
    kind = "sim"

    def __call__(self, final_obs: dict, goal_obs: dict, episode: int) -> bool:
        return bool(final_obs["sim_success"])

    def describe(self) -> dict:
        return {"kind": self.kind, "threshold": None}


class OperatorJudge:
    kind = "operator"

    def __call__(self, final_obs: dict, goal_obs: dict, episode: int) -> bool | None:
        return ask_operator(f"episode {episode}: did the robot reach the goal? [y/n] ")

    def describe(self) -> dict:
        return {"kind": self.kind, "threshold": None}


def ask_operator(prompt: str) -> bool | None:
    """y/n from stdin; None when stdin is closed."""
    while True:
        print(prompt, end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            return None
        if line.strip().lower() in ("y", "yes", "n", "no"):
            return line.strip().lower().startswith("y")


def wait_for_operator_reset(episode: int) -> None:
    """A real robot's reset is the operator's job: ask for the start pose and wait for Enter."""
    print(f"episode {episode}: put the robot in its start pose, then press Enter", file=sys.stderr, flush=True)
    sys.stdin.readline()
