"""The safety guard, e-stop, control loop and LeRobot adapter, against small in-test robots (no network)."""

import logging
import os
import signal
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.robot.estop import EStop
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.lerobot import LeRobotAdapter
from envs.robot.loop import ControlLoop
from envs.robot.protocol import Feature, Robot, RobotError


class FakeRobot:
    """A 2-D velocity robot: proprio = (x, y, step); records every action it is sent."""

    name = "fake"

    def __init__(self):
        self.connected, self.sent, self.pos, self.steps = False, [], np.zeros(2, np.float32), 0

    @property
    def is_connected(self):
        return self.connected

    @property
    def observation_features(self):
        return {"rgb": Feature((8, 8, 3), "uint8"), "proprio": Feature((3,), "float32")}

    @property
    def action_features(self):
        return Feature((2,), "float32", (-1.0, -1.0), (1.0, 1.0))

    def connect(self):
        self.connected = True

    def disconnect(self):
        self.connected = False

    def get_observation(self):
        return {"rgb": np.zeros((8, 8, 3), np.uint8), "proprio": np.r_[self.pos, self.steps].astype(np.float32)}

    def send_action(self, action):
        action = np.asarray(action, np.float32)
        self.sent.append((time.monotonic(), action.copy()))
        self.pos = self.pos + action
        self.steps += 1
        return action


def guarded(**config):
    robot = FakeRobot()
    guard = SafetyGuard(robot, GuardConfig(**config))
    guard.connect()
    return robot, guard


def reasons(guard):
    return [e.reason for e in guard.events]


finite = st.floats(-10, 10, width=32)
any_float = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")))


@settings(max_examples=60, deadline=None)
@given(
    stream=st.lists(st.tuples(any_float, any_float), min_size=1, max_size=30),
    low=st.floats(-1, -0.1),
    high=st.floats(0.1, 1),
    max_delta=st.floats(0.01, 0.5),
)
def test_random_action_streams_never_leave_the_limits(stream, low, high, max_delta):
    robot, guard = guarded(low=low, high=high, max_delta=max_delta, watchdog_s=None)
    hold = np.zeros(2, np.float32)
    previous = hold
    for a in stream:
        guard.get_observation()
        sent = guard.send_action(np.array(a, np.float32))
        assert np.all(np.isfinite(sent))
        assert np.all(sent >= np.float32(low)) and np.all(sent <= np.float32(high))
        assert np.all(np.abs(sent - previous) <= np.float32(max_delta) + 1e-6) or np.array_equal(sent, hold)
        previous = sent
    assert len(robot.sent) == len(stream)


def test_nan_and_inf_are_replaced_by_the_hold_action_and_logged():
    robot, guard = guarded(watchdog_s=None)
    guard.get_observation()
    assert np.array_equal(guard.send_action(np.array([np.nan, 0.5])), [0, 0])
    assert np.array_equal(guard.send_action(np.array([np.inf, 0.5])), [0, 0])
    assert reasons(guard) == ["nonfinite", "nonfinite"]
    assert all(e.time > 0 and e.detail for e in guard.events)


def test_bounds_and_max_delta_clip_like_max_relative_target():
    robot, guard = guarded(high=0.5, max_delta=0.2, watchdog_s=None)
    guard.get_observation()
    np.testing.assert_allclose(guard.send_action(np.array([3.0, -3.0])), [0.2, -0.2])
    np.testing.assert_allclose(guard.send_action(np.array([3.0, -3.0])), [0.4, -0.4])
    np.testing.assert_allclose(guard.send_action(np.array([3.0, -3.0])), [0.5, -0.6])
    assert set(reasons(guard)) == {"bounds", "max_delta"}


def test_leaving_the_workspace_holds():
    robot, guard = guarded(workspace_low=[-1.0, -1.0], workspace_high=[1.0, 1.0], watchdog_s=None)
    guard.get_observation()
    assert np.array_equal(guard.send_action(np.array([1.0, 0.5])), [1.0, 0.5])  # x = 1.0: on the edge
    guard.send_action(np.array([0.5, 0.0]))  # decided on the last observation (x = 0), reaches x = 1.5
    guard.get_observation()
    assert np.array_equal(guard.send_action(np.array([1.0, 1.0])), [0, 0])
    assert reasons(guard) == ["workspace"]


def test_a_stale_observation_holds():
    robot, guard = guarded(watchdog_s=0.05)
    assert np.array_equal(guard.send_action(np.array([0.5, 0.5])), [0, 0])  # no observation at all yet
    guard.get_observation()
    assert np.array_equal(guard.send_action(np.array([0.5, 0.5])), [0.5, 0.5])
    time.sleep(0.08)
    assert np.array_equal(guard.send_action(np.array([0.5, 0.5])), [0, 0])
    assert reasons(guard) == ["stale_observation", "stale_observation"]


def test_the_rate_limit_spaces_actions():
    robot, guard = guarded(max_rate_hz=50, watchdog_s=None)
    guard.get_observation()
    for _ in range(6):
        guard.send_action(np.array([0.1, 0.1]))
    times = np.array([t for t, _ in robot.sent])
    assert np.diff(times).min() >= 0.02 - 1e-3
    assert "rate" in reasons(guard)


