"""The LeRobot adapter against stand-ins of lerobot 0.6.1's `SO100Follower` and `LeKiwi` (in-memory motor bus and
cameras, no lerobot import): holds on velocity-commanded robots, connecting without calibrating, refusing what the
adapter cannot hold safely, and the config's `max_relative_target` as a per-dim limit.

Each stand-in mirrors the public surface of the lerobot class its docstring names (feature dicts and key names,
`connect(calibrate=True)`, `is_calibrated`, `send_action` returning the clipped dict, the config's fields), read
from the lerobot-0.6.1 wheel; calibration, which would wait for ENTER on stdin there, raises here instead."""

import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.lerobot import LeRobotAdapter
from envs.robot.protocol import RobotError

ARM = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3, "wrist_flex": 4, "wrist_roll": 5, "gripper": 6}
KIWI_ARM = [f"arm_{m}" for m in ARM]
KIWI_WHEELS = ["base_left_wheel", "base_back_wheel", "base_right_wheel"]
STEPS_PER_DEG = 4096.0 / 360.0
# LeKiwi's wheel kinematics (lekiwi.py `_body_to_wheel_raw`): wheels at 240, 0, 120 deg (-90), base radius 0.125 m
KINEMATICS = np.array([[np.cos(a), np.sin(a), 0.125] for a in np.radians(np.array([240, 0, 120]) - 90)])


# ------------------------------------------------------------------------------------------ lerobot stand-ins
def ensure_safe_goal_position(goal_present_pos, max_relative_target):
    """lerobot/robots/utils.py `ensure_safe_goal_position` (without its warning log)."""
    if isinstance(max_relative_target, float):
        diff_cap = dict.fromkeys(goal_present_pos, max_relative_target)
    elif isinstance(max_relative_target, dict):
        if not set(goal_present_pos) == set(max_relative_target):
            raise ValueError("max_relative_target keys must match those of goal_present_pos.")
        diff_cap = max_relative_target
    else:
        raise TypeError(max_relative_target)
    safe = {}
    for key, (goal_pos, present_pos) in goal_present_pos.items():
        safe[key] = present_pos + max(min(goal_pos - present_pos, diff_cap[key]), -diff_cap[key])
    return safe


@dataclass
class CameraConfig:
    """lerobot/cameras/configs.py `CameraConfig`: fps, width, height."""

    fps: int | None = 30
    width: int | None = 32
    height: int | None = 24


class Camera:
    """The part of lerobot/cameras/camera.py `Camera` (OpenCVCamera) the robots use; frames are grey."""

    def __init__(self, config: CameraConfig):
        self.height, self.width, self.is_connected = config.height, config.width, False

    def connect(self, warmup: bool = True) -> None:
        self.is_connected = True

    def read_latest(self, max_age_ms: int = 500) -> np.ndarray:
        return np.full((self.height, self.width, 3), 128, np.uint8)

    def disconnect(self) -> None:
        self.is_connected = False


class FeetechMotorsBus:
    """In memory, the lerobot/motors/feetech `FeetechMotorsBus` calls SOFollower and LeKiwi make: connect,
    disconnect(disable_torque), is_calibrated, sync_read / sync_write of Present_* / Goal_* registers. A goal is
    reached at once: Goal_Position becomes Present_Position, Goal_Velocity becomes Present_Velocity (a wheel keeps
    turning at its last commanded speed). `writes` records every sync_write."""

    def __init__(self, port: str, motors: list[str], calibrated: bool = True):
        self.port, self.motors, self.is_calibrated, self.is_connected = port, list(motors), calibrated, False
        self.registers = {"Present_Position": dict.fromkeys(motors, 0.0), "Present_Velocity": dict.fromkeys(motors, 0)}
        self.writes: list[tuple[str, dict]] = []

    def connect(self) -> None:
        self.is_connected = True

    def disconnect(self, disable_torque: bool = True) -> None:
        self.is_connected = False

    def sync_read(self, data_name: str, motors: list[str] | None = None, num_retry: int = 0) -> dict:
        return {m: self.registers[data_name][m] for m in (self.motors if motors is None else motors)}

    def sync_write(self, data_name: str, values: dict, num_retry: int = 0) -> None:
        self.writes.append((data_name, dict(values)))
        self.registers[data_name.replace("Goal_", "Present_")].update(values)


