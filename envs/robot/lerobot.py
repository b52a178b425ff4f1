"""An adapter from a LeRobot `Robot` (duck-typed: nothing is imported from lerobot) to the wm robot protocol.

LeRobot robots describe observations as a flat dict of motor values (`"shoulder_pan.pos": float`) and camera
images (`"front": (H, W, 3)`), and take actions as a dict of motor commands (`"shoulder_pan.pos": float`, and on a
mobile base such as LeKiwi's `"x.vel": float`); `send_action` returns the dict actually sent (after
`max_relative_target` clipping). The adapter maps:
  observation  float features, in declaration order  -> `proprio (P,)` float32
               the camera feature (`camera`, or the first) -> `rgb (image_size, image_size, 3)` uint8 (resized)
  action       `(A,)` float32, in `action_features` order <-> LeRobot's action dict

Every action key is classified by its suffix (the text after the last dot), and the hold action follows it:
  position  `.pos` (`.q`: Unitree G1)                               -> the present position, read from the robot when
            the hold is asked for (`get_observation`'s value for the key), so a hold works before the first
            observation too; a robot whose observation lacks the key holds the position it was last sent
  velocity  `.vel` (`.dq`; `.vx`/`.vy`/`.vtheta`: Reachy 2's base)  -> 0
  effort    `.torque`, `.tau`, `.effort`, `.current`               -> 0
On LeKiwi `x.vel` is both the measured velocity (observation) and the command (action): holding the measured value
would keep the base driving, so velocity and effort keys hold at zero whatever the robot reports. `connect` refuses
(RobotError, one line, before the robot is connected) a robot with an action key it cannot classify.

`connect` never calibrates: LeRobot's `connect(calibrate=True)` default asks for calibration on stdin, which would
hang a server. It calls `connect(calibrate=False)` where the robot's connect takes `calibrate`, and refuses
(RobotError naming the `lerobot-calibrate` command, the robot disconnected again) a robot whose `is_calibrated` is
False afterwards. LeRobot declares no action bounds: pass them to the safety guard (`GuardConfig(low=..., high=...)`);
`max_relative_target` gives the robot config's per-step limit as an `(A,)` vector for the guard's `max_delta`.
"""

from __future__ import annotations

import inspect
from numbers import Real

import numpy as np

from envs.robot.protocol import Feature, RobotError

POSITION_SUFFIXES = ("pos", "q")  # held at the present position
ZERO_HOLD_SUFFIXES = ("vel", "dq", "vx", "vy", "vtheta", "torque", "tau", "effort", "current")  # held at 0


def key_kind(key: str) -> str | None:
    """`"position"`, `"zero"` (velocity / effort: held at 0) or None (unclassified) for a LeRobot action key."""
    suffix = key.rsplit(".", 1)[-1] if "." in key else None
    return "position" if suffix in POSITION_SUFFIXES else "zero" if suffix in ZERO_HOLD_SUFFIXES else None


