"""A simulated robot: any built-in env behind the robot protocol, for rehearsing a validation run on loopback.

The robot is synchronous: each `send_action(a (A,))` steps the env once (`control_dt` of simulated time) with the
clipped action; `get_observation()` returns the current frame. Besides `rgb (H, W, 3) uint8` and `proprio (P,)`
float32 it reports ground truth under `sim_*` keys (`sim_success ()` bool, `sim_distance ()` float32,
`sim_state (S,)` float64) for recording and judging only; `controller_view` keeps them from controllers.
The hold action is zero velocity. `reset({"state": s, "goal": g})` restores an exact start state (extension).
"""

from __future__ import annotations

import numpy as np

from envs.robot.protocol import Feature, RobotError
from wm.errors import WMError


class SimRobot:
    """Any env with state hooks (a built-in, a gymnasium id, `module:factory` or an entry point) as a robot."""

    def __init__(self, env_id: str, image_size: int = 64, seed: int = 0):
        self.name = f"sim:{env_id}"
        self.env_id, self.image_size, self.seed = env_id, image_size, seed
        self.env = None
        self.last_command: np.ndarray | None = None  # (A,) the action the env last stepped with
        self._info: dict = {}

    @property
    def is_connected(self) -> bool:
        return self.env is not None

    def _require(self):
        if self.env is None:
            raise RobotError(f"{self.name} is not connected; call connect() first")
        return self.env

    @property
    def control_hz(self) -> float:
        """Control steps per second of simulated time (1 / control_dt)."""
        return 1.0 / self._require().control_dt

    @property
    def observation_features(self) -> dict[str, Feature]:
        env = self._require()
        return {
            "rgb": Feature((self.image_size, self.image_size, 3), "uint8"),
            "proprio": Feature((env.proprio_dim,), "float32"),
            "sim_success": Feature((), "bool"),
            "sim_distance": Feature((), "float32"),
            "sim_state": Feature((env.state_dim,), "float64"),
        }

    @property
    def action_features(self) -> Feature:
        space = self._require().action_space
        return Feature(space.shape, "float32", tuple(space.low.tolist()), tuple(space.high.tolist()))

    def connect(self) -> None:
        from envs.registry import make_env, require_state_hooks

        if self.env is None:
            env = make_env(self.env_id, self.image_size).unwrapped  # no TimeLimit: a robot runs on
            try:
                require_state_hooks(env, self.env_id, "the simulated robot")  # validation resets to goal states
            except WMError:
                env.close()
                raise
            self.env = env
            self._obs, self._info = self.env.reset(seed=self.seed)
            self.last_command = np.zeros(self.env.action_dim, np.float32)

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def reset(self, options: dict | None = None) -> dict:
        """Start an episode; `options` may hold `"state"` and `"goal"` (simulator state vectors)."""
        self._obs, self._info = self._require().reset(options=options or None)
        self.last_command = np.zeros_like(self.last_command)
        return self.get_observation()

    def get_observation(self) -> dict:
        self._require()
        return {
            "rgb": self._obs["rgb"],
            "proprio": self._obs["proprio"],
            "sim_success": np.bool_(self._info["success"]),
            "sim_distance": np.float32(self._info.get("distance", np.nan)),  # NaN: no goal (or no distance hook)
            "sim_state": self._info["state"],
        }

    def send_action(self, action: np.ndarray) -> np.ndarray:
        env = self._require()
        sent = np.clip(np.asarray(action, np.float32).reshape(env.action_dim), -1.0, 1.0)
        self._obs, _, _, _, self._info = env.step(sent)
        self.last_command = sent
        return sent

    def hold_action(self) -> np.ndarray:
        return np.zeros(self._require().action_dim, np.float32)
