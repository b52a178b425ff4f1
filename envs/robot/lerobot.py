"""An adapter from a LeRobot `Robot` (duck-typed: nothing is imported from lerobot) to the wm robot protocol.

LeRobot robots describe observations as a flat dict of motor values (`"shoulder_pan.pos": float`) and camera
images (`"front": (H, W, 3)`), and take actions as a dict of motor targets (`"shoulder_pan.pos": float`);
`send_action` returns the dict actually sent (after `max_relative_target` clipping). The adapter maps:
  observation  float features, in declaration order  -> `proprio (P,)` float32
               the camera feature (`camera`, or the first) -> `rgb (image_size, image_size, 3)` uint8 (resized)
  action       `(A,)` float32, in `action_features` order <-> LeRobot's action dict
The hold action of a position-controlled arm is its present position, read from the robot when the hold is asked
for (`get_observation`'s motor values for the action keys), so a hold works before the first observation too (a
server stopping before any request, a guard limiting the first action); a robot whose observation lacks the
action keys holds its last sent action. LeRobot declares no action bounds: pass them to the safety guard
(`GuardConfig(low=..., high=...)`).
"""

from __future__ import annotations

import numpy as np

from envs.robot.protocol import Feature, RobotError


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

    def connect(self) -> None:
        self.robot.connect()

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
        """The present joint positions `(A,)` float32 (see the module docstring)."""
        if not self.robot.is_connected:
            raise RobotError(f"{self.name} is not connected, so there is no position to hold")
        raw = self.robot.get_observation()
        if all(k in raw for k in self.action_keys):
            return np.array([raw[k] for k in self.action_keys], np.float32)
        if self._last_sent is not None:
            return self._last_sent.copy()
        raise RobotError(f"{self.name} reports no position for {self.action_keys}, so there is no position to hold")

    def _image(self, frame) -> np.ndarray:
        frame = np.asarray(frame, np.uint8)
        if frame.shape[:2] == (self.image_size, self.image_size):
            return frame
        from PIL import Image

        resized = Image.fromarray(frame).resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(resized, np.uint8)