class LeRobotAdapter:
    """Wrap `robot` (a LeRobot `Robot` instance, or anything shaped like one)."""

    def __init__(self, robot, camera: str | None = None, image_size: int = 64):
        self.robot, self.image_size = robot, image_size
        self.name = f"lerobot:{getattr(robot, 'name', type(robot).__name__)}"
        obs_features = dict(robot.observation_features)
        self.motor_keys = [k for k, v in obs_features.items() if v is float]
        cameras = [k for k, v in obs_features.items() if isinstance(v, tuple) and len(v) == 3]
        if camera is not None and camera not in cameras:
            raise RobotError(f"{self.name} has no camera {camera!r}; it has {cameras}")
        if camera is None and not cameras:
            raise RobotError(f"{self.name} has no camera feature; the world model needs images")
        self.camera = camera or cameras[0]
        self.action_keys = [k for k, v in dict(robot.action_features).items() if v is float]
        kinds = [key_kind(k) for k in self.action_keys]
        self.position_mask = np.array([kind == "position" for kind in kinds], bool)  # (A,) held at the present value
        self.unclassified = [k for k, kind in zip(self.action_keys, kinds, strict=True) if kind is None]
        self._last_sent: np.ndarray | None = None

    @property
    def is_connected(self) -> bool:
        return bool(self.robot.is_connected)

    @property
    def observation_features(self) -> dict[str, Feature]:
        return {
            "rgb": Feature((self.image_size, self.image_size, 3), "uint8"),
            "proprio": Feature((len(self.motor_keys),), "float32", names=tuple(self.motor_keys)),
        }

    @property
    def action_features(self) -> Feature:
        return Feature((len(self.action_keys),), "float32", names=tuple(self.action_keys))

    @property
    def max_relative_target(self) -> np.ndarray | None:
        """The robot config's `max_relative_target` as a per-step limit `(A,)` float32 on the action, or None when
        the config has none. LeRobot's is None, a float (every motor) or a dict motor -> float (motor names without
        `.pos`; a full key such as `"arm_gripper.pos"` is read too); it limits position targets only, so every
        velocity / effort dim is np.inf (unlimited). A dict missing a position motor is a RobotError. LeRobot measures
        the change from the present position, the guard's `max_delta` from the last action sent."""
        limit = getattr(getattr(self.robot, "config", None), "max_relative_target", None)
        if limit is None:
            return None
        out = np.full(len(self.action_keys), np.inf, np.float32)
        positions = [(i, k) for i, k in enumerate(self.action_keys) if self.position_mask[i]]
        if isinstance(limit, Real) and not isinstance(limit, bool):
            out[[i for i, _ in positions]] = float(limit)
            return out
        if not isinstance(limit, dict):
            raise RobotError(
                f"{self.name}: max_relative_target {limit!r} is neither a number nor a dict motor -> number"
            )
        missing = []
        for i, key in positions:
            motor = key.rsplit(".", 1)[0]
            value = limit.get(motor, limit.get(key))
            if value is None:
                missing.append(motor)
            else:
                out[i] = float(value)
        if missing:
            raise RobotError(f"{self.name}: max_relative_target has no limit for {missing}; it has {sorted(limit)}")
        return out

    def connect(self) -> None:
        """Connect without calibrating; refuses (RobotError) unclassified action keys before connecting and an
        uncalibrated robot after (disconnecting it again)."""
        if self.unclassified:
            raise RobotError(
                f"{self.name} has action keys {self.unclassified} the adapter cannot hold safely; it understands "
                f"positions (.{', .'.join(POSITION_SUFFIXES)}: hold = present position) and velocities / efforts "
                f"(.{', .'.join(ZERO_HOLD_SUFFIXES)}: hold = 0)"
            )
        connect = self.robot.connect
        try:
            takes_calibrate = "calibrate" in inspect.signature(connect).parameters
        except (TypeError, ValueError):  # no signature to read (a builtin, a C extension)
            takes_calibrate = False
        if takes_calibrate:
            connect(calibrate=False)
        else:
            connect()
        calibrated = getattr(self.robot, "is_calibrated", True)
        if calibrated is None or calibrated:  # None: not applicable (LeKiwiClient: the host calibrates)
            return
        if self.robot.is_connected:
            self.robot.disconnect()
        raise RobotError(f"{self.name} is not calibrated; calibrate it first: {self.calibrate_command()}")

    def calibrate_command(self) -> str:
        """The `lerobot-calibrate` command line for this robot (type, port and id from its config where it has them)."""
        config = getattr(self.robot, "config", None)
        robot_type = getattr(config, "type", None) or getattr(self.robot, "name", "<robot type>")
        args = [f"--robot.type={robot_type}"]
        args += [f"--robot.{f}={v}" for f in ("port", "id") if (v := getattr(config, f, None)) is not None]
        return " ".join(["lerobot-calibrate", *args])

    def disconnect(self) -> None:
        self.robot.disconnect()

    def get_observation(self) -> dict:
        raw = self.robot.get_observation()
        return {
            "rgb": self._image(raw[self.camera]),
            "proprio": np.array([raw[k] for k in self.motor_keys], np.float32),
        }

    def send_action(self, action) -> np.ndarray:
        action = np.asarray(action, np.float32).reshape(len(self.action_keys))
        sent = self.robot.send_action({k: float(v) for k, v in zip(self.action_keys, action, strict=True)})
        self._last_sent = np.array([sent[k] for k in self.action_keys], np.float32)
        return self._last_sent

    def hold_action(self) -> np.ndarray:
        """The action that keeps the robot where it is `(A,)` float32: the present position for position keys, 0
        for velocity / effort keys (see the module docstring)."""
        if not self.robot.is_connected:
            raise RobotError(f"{self.name} is not connected, so there is no position to hold")
        hold = np.zeros(len(self.action_keys), np.float32)
        if not self.position_mask.any():
            return hold
        raw = self.robot.get_observation()
        for i, key in enumerate(self.action_keys):
            if not self.position_mask[i]:
                continue
            if key in raw:
                hold[i] = raw[key]
            elif self._last_sent is not None:
                hold[i] = self._last_sent[i]
            else:
                raise RobotError(f"{self.name} reports no position for {key}, so there is no position to hold")
        return hold

    def _image(self, frame) -> np.ndarray:
        frame = np.asarray(frame, np.uint8)
        if frame.shape[:2] == (self.image_size, self.image_size):
            return frame
        from PIL import Image

        resized = Image.fromarray(frame).resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(resized, np.uint8)
