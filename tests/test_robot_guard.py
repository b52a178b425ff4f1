"""The safety guard, e-stop, control loop, LeRobot adapter and MPC on a robot, against small in-test robots (no
network). Nothing here depends on how fast a busy machine is: waits are for events, with generous deadlines, and
the rates and latencies themselves are measured by scripts/bench_robot.py."""

import json
import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.controller import Controller
from envs.robot.estop import EStop
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.lerobot import LeRobotAdapter
from envs.robot.loop import ControlLoop
from envs.robot.protocol import Feature, Robot, RobotError, hold_action
from planners.mpc import MPCController
from planners.objectives import goal_objective
from planners.registry import make_planner
from wm.errors import WMError
from wm.models.protocol import ModelSpec


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


def guarded(estop=None, **config):
    robot = FakeRobot()
    guard = SafetyGuard(robot, GuardConfig(**config), estop)
    guard.connect()
    return robot, guard


def reasons(guard):
    return [e.reason for e in guard.events]


def wait_until(condition, timeout=10.0):
    """Poll `condition()` until true; fails the test after `timeout` s (a deadline no busy machine reaches)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


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
    robot, guard = guarded(watchdog_s=0.5)
    assert np.array_equal(guard.send_action(np.array([0.5, 0.5])), [0, 0])  # no observation at all yet
    guard.get_observation()
    assert np.array_equal(guard.send_action(np.array([0.5, 0.5])), [0.5, 0.5])
    time.sleep(0.6)
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
    wait_until(lambda: len(robot.sent) == 2)
    time.sleep(0.1)  # many more ticks
    guard.disconnect()
    assert reasons(guard) == ["watchdog"]  # once, not every tick
    t_hold, hold = robot.sent[-1]
    assert np.array_equal(hold, [0, 0]) and t_hold - t_last >= 0.1  # never early (how late: bench_robot.py)


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


class Chunks:
    """A `Controller` for one robot from a function of its view (no batch axis) to a chunk `(K, A)`."""

    latencies: list[float] = []

    def __init__(self, fn):
        self.fn = fn

    def reset(self, goal_obs: dict) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        return np.asarray(self.fn({k: v if k == "step" else v[0] for k, v in obs.items()}))[None]

    def executed(self, step: int, obs: dict, sent: np.ndarray) -> None:
        pass


def test_the_loop_runs_at_its_rate_and_times_each_section():
    robot, guard = guarded(watchdog_s=None)
    assert isinstance(guard, Robot) and isinstance(Chunks(None), Controller)
    records = []
    stats = ControlLoop(guard, Chunks(lambda obs: np.full((1, 2), 0.1)), hz=50).run(20, records.append)
    assert stats.steps == 20 and stats.rate_hz <= 50.5  # never faster than asked (how close: bench_robot.py)
    assert all(0 <= r.t_observe + r.t_plan + r.t_send <= r.t_step + 1e-6 for r in records)
    assert [r.chunk_step for r in records] == list(range(20))


def test_a_slow_policy_makes_the_loop_warn_late(caplog):
    robot, guard = guarded(watchdog_s=None)

    def slow(obs):
        time.sleep(0.03)
        return np.zeros((1, 2))

    with caplog.at_level(logging.WARNING, logger="wm.robot"):
        stats = ControlLoop(guard, Chunks(slow), hz=50).run(3)
    assert stats.late_steps == 3 and "control loop late" in caplog.text


def test_async_planning_drops_stale_actions():
    robot, guard = guarded(watchdog_s=None)

    def plan(obs):  # action k of a chunk planned at step s is meant for step s + k: encode that in the action
        time.sleep(0.035)  # ~3.5 periods at 100 Hz
        step = obs["proprio"][2]
        return np.stack([[step + k, 0.0] for k in range(8)]) / 100.0

    records = []
    stats = ControlLoop(robot, Chunks(plan), hz=100, async_plan=True, refill_at=4).run(40, records.append)
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


# ------------------------------------------------------------------------------ guard: configuration and checks
def test_a_workspace_box_needs_both_bounds_of_equal_length():
    with pytest.raises(WMError, match="needs both workspace_low and workspace_high"):
        GuardConfig(workspace_low=[-1.0, -1.0])
    with pytest.raises(WMError, match="needs both"):
        GuardConfig(workspace_high=[1.0])
    with pytest.raises(WMError, match="as many values"):
        GuardConfig(workspace_low=[-1.0, -1.0], workspace_high=[1.0])
    with pytest.raises(WMError, match="each low below high"):
        GuardConfig(workspace_low=[1.0], workspace_high=[-1.0])


class NoProprioRobot(FakeRobot):
    @property
    def observation_features(self):
        return {"rgb": Feature((8, 8, 3), "uint8")}

    def get_observation(self):
        return {"rgb": np.zeros((8, 8, 3), np.uint8)}


def test_a_workspace_box_refuses_a_robot_without_proprio():
    box = {"workspace_low": [-1.0, -1.0], "workspace_high": [1.0, 1.0], "watchdog_s": None}
    bare = NoProprioRobot()
    with pytest.raises(WMError, match=r"bounds proprio\[:2\] but fake reports no proprio"):
        SafetyGuard(bare, GuardConfig(**box)).connect()
    assert not bare.is_connected
    with pytest.raises(WMError, match=r"reports proprio \(3,\)"):
        SafetyGuard(FakeRobot(), GuardConfig(workspace_low=[-1.0] * 4, workspace_high=[1.0] * 4)).connect()


def test_the_workspace_is_checked_on_fresh_proprio_not_on_what_the_client_last_observed():
    """Finding 1. Before: the box was checked against the last observation the client asked for, so a controller
    that observed once and then pushed drove the robot 24-155 steps past the edge with no workspace event."""
    robot, guard = guarded(workspace_low=[-0.3, -0.3], workspace_high=[0.3, 0.3], watchdog_s=1.0, max_delta=0.5)
    guard.get_observation()  # observed once, inside the box
    for _ in range(40):  # then pushes, never observing again (well within the watchdog deadline)
        guard.send_action(np.array([-0.2, 0.0]))
    assert robot.pos[0] >= -0.3 - 0.2 - 1e-6  # at most the one step that crossed the edge
    assert "workspace" in reasons(guard) and "outside the workspace" in guard.events[-1].detail
    assert np.array_equal(robot.sent[-1][1], [0, 0])  # holding


class ReadsProprio(FakeRobot):
    """A robot with the cheap `read_proprio` extension: the guard reads that instead of a whole observation."""

    def __init__(self):
        super().__init__()
        self.reads, self.observations = 0, 0

    def read_proprio(self):
        self.reads += 1
        return np.r_[self.pos, self.steps].astype(np.float32)

    def get_observation(self):
        self.observations += 1
        return super().get_observation()


def test_the_guard_reads_proprio_through_read_proprio_where_the_robot_has_it():
    robot = ReadsProprio()
    guard = SafetyGuard(robot, GuardConfig(workspace_low=[-1.0], workspace_high=[1.0], watchdog_s=None))
    guard.connect()
    for _ in range(3):
        guard.send_action(np.array([0.1, 0.0]))
    assert robot.reads == 3 and robot.observations == 0


@pytest.mark.parametrize(
    "limits, match",
    [
        ({"max_delta": float("nan")}, "max_delta must be finite"),
        ({"max_delta": -0.5}, "max_delta must be positive"),
        ({"max_delta": 0.0}, "max_delta must be positive"),
        ({"max_delta": [0.5, float("-inf")]}, "max_delta must be"),
        ({"max_rate_hz": float("nan")}, "max_rate_hz must be finite"),
        ({"max_rate_hz": -5.0}, "max_rate_hz must be positive"),
        ({"watchdog_s": float("inf")}, "watchdog_s must be finite"),
        ({"watchdog_s": 0.0}, "watchdog_s must be positive"),
        ({"low": float("nan")}, "low must be finite"),
        ({"low": 1.0, "high": -1.0}, "each low below its high"),
        ({"workspace_low": [float("nan")], "workspace_high": [1.0]}, "workspace_low must be finite"),
        ({"max_rate_hz": 0.25, "watchdog_s": 1.0}, "raise the rate to at least 1 Hz"),
    ],
)
def test_every_guard_limit_is_checked_when_the_config_is_made(limits, match):
    """Finding 2 (and 3's start check). Before: --max-delta nan turned every action into NaN after the guard's own
    NaN check, and max_delta=-0.5 sent -0.5, -1.0, -1.5, -2.0 past bounds of +-1."""
    with pytest.raises(WMError, match=match):
        GuardConfig(**limits)


def test_an_unlimited_dim_is_inf_and_the_bound_clip_is_the_last_word():
    robot, guard = guarded(max_delta=[0.25, float("inf")], watchdog_s=None)  # inf: a dim max_delta leaves free
    guard.get_observation()
    sent = [guard.send_action(np.array([5.0, -5.0])) for _ in range(6)]
    assert all(np.all(np.abs(s) <= 1.0) for s in sent)  # never past the bounds, whatever the limits did
    np.testing.assert_allclose(sent[0], [0.25, -1.0])
    np.testing.assert_allclose(sent[-1], [1.0, -1.0])


def test_a_start_outside_the_workspace_or_not_finite_is_refused():
    """Finding 10. Before: `wm validate --goals` reset a simulated robot to a start of 1e30 unchecked."""
    from envs.robot.sim import SimRobot

    box = GuardConfig(workspace_low=[-5.0, -5.0], workspace_high=[5.0, 5.0], watchdog_s=None)
    guard = SafetyGuard(SimRobot("wm/PointMaze-v0"), box)
    guard.connect()
    start = guard.robot.get_observation()["sim_state"].copy()
    guard.reset({"state": start})
    with pytest.raises(RobotError, match="outside the workspace"):
        guard.reset({"state": np.full_like(start, 1e30)})
    assert reasons(guard)[-1] == "workspace"
    guard.disconnect()


@pytest.mark.parametrize("action", [np.zeros(3), np.float32(0.5), [[0.1, 0.2]], "fast", {"x": 1.0}])
def test_a_malformed_action_is_a_hold_and_an_event_not_an_unheld_exception(action):
    robot, guard = guarded(watchdog_s=None)
    guard.get_observation()
    guard.send_action(np.array([0.5, 0.5]))
    assert np.array_equal(guard.send_action(action), [0, 0]) and np.array_equal(robot.sent[-1][1], [0, 0])
    assert reasons(guard) == ["malformed"] and "takes (2,)" in guard.events[0].detail and guard.holding


def test_a_rate_wait_holds_no_lock_and_an_estop_during_it_stops_the_action():
    estop = EStop(signals=())
    robot, guard = guarded(estop, max_rate_hz=0.1, watchdog_s=None)  # 10 s between commands (the e-stop ends it)
    guard.get_observation()
    guard.send_action(np.array([0.25, 0.25]))
    outcome = {}

    def second():
        try:
            outcome["sent"] = guard.send_action(np.array([0.9, 0.9]))
        except RobotError as e:
            outcome["error"] = str(e)

    sender = threading.Thread(target=second)
    sender.start()
    wait_until(lambda: "rate" in reasons(guard))  # the sender is waiting out the period
    guard.get_observation()  # the lock is free during the wait: observations, watchdog ticks and holds go on
    guard.tick()
    assert len(robot.sent) == 1
    estop.trip("test trip")
    sender.join(timeout=30)
    assert "e-stopped (test trip)" in outcome["error"] and "sent" not in outcome
    assert [a.tolist() for _, a in robot.sent] == [[0.25, 0.25], [0.0, 0.0]] and not robot.is_connected


def test_the_event_log_keeps_the_newest_in_memory_and_every_event_on_disk(tmp_path):
    robot = FakeRobot()
    path = tmp_path / "safety.jsonl"
    guard = SafetyGuard(robot, GuardConfig(watchdog_s=None), event_log=path, max_events=3)
    guard.connect()
    guard.get_observation()
    for i in range(10):
        guard.send_action(np.array([np.nan, float(i)]))
    events = guard.events
    assert len(events) == 10 and events.counts == {"nonfinite": 10}
    assert [e.step for e in events] == [8, 9, 10] and events[-1].step == 10 and events[7].step == 8
    assert [e.step for e in events[8:]] == [9, 10] and [e.step for e in events[0:]] == [8, 9, 10]
    assert events[10:] == [] and events[2:5] == []
    with pytest.raises(IndexError, match="not in memory"):
        events[0]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["step"] for e in lines] == list(range(1, 11)) and {e["reason"] for e in lines} == {"nonfinite"}


# ------------------------------------------------------------------------------ LeRobot: holding before any observation
def test_lerobot_holds_its_present_position_before_any_observation():
    arm = FakeLeRobot()
    adapter = LeRobotAdapter(arm, image_size=16)
    guard = SafetyGuard(adapter, GuardConfig(low=-90, high=90, watchdog_s=None))
    guard.connect()
    np.testing.assert_allclose(hold_action(adapter), [10.0, -5.0])  # what a server's hello reports first
    arm.present = {"shoulder.pos": 12.0, "elbow.pos": -7.0}  # moved by hand: the hold is where it is now
    sent = []
    arm.send_action = lambda action: sent.append(action) or action
    guard.hold("server_stop", "the server is stopping")  # a server stopping before any request
    assert sent == [{"shoulder.pos": 12.0, "elbow.pos": -7.0}] and reasons(guard) == ["server_stop"]
    guard.disconnect()
    with pytest.raises(RobotError, match="not connected"):
        adapter.hold_action()


# ------------------------------------------------------------------------------ MPC: the sent actions are its past
class BlockModel:
    """Latent = proprio (x, y, step) (N=1, D=3); a block of `frameskip` 2-D actions moves (x, y) by their sum / 10.
    Records the history steps and past actions of every rollout; each rollout takes `delay` s (planning time)."""

    def __init__(self, frameskip=2, num_hist=3, delay=0.0):
        self.spec = ModelSpec("block", frameskip, 2, num_hist, image_size=1, tokens=1, latent_dim=3, visual_dim=3,
                              proprio_dim=0)  # fmt: skip
        self.delay, self.seen = delay, []

    def encode(self, obs):
        return obs["proprio"].float()[:, :, None, :]  # (B, T, 1, 3)

    def rollout(self, z_hist, actions, past_actions=None):
        past = None if past_actions is None else past_actions[0].clone()
        self.seen.append((z_hist[0, :, 0, 2].round().int().tolist(), past))
        time.sleep(self.delay)
        moves = actions.reshape(*actions.shape[:-1], -1, 2).sum(-2) * 0.1  # (B, [S,] H, 2)
        start = z_hist[:, -1, 0, :2].reshape(len(z_hist), *[1] * (moves.ndim - 2), 2)
        pos = start + moves.cumsum(-2)
        return torch.cat([pos, torch.zeros_like(pos[..., :1])], -1)[..., None, :]  # (B, [S,] H, 1, 3)


@pytest.mark.parametrize("async_plan", [False, True])
def test_mpc_on_a_robot_plans_from_the_actions_actually_sent(async_plan):
    robot, guard = guarded(high=0.05, max_delta=0.04, watchdog_s=None)  # the guard clips most planned actions
    model = BlockModel(frameskip=2, num_hist=3, delay=0.004 if async_plan else 0.0)
    planner = make_planner("cem", horizon=3, action_dim=4, samples=16, elites=4, iterations=2, seed=0)
    mpc = MPCController(model, planner, goal_objective(visual_dim=2), replan_every=2)
    mpc.reset({"rgb": np.zeros((1, 8, 8, 3), np.uint8), "proprio": np.array([[0.5, 0.5, 0.0]], np.float32)})
    loop = ControlLoop(guard, mpc, hz=100, async_plan=async_plan, refill_at=2)
    records = []
    stats = loop.run(24, records.append)
    assert mpc.chunk == 4 and stats.plans >= 5 and len(mpc.latencies) >= stats.plans
    sent = {r.step: r.sent for r in records}
    assert any(not np.allclose(r.sent, r.requested) for r in records)  # what was planned is not what was sent
    plan_steps = sorted({r.chunk_step for r in records})
    checked = 0
    for frames, past in model.seen:
        assert 0 <= frames[-1] < 24  # planned from one of the loop's observations
        assert np.all(np.diff(frames) == 2) and len(frames) == min(3, frames[-1] // 2 + 1)  # block-spaced history
        if len(frames) > 1:
            expected = [np.concatenate([sent[s], sent[s + 1]]) for s in frames[:-1]]
            np.testing.assert_allclose(past.numpy(), np.stack(expected), atol=1e-6)
            checked += 1
    assert checked > 0
    if async_plan:
        assert any(s % 2 for s in plan_steps) or stats.dropped_actions > 0  # plans from any step, stale ones dropped


def test_mpc_keeps_what_later_plans_need_and_needs_to_be_told_what_was_sent():
    model = BlockModel(frameskip=2, num_hist=3)
    planner = make_planner("cem", horizon=2, action_dim=4, samples=8, elites=2, iterations=1, seed=0)
    mpc = MPCController(model, planner, goal_objective(visual_dim=2))
    mpc.reset({"rgb": np.zeros((1, 8, 8, 3), np.uint8), "proprio": np.zeros((1, 3), np.float32)})

    def obs(step):
        return {"rgb": np.zeros((1, 8, 8, 3), np.uint8), "proprio": np.array([[0, 0, step]], np.float32), "step": step}

    assert mpc.act(obs(0)).shape == (1, 2, 2)
    with pytest.raises(WMError, match=r"not told what was sent at steps \[0, 1\]"):
        mpc.act(obs(2))
    for step in range(5):
        mpc.executed(step, obs(step), np.full((1, 2), step, np.float32))
        if step in (3, 4):  # plans from any step (asynchronous planning): 3 (history 1, 3), then 4 (0, 2, 4)
            mpc.act(obs(step))
            frames, past = model.seen[-1]
            assert frames == list(range(step % 2, step + 1, 2))
            np.testing.assert_array_equal(past[:, ::2], [[s, s + 1] for s in frames[:-1]])