class StandInRobot:
    """lerobot/robots/robot.py `Robot` with lerobot/utils/decorators.py's connection checks: `connect(calibrate=True)`
    calibrates an uncalibrated robot (there: `input()` prompts; here: raises), `connect_calls` records `calibrate`."""

    name = "robot"

    def __init__(self, config, motors: list[str], calibrated: bool = True):
        self.config, self.id, self.robot_type = config, config.id, self.name
        self.bus = FeetechMotorsBus(config.port, motors, calibrated)
        self.cameras = {name: Camera(cfg) for name, cfg in config.cameras.items()}  # make_cameras_from_configs
        self.connect_calls: list[bool] = []

    @property
    def is_connected(self) -> bool:
        return self.bus.is_connected and all(cam.is_connected for cam in self.cameras.values())

    def connect(self, calibrate: bool = True) -> None:
        self.connect_calls.append(calibrate)
        if self.is_connected:
            raise RuntimeError(f"{type(self).__name__} is already connected.")  # DeviceAlreadyConnectedError
        self.bus.connect()
        if not self.is_calibrated and calibrate:
            self.calibrate()
        for cam in self.cameras.values():
            cam.connect()

    @property
    def is_calibrated(self) -> bool:
        return self.bus.is_calibrated

    def calibrate(self) -> None:
        raise AssertionError(f"{self} asked for calibration: lerobot would wait for ENTER on stdin here")

    def disconnect(self) -> None:
        if not self.is_connected:
            raise RuntimeError(f"{type(self).__name__} is not connected.")  # DeviceNotConnectedError
        self.bus.disconnect(self.config.disable_torque_on_disconnect)
        for cam in self.cameras.values():
            cam.disconnect()

    def _camera_obs(self) -> dict:
        return {name: cam.read_latest() for name, cam in self.cameras.items()}


@dataclass(kw_only=True)
class SO100FollowerConfig:
    """lerobot/robots/so_follower/config_so_follower.py `SOFollowerRobotConfig` (registered "so100_follower") with
    lerobot/robots/config.py `RobotConfig`'s `id`, `calibration_dir` and `type`."""

    port: str
    id: str | None = None
    calibration_dir: str | None = None
    disable_torque_on_disconnect: bool = True
    max_relative_target: float | dict[str, float] | None = None
    cameras: dict[str, CameraConfig] = field(default_factory=lambda: {"front": CameraConfig()})
    use_degrees: bool = True
    num_read_retries: int = 2

    @property
    def type(self) -> str:
        return "so100_follower"


class SO100Follower(StandInRobot):
    """lerobot/robots/so_follower/so_follower.py `SOFollower` (= `SO100Follower`): six `.pos` motors."""

    name = "so_follower"

    def __init__(self, config: SO100FollowerConfig, calibrated: bool = True):
        super().__init__(config, list(ARM), calibrated)

    @property
    def observation_features(self) -> dict:
        cams = {name: (cam.height, cam.width, 3) for name, cam in self.cameras.items()}
        return {**self.action_features, **cams}

    @property
    def action_features(self) -> dict:
        return {f"{motor}.pos": float for motor in self.bus.motors}

    def get_observation(self) -> dict:
        pos = self.bus.sync_read("Present_Position", num_retry=self.config.num_read_retries)
        return {**{f"{motor}.pos": val for motor, val in pos.items()}, **self._camera_obs()}

    def send_action(self, action: dict) -> dict:
        goal_pos = {key.removesuffix(".pos"): val for key, val in action.items() if key.endswith(".pos")}
        if self.config.max_relative_target is not None:
            present_pos = self.bus.sync_read("Present_Position", num_retry=self.config.num_read_retries)
            goal_present_pos = {key: (g_pos, present_pos[key]) for key, g_pos in goal_pos.items()}
            goal_pos = ensure_safe_goal_position(goal_present_pos, self.config.max_relative_target)
        self.bus.sync_write("Goal_Position", goal_pos)
        return {f"{motor}.pos": val for motor, val in goal_pos.items()}