def test_watchdog_holds_once_when_no_new_action_arrives():
    robot, guard = guarded(watchdog_s=0.1)
    guard.get_observation()
    guard.send_action(np.array([0.7, -0.7]))
    guard.start_watchdog(period_s=0.005)
    t_last = robot.sent[-1][0]
    time.sleep(0.3)
    guard.disconnect()
    assert reasons(guard) == ["watchdog"]  # once, not every tick
    t_hold, hold = robot.sent[-1]
    assert np.array_equal(hold, [0, 0]) and 0.1 <= t_hold - t_last < 0.1 + 0.1


def test_stop_file_estop_holds_then_disconnects(tmp_path):
    stop_file = tmp_path / "STOP"
    robot = FakeRobot()
    guard = SafetyGuard(robot, GuardConfig(watchdog_s=None), EStop(signals=(), stop_file=stop_file))
    guard.connect()
    guard.get_observation()
    guard.send_action(np.array([0.5, 0.5]))
    stop_file.touch()
    with pytest.raises(RobotError, match="e-stopped"):
        guard.send_action(np.array([0.5, 0.5]))
    assert np.array_equal(robot.sent[-1][1], [0, 0]) and not robot.is_connected
    assert reasons(guard) == ["estop"] and "stop file" in guard.events[0].detail
    with pytest.raises(RobotError, match="e-stopped"):
        guard.get_observation()


def test_signal_estop_is_caught_by_the_watchdog_tick():
    robot = FakeRobot()
    estop = EStop(signals=(signal.SIGUSR1,)).install()
    try:
        guard = SafetyGuard(robot, GuardConfig(watchdog_s=None), estop)
        guard.connect()
        os.kill(os.getpid(), signal.SIGUSR1)
        guard.tick()
    finally:
        estop.uninstall()
    assert guard.stopped == "signal SIGUSR1" and not robot.is_connected
    assert np.array_equal(robot.sent[-1][1], [0, 0])


def test_the_loop_runs_at_its_rate_and_times_each_section():
    robot, guard = guarded(watchdog_s=None)
    assert isinstance(guard, Robot)
    records = []
    stats = ControlLoop(guard, lambda obs: np.full((1, 2), 0.1), hz=50).run(20, records.append)
    assert stats.steps == 20 and 30 <= stats.rate_hz <= 52  # never faster than asked; slack for a busy CPU
    assert all(0 <= r.t_observe + r.t_plan + r.t_send <= r.t_step + 1e-6 for r in records)
    assert [r.chunk_step for r in records] == list(range(20))


def test_a_slow_policy_makes_the_loop_warn_late(caplog):
    robot, guard = guarded(watchdog_s=None)

    def slow(obs):
        time.sleep(0.03)
        return np.zeros((1, 2))

    with caplog.at_level(logging.WARNING, logger="wm.robot"):
        stats = ControlLoop(guard, slow, hz=50).run(3)
    assert stats.late_steps == 3 and "control loop late" in caplog.text


def test_async_planning_drops_stale_actions():
    robot, guard = guarded(watchdog_s=None)

    def plan(obs):  # action k of a chunk planned at step s is meant for step s + k: encode that in the action
        time.sleep(0.035)  # ~3.5 periods at 100 Hz
        step = obs["proprio"][2]
        return np.stack([[step + k, 0.0] for k in range(8)]) / 100.0

    records = []
    stats = ControlLoop(robot, plan, hz=100, async_plan=True, refill_at=4).run(40, records.append)
    assert stats.dropped_actions > 0 and stats.plans >= 3
    for r in records[8:]:  # once planning runs ahead, each executed action was meant for its own step
        assert round(float(r.requested[0]) * 100) == r.step
    assert {r.chunk_step for r in records} != {0}


class FakeLeRobot:
    """Shaped like lerobot's Robot: flat dict features, dict actions, `max_relative_target`-style clipping."""

    name = "so100"
    observation_features = {"shoulder.pos": float, "elbow.pos": float, "front": (32, 48, 3)}
    action_features = {"shoulder.pos": float, "elbow.pos": float}

    def __init__(self):
        self.is_connected, self.present = False, {"shoulder.pos": 10.0, "elbow.pos": -5.0}

    def connect(self, calibrate=True):
        self.is_connected = True

    def disconnect(self):
        self.is_connected = False

    def get_observation(self):
        return {**self.present, "front": np.full((32, 48, 3), 200, np.uint8)}

    def send_action(self, action):
        sent = {k: float(np.clip(v, self.present[k] - 5, self.present[k] + 5)) for k, v in action.items()}
        self.present.update(sent)
        return sent


def test_lerobot_adapter_maps_features_actions_and_hold():
    adapter = LeRobotAdapter(FakeLeRobot(), image_size=16)
    assert isinstance(adapter, Robot)
    guard = SafetyGuard(adapter, GuardConfig(low=-90, high=90, max_delta=3.0, watchdog_s=None))
    guard.connect()
    obs = guard.get_observation()
    assert obs["rgb"].shape == (16, 16, 3) and obs["rgb"].dtype == np.uint8
    np.testing.assert_array_equal(obs["proprio"], [10.0, -5.0])
    assert adapter.observation_features["proprio"].names == ("shoulder.pos", "elbow.pos")
    np.testing.assert_allclose(adapter.hold_action(), [10.0, -5.0])  # hold = present position
    sent = guard.send_action(np.array([30.0, -5.0]))  # the guard limits the change relative to present: +3
    np.testing.assert_allclose(sent, [13.0, -5.0])
    assert reasons(guard) == ["max_delta"]
    with pytest.raises(RobotError, match="no camera 'wrist'"):
        LeRobotAdapter(FakeLeRobot(), camera="wrist")
