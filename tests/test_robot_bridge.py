"""The network bridge: encoding, token, timeouts and reconnects, retries executed once, and the watchdog hold when
the client is killed mid-episode. Servers run in threads on free loopback ports; clients in-process or killed
subprocesses."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from envs.robot import wire
from envs.robot.client import RemoteRobot, parse_address
from envs.robot.estop import EStop
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.protocol import RobotError, controller_view
from envs.robot.server import RobotServer
from envs.robot.sim import SimRobot
from wm.errors import WMError

TOKEN = "test-secret"
CLIENT = """
import sys, time, numpy as np
from envs.robot.client import RemoteRobot
robot = RemoteRobot(sys.argv[1], sys.argv[2], timeout_s=1.0)
robot.connect()
while True:
    robot.get_observation()
    robot.send_action(np.array([0.7, -0.7], np.float32))
    print("sent", flush=True)
    time.sleep(0.05)
"""


class CountingSim(SimRobot):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.actions = 0

    def send_action(self, action):
        self.actions += 1
        return super().send_action(action)


@pytest.fixture
def serve():
    """`serve(port=0, **guard config) -> (server, address)`; every server is stopped and joined afterwards."""
    running = []

    def start(port=0, estop=None, **config):
        config.setdefault("watchdog_s", 0.3)
        server = RobotServer(
            SafetyGuard(CountingSim("wm/PointMaze-v0"), GuardConfig(**config), estop), TOKEN, port=port
        )
        address = server.bind()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((server, stop, thread))
        return server, address

    def stop(server):
        for s, event, thread in running:
            if s is server:
                event.set()
                thread.join(timeout=10)

    start.stop = stop
    yield start
    for _, event, thread in running:
        event.set()
        thread.join(timeout=10)


def test_wire_round_trips_arrays_and_rejects_unsafe_input():
    msg = {"op": "x", "obs": {"rgb": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "ok": np.bool_(True)}}
    msg["list"] = [np.float32(1.5), np.zeros((0, 2), np.float64), np.array([True, False])]
    back = wire.decode(wire.encode(msg))
    np.testing.assert_array_equal(back["obs"]["rgb"], msg["obs"]["rgb"])
    assert back["obs"]["rgb"].dtype == np.uint8 and back["obs"]["ok"] is True and back["list"][0] == 1.5
    assert back["list"][1].shape == (0, 2) and back["list"][2].dtype == bool
    header = b'{"a": {"__nd__": 0, "dtype": "|O", "shape": [1]}}'
    with pytest.raises(ValueError, match="not allowed"):
        wire.decode([header, b"12345678"])
    with pytest.raises(ValueError, match="bytes"):
        wire.decode([b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [3]}}', b"1234"])


@pytest.mark.parametrize("address", ["localhost:5555", "tcp://host", "tcp://h:99999", "udp://h:1", "tcp://a b:1"])
def test_bad_addresses_are_one_line_errors(address):
    with pytest.raises(WMError, match="bad robot address") as e:
        parse_address(address)
    assert "\n" not in str(e.value)


def test_client_drives_the_sim_robot_through_the_guard(serve):
    server, address = serve(high=0.5)
    robot = RemoteRobot(address, TOKEN, timeout_s=2.0)
    robot.connect()
    assert robot.action_features.high == (0.5, 0.5) and robot.control_hz == pytest.approx(10.0)
    obs = robot.get_observation()
    assert obs["rgb"].shape == (64, 64, 3) and obs["proprio"].shape == (4,) and "sim_success" in obs
    assert set(controller_view(obs)) == {"rgb", "proprio"}
    sent = robot.send_action(np.array([0.9, -0.2], np.float32))
    np.testing.assert_allclose(sent, [0.5, -0.2])
    assert [e["reason"] for e in robot.events] == ["bounds"]
    moved = robot.get_observation()["proprio"]
    assert not np.allclose(moved[:2], obs["proprio"][:2])
    start = robot.reset({"state": np.r_[1.0, 1.0, np.zeros(4)]})
    np.testing.assert_allclose(start["proprio"][:2], [1.0, 1.0])
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        robot.get_observation()
        robot.send_action(np.zeros(2, np.float32))
        lat.append(time.perf_counter() - t)
    assert np.percentile(lat, 50) < 0.05  # loopback observe + act round trips: ~1-2 ms on a 2-core CPU
    robot.disconnect()
    assert server.guard.events[-1].reason == "client_left"
    second = RemoteRobot(address, TOKEN, timeout_s=2.0)
    second.connect()
    second.get_observation()
    second.send_action(np.zeros(2, np.float32))
    assert second.events == []  # a new client hears only of events from its own session
    second.disconnect()


def test_a_wrong_token_is_refused_unexecuted(serve):
    server, address = serve()
    robot = RemoteRobot(address, "not-the-token", timeout_s=1.0)
    with pytest.raises(RobotError, match="refused the token"):
        robot.connect()
    with pytest.raises(RobotError, match="refused the token"):
        robot._request("send_action", action=np.ones(2, np.float32))
    assert server.stats["refused"] == 2 and server.guard.robot.actions == 0


def test_a_missing_server_is_a_one_line_error_after_the_retries():
    with zmq.Context.instance().socket(zmq.REP) as probe:  # a free port nobody serves
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    robot = RemoteRobot(f"tcp://127.0.0.1:{port}", TOKEN, timeout_s=0.2, retries=2)
    started = time.monotonic()
    with pytest.raises(RobotError, match="no reply from a robot server") as e:
        robot.connect()
    assert 0.35 < time.monotonic() - started < 2.0 and "\n" not in str(e.value)


def test_a_retried_request_is_executed_once(serve):
    server, address = serve()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(address)
    msg = {"op": "send_action", "token": TOKEN, "client": "c1", "seq": 7, "action": np.ones(2, np.float32)}
    replies = []
    for _ in range(2):
        sock.send_multipart(wire.encode(msg))
        replies.append(wire.decode(sock.recv_multipart()))
    sock.close(linger=0)
    assert all(r["ok"] for r in replies) and server.guard.robot.actions == 1


def test_the_client_reconnects_to_a_restarted_server(serve):
    first, address = serve()
    robot = RemoteRobot(address, TOKEN, timeout_s=0.25, retries=8)
    robot.connect()
    robot.get_observation()
    serve.stop(first)
    port = int(address.rsplit(":", 1)[1])
    restart = threading.Timer(0.4, lambda: serve(port=port))
    restart.start()
    obs = robot.get_observation()  # times out against nobody, reconnects, and gets the new server's answer
    restart.join()
    assert obs["rgb"].shape == (64, 64, 3)


def test_estop_over_the_bridge_is_reported_in_one_line(serve, tmp_path):
    stop_file = tmp_path / "STOP"
    server, address = serve(estop=EStop(signals=(), stop_file=stop_file))
    robot = RemoteRobot(address, TOKEN, timeout_s=1.0)
    robot.connect()
    robot.get_observation()
    robot.send_action(np.array([0.5, 0.5], np.float32))
    stop_file.touch()
    time.sleep(0.05)
    with pytest.raises(RobotError, match="e-stopped") as e:
        robot.send_action(np.array([0.5, 0.5], np.float32))
    assert "\n" not in str(e.value) and server.guard.stopped is not None
    assert np.array_equal(server.guard.robot.last_command, [0, 0])


def test_killing_the_client_mid_episode_makes_the_robot_hold_within_the_watchdog_deadline(serve):
    watchdog = 0.3
    server, address = serve(watchdog_s=watchdog)
    sim = server.guard.robot
    client = subprocess.Popen([sys.executable, "-c", CLIENT, address, TOKEN], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "sent"
        time.sleep(0.2)
        np.testing.assert_allclose(sim.last_command, [0.7, -0.7])
        client.kill()  # SIGKILL: no goodbye, no cleanup
        killed = time.time()
        client.wait(timeout=10)
        deadline = time.monotonic() + 3
        while not np.array_equal(sim.last_command, [0, 0]) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        client.kill()
        client.stdout.close()
    holds = [e for e in server.guard.events if e.reason == "watchdog"]
    assert np.array_equal(sim.last_command, [0, 0]) and len(holds) == 1
    held_after = holds[0].time - killed
    assert 0 < held_after < watchdog + 0.25, held_after