@dataclass(kw_only=True)
class LeKiwiConfig(SO100FollowerConfig):
    """lerobot/robots/lekiwi/config_lekiwi.py `LeKiwiConfig` (registered "lekiwi"): the same fields as
    `SOFollowerRobotConfig` in lerobot 0.6.1 (a subclass here only to share the list) with the port defaulted and
    the default front and wrist cameras, smaller."""

    port: str = "/dev/ttyACM0"
    cameras: dict[str, CameraConfig] = field(
        default_factory=lambda: {"front": CameraConfig(width=32, height=24), "wrist": CameraConfig(width=24, height=32)}
    )

    @property
    def type(self) -> str:
        return "lekiwi"


class LeKiwi(StandInRobot):
    """lerobot/robots/lekiwi/lekiwi.py `LeKiwi`: six `arm_*.pos` motors and three wheels driven by body velocities
    `x.vel`, `y.vel` (m/s), `theta.vel` (deg/s), which are both the measured velocity (observation) and the command
    (action)."""

    name = "lekiwi"

    def __init__(self, config: LeKiwiConfig, calibrated: bool = True):
        super().__init__(config, KIWI_ARM + KIWI_WHEELS, calibrated)

    @property
    def _state_ft(self) -> dict:
        return dict.fromkeys((*(f"{m}.pos" for m in KIWI_ARM), "x.vel", "y.vel", "theta.vel"), float)

    @property
    def observation_features(self) -> dict:
        cams = {cam: (self.config.cameras[cam].height, self.config.cameras[cam].width, 3) for cam in self.cameras}
        return {**self._state_ft, **cams}

    @property
    def action_features(self) -> dict:
        return self._state_ft

    def _body_to_wheel_raw(self, x, y, theta, wheel_radius=0.05, max_raw=3000) -> dict:
        wheel_degps = np.degrees(KINEMATICS @ np.array([x, y, np.radians(theta)]) / wheel_radius)
        biggest = np.abs(wheel_degps).max() * STEPS_PER_DEG
        if biggest > max_raw:
            wheel_degps = wheel_degps * max_raw / biggest
        raw = [int(np.clip(round(d * STEPS_PER_DEG), -0x8000, 0x7FFF)) for d in wheel_degps]
        return dict(zip(KIWI_WHEELS, raw, strict=True))

    def _wheel_raw_to_body(self, left, back, right, wheel_radius=0.05) -> dict:
        speeds = np.radians(np.array([left, back, right]) / STEPS_PER_DEG) * wheel_radius
        x, y, theta_rad = np.linalg.solve(KINEMATICS, speeds)
        return {"x.vel": x, "y.vel": y, "theta.vel": np.degrees(theta_rad)}

    def get_observation(self) -> dict:
        arm_pos = self.bus.sync_read("Present_Position", KIWI_ARM, num_retry=self.config.num_read_retries)
        wheel_vel = self.bus.sync_read("Present_Velocity", KIWI_WHEELS, num_retry=self.config.num_read_retries)
        base_vel = self._wheel_raw_to_body(*(wheel_vel[w] for w in KIWI_WHEELS))
        return {**{f"{k}.pos": v for k, v in arm_pos.items()}, **base_vel, **self._camera_obs()}

    def send_action(self, action: dict) -> dict:
        arm_goal_pos = {k: v for k, v in action.items() if k.endswith(".pos")}
        base_goal_vel = {k: v for k, v in action.items() if k.endswith(".vel")}
        wheel_goal_vel = self._body_to_wheel_raw(*(base_goal_vel[k] for k in ("x.vel", "y.vel", "theta.vel")))
        if self.config.max_relative_target is not None:  # as lerobot: `.pos` keys against bus motor names
            present_pos = self.bus.sync_read("Present_Position", KIWI_ARM, num_retry=self.config.num_read_retries)
            goal_present_pos = {key: (g_pos, present_pos[key]) for key, g_pos in arm_goal_pos.items()}
            arm_goal_pos = ensure_safe_goal_position(goal_present_pos, self.config.max_relative_target)
        self.bus.sync_write("Goal_Position", {k.replace(".pos", ""): v for k, v in arm_goal_pos.items()})
        self.bus.sync_write("Goal_Velocity", wheel_goal_vel)
        return {**arm_goal_pos, **base_goal_vel}

    def disconnect(self) -> None:
        if self.is_connected:
            self.bus.sync_write("Goal_Velocity", dict.fromkeys(KIWI_WHEELS, 0), num_retry=5)  # stop_base
        super().disconnect()


class LeKiwiClient(LeKiwi):
    """lerobot/robots/lekiwi/lekiwi_client.py `LeKiwiClient`'s connection surface: `connect(self)` takes no
    `calibrate` (the host calibrates) and `is_calibrated` is None (its body is `pass`); LeKiwi's state features."""

    name = "lekiwi_client"

    def connect(self) -> None:
        self.connect_calls.append(None)
        self.bus.connect()
        for cam in self.cameras.values():
            cam.connect()

    @property
    def is_calibrated(self):
        return None


# ------------------------------------------------------------------------------------------------------- tests
def kiwi_action(arm: float, x_vel: float, theta_vel: float) -> np.ndarray:
    """A LeKiwi action `(9,)`: every arm joint at `arm`, the base at (x_vel, 0, theta_vel)."""
    return np.array([arm] * 6 + [x_vel, 0.0, theta_vel], np.float32)


def wheel_goals(kiwi: LeKiwi) -> list[dict]:
    return [values for name, values in kiwi.bus.writes if name == "Goal_Velocity"]


def test_a_lekiwi_hold_is_zero_base_velocity_and_the_present_arm_position():
    kiwi = LeKiwi(LeKiwiConfig())
    adapter = LeRobotAdapter(kiwi, image_size=16)
    adapter.connect()
    adapter.send_action(kiwi_action(12.0, 0.2, 30.0))
    measured = kiwi.get_observation()
    assert measured["x.vel"] > 0.1 and measured["theta.vel"] > 10  # moving (the wheel speeds are capped at 3000)
    hold = adapter.hold_action()
    np.testing.assert_allclose(hold, kiwi_action(12.0, 0.0, 0.0))
    adapter.send_action(hold)
    assert wheel_goals(kiwi)[-1] == dict.fromkeys(KIWI_WHEELS, 0)
    assert kiwi.get_observation()["x.vel"] == 0 and kiwi.get_observation()["theta.vel"] == 0
    adapter.disconnect()


def test_the_guard_watchdog_hold_stops_a_lekiwi_base():
    kiwi = LeKiwi(LeKiwiConfig())
    guard = SafetyGuard(LeRobotAdapter(kiwi, image_size=16), GuardConfig(low=-100.0, high=100.0, watchdog_s=0.05))
    guard.connect()
    for _ in range(100):  # the observation must be under 50 ms old when the action arrives; retry on a busy machine
        guard.get_observation()
        guard.send_action(kiwi_action(12.0, 0.2, 30.0))
        if not guard.holding:
            break
    assert not guard.holding and any(wheel_goals(kiwi)[-1].values())  # driving
    time.sleep(0.06)  # past the 50 ms watchdog deadline, with no new action
    guard.tick()
    assert guard.events[-1].reason == "watchdog"
    assert wheel_goals(kiwi)[-1] == dict.fromkeys(KIWI_WHEELS, 0)  # the hold stopped the base, before any disconnect
    assert kiwi.bus.writes[-2] == ("Goal_Position", dict.fromkeys(KIWI_ARM, 12.0))  # and kept the arm where it is
    assert kiwi.is_connected
    guard.disconnect()


def test_an_action_key_the_adapter_cannot_classify_is_refused_at_connect():
    class SO100WithBuzzer(SO100Follower):
        @property
        def action_features(self) -> dict:
            return {**super().action_features, "buzzer.volume": float}

    arm = SO100WithBuzzer(SO100FollowerConfig(port="/dev/ttyACM0"))
    guard = SafetyGuard(LeRobotAdapter(arm, image_size=16), GuardConfig(low=-100.0, high=100.0))
    with pytest.raises(RobotError) as refused:
        guard.connect()
    message = str(refused.value)
    assert "\n" not in message and "['buzzer.volume']" in message
    assert ".pos" in message and ".vel" in message and ".torque" in message  # what it understands
    assert not arm.is_connected and not arm.bus.is_connected


def test_an_uncalibrated_arm_is_refused_naming_lerobot_calibrate_and_never_asked_to_calibrate():
    arm = SO100Follower(SO100FollowerConfig(port="/dev/ttyACM1", id="left"), calibrated=False)
    guard = SafetyGuard(LeRobotAdapter(arm, image_size=16), GuardConfig(low=-100.0, high=100.0))
    with pytest.raises(RobotError) as refused:
        guard.connect()
    message = str(refused.value)
    assert "\n" not in message and "not calibrated" in message
    assert "lerobot-calibrate --robot.type=so100_follower --robot.port=/dev/ttyACM1 --robot.id=left" in message
    assert arm.connect_calls == [False] and not arm.is_connected  # never calibrate=True; disconnected again


def test_connect_never_asks_a_robot_to_calibrate():
    arm = SO100Follower(SO100FollowerConfig(port="/dev/ttyACM0"))
    LeRobotAdapter(arm, image_size=16).connect()
    assert arm.connect_calls == [False] and arm.is_connected
    client = LeKiwiClient(LeKiwiConfig())  # connect() takes no calibrate; is_calibrated None: the host calibrates
    adapter = LeRobotAdapter(client, image_size=16)
    adapter.connect()
    assert client.connect_calls == [None] and client.is_connected
    np.testing.assert_allclose(adapter.hold_action()[6:], 0.0)


@pytest.mark.parametrize(
    "robot_cls, config_cls, limit, expected",
    [
        (SO100Follower, SO100FollowerConfig, None, None),
        (SO100Follower, SO100FollowerConfig, 5.0, [5.0] * 6),
        (SO100Follower, SO100FollowerConfig, {m: float(i) for m, i in ARM.items()}, [1, 2, 3, 4, 5, 6]),
        (LeKiwi, LeKiwiConfig, None, None),
        (LeKiwi, LeKiwiConfig, 5.0, [5.0] * 6 + [np.inf] * 3),
        (LeKiwi, LeKiwiConfig, {m: 2.0 for m in KIWI_ARM}, [2.0] * 6 + [np.inf] * 3),
        (LeKiwi, LeKiwiConfig, {f"{m}.pos": 3.0 for m in KIWI_ARM}, [3.0] * 6 + [np.inf] * 3),  # as LeKiwi keys them
    ],
)
def test_max_relative_target_maps_the_config_onto_the_action_keys(robot_cls, config_cls, limit, expected):
    config = config_cls(port="/dev/ttyACM0", max_relative_target=limit)
    limits = LeRobotAdapter(robot_cls(config), image_size=16).max_relative_target
    if expected is None:
        assert limits is None
    else:
        assert limits.dtype == np.float32 and limits.shape == (len(expected),)
        np.testing.assert_array_equal(limits, np.array(expected, np.float32))


def test_max_relative_target_limits_what_the_robot_clips_and_names_a_missing_motor():
    limits = {motor: float(i) for motor, i in ARM.items()}
    arm = SO100Follower(SO100FollowerConfig(port="/dev/ttyACM0", max_relative_target=limits))
    adapter = LeRobotAdapter(arm, image_size=16)
    adapter.connect()
    sent = adapter.send_action(np.full(6, 50.0, np.float32))  # from 0: the robot clips each motor to its limit
    np.testing.assert_array_equal(sent, adapter.max_relative_target)
    arm.config.max_relative_target = {"shoulder_pan": 1.0}
    with pytest.raises(RobotError, match=r"no limit for \['shoulder_lift', 'elbow_flex'"):
        _ = adapter.max_relative_target
