"""The network bridge: encoding, signing (the token never travels), replays, limits, malformed messages, Curve
encryption, reply checks, timeouts and reconnects, retries executed once, and the watchdog hold when the client is
killed mid-episode or the socket is flooded. Servers run in threads on free loopback ports; clients in-process,
raw sockets, or killed subprocesses. Waits are event-driven with generous deadlines (pure speed lives in
scripts/bench_robot_bridge.py)."""

import os
import secrets
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from envs.robot import client as client_module
from envs.robot import wire
from envs.robot.client import RemoteRobot, parse_address
from envs.robot.estop import EStop
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.keys import is_loopback, keygen, load_public_key, load_secret_key
from envs.robot.protocol import RobotError, controller_view
from envs.robot.server import RobotServer
from envs.robot.sim import SimRobot
from wm.app.cli import main
from wm.errors import WMError

TOKEN = "test-secret"
CLIENT = """
import sys, time, numpy as np
from envs.robot.client import RemoteRobot
robot = RemoteRobot(sys.argv[1], sys.argv[2], timeout_s=5.0)
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
        self.actions, self.sent_at = 0, []

    def send_action(self, action):
        self.actions += 1
        self.sent_at.append((time.monotonic(), np.asarray(action, np.float32).copy()))
        return super().send_action(action)


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    """Poll `condition()` until it holds or `timeout_s` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.fixture
def serve():
    """`serve(port=0, estop=None, curve=None, **guard config) -> (server, address)`; every server is stopped and
    joined afterwards (and must still be running until then: no message may stop it)."""
    running = []

    def start(port=0, estop=None, curve=None, **config):
        config.setdefault("watchdog_s", 0.3)
        guard = SafetyGuard(CountingSim("wm/PointMaze-v0"), GuardConfig(**config), estop)
        server = RobotServer(guard, TOKEN, port=port, curve_secret_key=curve)
        address = server.bind()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
        thread.start()
        server.thread = thread
        running.append((server, stop, thread))
        raw = Raw(address, server.public_key)  # serving once it answers (the robot is connected)
        assert raw.ask(signed({"op": "hello", "call": 1}, 1, client=secrets.token_bytes(16)))[1]["ok"]
        raw.close()
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


class Raw:
    """A DEALER socket speaking raw frames to a server, as a REQ would (empty delimiter first)."""

    def __init__(self, address: str, server_key: bytes | None = None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            self.sock.curve_serverkey = server_key
            self.sock.curve_publickey, self.sock.curve_secretkey = zmq.curve_keypair()
        self.sock.connect(address)

    def ask(self, frames, timeout_s: float = 10.0) -> tuple[wire.Auth, dict]:
        """Send `frames`, return the reply's (auth, message); fails the test on a timeout."""
        self.sock.send_multipart([b"", *frames])
        assert self.sock.poll(int(timeout_s * 1000)), "the server did not answer"
        reply = self.sock.recv_multipart()
        assert reply[0] == b""
        return wire.parse_auth(reply[1]), wire.decode(reply[2:])

    def close(self):
        self.sock.close()


def signed(message, seq: int, client: bytes = b"c" * 16, token: str = TOKEN, timestamp: float | None = None,
           session: str | None = None) -> list:  # fmt: skip
    """A request `[auth, *body]` signed as a client would (`message`: a dict, with the server's `session` added
    when given, or body frames)."""
    if isinstance(message, dict) and session is not None:
        message = {**message, "session": session}
    body = wire.encode(message) if isinstance(message, dict) else message
    stamp = time.time() if timestamp is None else timestamp
    return [wire.sign(token.encode(), wire.MAGIC_REQUEST, client, seq, stamp, body), *body]


def deep(depth: int) -> bytes:
    return b'{"op": "hello", "call": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"


# ---------------------------------------------------------------------------------------------------- wire
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


@pytest.mark.parametrize(
    "frames, match",
    [
        ([deep(100_000)], "over the limit"),  # RecursionError before
        ([deep(5_000)], "nests deeper"),  # under the header limit, over the depth limit
        ([deep(40)], "nests deeper"),
        ([b'{"a": {"__nd__": 0, "dtype": 123, "shape": [1]}}', b"1234"], "bad array dtype"),  # TypeError before
        ([b'{"a": {"__nd__": 0, "dtype": "(2,)f4", "shape": [1]}}', b"12345678"], "not allowed"),
        ([b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [true]}}', b"1234"], "bad array shape"),
        ([b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [4294967296, 0]}}', b""], "bad array shape"),
        ([b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [1]}}', b"1234", b"1234"], "refers to 1"),
        (
            [
                b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [1]}, "b": {"__nd__": 0, "dtype": "<f4", "shape": [1]}}',
                b"1234",
            ],
            "each used once",
        ),  # fmt: skip
        ([b'{"a": {"__nd__": 0, "dtype": "<f4", "shape": [1], "x": 1}}', b"1234"], "exactly the keys"),
        ([b'{"a": 1' + b"1" * 5000 + b"}"], "not JSON"),
        ([b"\xff\xfe"], "not JSON"),
        ([b"[1, 2]"], "not a JSON object"),
        ([], "no header"),
    ],
)
def test_wire_decode_refuses_malformed_input_with_a_value_error(frames, match):
    with pytest.raises(ValueError, match=match):
        wire.decode(frames)


def test_signatures_cover_every_frame_and_field():
    body = wire.encode({"op": "send_action", "action": np.ones(2, np.float32)})
    frame = wire.sign(b"k", wire.MAGIC_REQUEST, b"c" * 16, 5, 1.0, body)
    auth = wire.parse_auth(frame)
    assert len(frame) == wire.AUTH_BYTES and (auth.seq, auth.timestamp) == (5, 1.0)
    assert wire.verify(b"k", auth, body) and not wire.verify(b"other", auth, body)
    assert not wire.verify(b"k", auth, [body[0], b"\x00" * 8])  # an altered array
    assert not wire.verify(b"k", auth, [body[0] + body[1].tobytes()])  # frames joined: the lengths are signed
    forged = wire.parse_auth(frame[:20] + (6).to_bytes(8, "big") + frame[28:])
    assert forged.seq == 6 and not wire.verify(b"k", forged, body)
    with pytest.raises(ValueError, match="bytes"):
        wire.parse_auth(frame[:-1])
    with pytest.raises(ValueError, match="magic"):
        wire.parse_auth(b"XXXX" + frame[4:])


@pytest.mark.parametrize("address", ["localhost:5555", "tcp://host", "tcp://h:99999", "udp://h:1", "tcp://a b:1"])
def test_bad_addresses_are_one_line_errors(address):
    with pytest.raises(WMError, match="bad robot address") as e:
        parse_address(address)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------- serving
def test_client_drives_the_sim_robot_through_the_guard(serve):
    server, address = serve(high=0.5)
    robot = RemoteRobot(address, TOKEN, timeout_s=5.0)
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
    robot.disconnect()
    assert server.guard.events[-1].reason == "client_left"
    second = RemoteRobot(address, TOKEN, timeout_s=5.0)
    second.connect()
    second.get_observation()
    second.send_action(np.zeros(2, np.float32))
    assert second.events == []  # a new client hears only of events from its own session
    second.disconnect()


def test_a_wrong_token_is_refused_unexecuted(serve):
    server, address = serve()
    robot = RemoteRobot(address, "not-the-token", timeout_s=5.0)
    with pytest.raises(RobotError, match="refused the token"):
        robot.connect()
    with pytest.raises(RobotError, match="refused the token"):
        robot._request("send_action", action=np.ones(2, np.float32), events_seen=0)
    assert server.stats["refused"] == 2 and server.guard.robot.actions == 0


def test_the_token_never_travels():
    """The client sends an HMAC; before, the token itself was in every request header."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    robot = RemoteRobot(f"tcp://127.0.0.1:{port}", TOKEN, timeout_s=0.2, retries=2)
    with pytest.raises(RobotError, match="no reply"):
        robot.connect()
    seen = [sock.recv_multipart() for _ in range(2)]
    sock.close(linger=0)
    frames = [f for request in seen for f in request]
    assert all(TOKEN.encode() not in f for f in frames)
    assert [len(request[2]) for request in seen] == [wire.AUTH_BYTES] * 2  # identity, delimiter, auth, header
    assert wire.parse_auth(seen[0][2]).seq < wire.parse_auth(seen[1][2]).seq  # a retry is a fresh transmission


def test_a_missing_server_is_a_one_line_error_after_the_retries():
    with zmq.Context.instance().socket(zmq.REP) as probe:  # a free port nobody serves
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    robot = RemoteRobot(f"tcp://127.0.0.1:{port}", TOKEN, timeout_s=0.2, retries=2)
    started = time.monotonic()
    with pytest.raises(RobotError, match="no reply from a robot server") as e:
        robot.connect()
    assert 0.35 < time.monotonic() - started < 10.0 and "\n" not in str(e.value)


def test_a_retried_request_is_executed_once(serve):
    server, address = serve()
    raw = Raw(address)
    msg = {"op": "send_action", "call": 7, "action": np.ones(2, np.float32), "events_seen": 0}
    replies = [raw.ask(signed(msg, seq, session=server.session)) for seq in (1, 2)]  # the same call, re-sent
    raw.close()
    assert all(r["ok"] for _, r in replies) and server.guard.robot.actions == 1
    assert [a.seq for a, _ in replies] == [1, 2]  # each reply is signed for its transmission
    assert all(wire.verify(TOKEN.encode(), a, wire.encode(r)) for a, r in replies)


def test_replayed_tampered_and_stale_requests_are_refused_unexecuted(serve):
    """Before: no replay protection (a captured request moved the robot again) and no signatures."""
    server, address = serve()
    raw = Raw(address)
    act = {"op": "send_action", "call": 1, "action": np.full(2, 0.5, np.float32), "events_seen": 0}
    act["session"] = server.session
    request = signed(act, seq=1)
    assert raw.ask(request)[1]["ok"] and server.guard.robot.actions == 1
    auth, reply = raw.ask(request)  # replayed as captured
    assert reply["code"] == "replay" and "seq 1" in reply["error"]
    assert wire.verify(TOKEN.encode(), auth, wire.encode(reply))  # an authenticated client's refusal is signed
    assert raw.ask(signed({**act, "call": 2}, seq=1))[1]["code"] == "replay"  # a reused seq
    tampered = [request[0], request[1], np.full(2, 1.0, np.float32).tobytes()]
    assert raw.ask(tampered)[1]["code"] == "auth"
    auth, reply = raw.ask([request[0][:20] + (9).to_bytes(8, "big") + request[0][28:], *request[1:]])
    assert reply["code"] == "auth" and auth.mac == wire.UNSIGNED  # a refusal of the unauthenticated is unsigned
    for skew in (-120.0, 120.0):
        reply = raw.ask(signed({**act, "call": 3}, seq=5, timestamp=time.time() + skew))[1]
        assert reply["code"] == "replay" and "clocks" in reply["error"]
    raw.close()
    assert server.guard.robot.actions == 1 and server.stats["refused"] == 6


MALFORMED = {  # name -> a signed body (header, *arrays) or a message for one, each malformed after authentication
    "bad json": [b'{"op": "hello", "call": 1'],
    "deep nesting 3e4": [deep(30_000)],
    "dtype 123": [
        b'{"op": "send_action", "call": 1, "events_seen": 0, "action": {"__nd__": 0, "dtype": 123, "shape": [2]}}',
        b"\x00" * 8,
    ],  # fmt: skip
    "float64 action": {"op": "send_action", "call": 1, "events_seen": 0, "action": np.zeros(2)},
    "wrong shape": {"op": "send_action", "call": 1, "events_seen": 0, "action": np.zeros(3, np.float32)},
    "list action": {"op": "send_action", "call": 1, "events_seen": 0, "action": [0.5, 0.5]},
    "missing action": {"op": "send_action", "call": 1, "events_seen": 0},
    "missing events_seen": {"op": "send_action", "call": 1, "action": np.zeros(2, np.float32)},
    "negative since": {"op": "events", "call": 1, "since": -1},
    "missing call": {"op": "hello"},
    "bool call": {"op": "hello", "call": True},
    "unknown op": {"op": "x" * 1000, "call": 1},
    "op not a string": {"op": ["send_action"], "call": 1},
    "reset state shape": {"op": "reset", "call": 1, "options": {"state": np.zeros(3)}},
    "reset state nan": {"op": "reset", "call": 1, "options": {"state": np.full(6, np.nan)}},
    "reset goal int": {"op": "reset", "call": 1, "options": {"state": np.ones(6), "goal": np.ones(6, int)}},
    "reset options list": {"op": "reset", "call": 1, "options": [1, 2]},
    "reset unknown option": {"op": "reset", "call": 1, "options": {"seed": np.ones(6)}},
    "header is a list": [b"[1, 2, 3]"],
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_gets_an_error_reply_and_the_server_keeps_serving(serve, name):
    """Before: a deep header (RecursionError) or `"dtype": 123` (TypeError) escaped and stopped `serve()`."""
    server, address = serve()
    sim = server.guard.robot
    state = sim.get_observation()["sim_state"].copy()
    raw = Raw(address)
    body = MALFORMED[name]
    body = wire.encode({**body, "session": server.session}) if isinstance(body, dict) else body
    for seq, frames in enumerate((signed(body, seq=1), body), 1):  # signed, then not
        auth, reply = raw.ask(frames)
        assert reply["ok"] is False and reply["code"] == ("bad_request" if seq == 1 else "auth"), reply
        assert "\n" not in reply["error"] and len(reply["error"]) < 300
    raw.close()
    assert server.thread.is_alive() and sim.actions == 0
    np.testing.assert_array_equal(sim.get_observation()["sim_state"], state)
    robot = RemoteRobot(address, TOKEN, timeout_s=5.0)
    robot.connect()
    robot.get_observation()
    robot.send_action(np.zeros(2, np.float32))
    assert sim.actions == 1


def test_an_unauthenticated_request_is_refused_before_its_header_is_parsed(serve, monkeypatch):
    """Before: the whole JSON header was parsed (and every array copied) before the token was checked."""
    server, address = serve()
    parsed = []
    decode = wire.decode
    monkeypatch.setattr(wire, "decode", lambda frames, *a: parsed.append(1) or decode(frames, *a))
    raw = Raw(address)
    header = b'{"op": "hello", "call": 1, "pad": "' + b"x" * 60_000 + b'"}'
    for frames in ([signed([header], 1, token="wrong")[0], header], [b"\x00" * wire.AUTH_BYTES, header], [header]):
        raw.sock.send_multipart([b"", *frames])
        assert raw.sock.poll(10_000)
        reply = raw.sock.recv_multipart()
        assert decode(reply[2:])["code"] == "auth"
    raw.close()
    assert parsed == []


def test_the_frame_count_and_total_size_are_bounded_per_message(serve):
    """Before: MAXMSGSIZE bounded each frame only, so 16 frames of 60 MiB each were one acceptable request."""
    server, address = serve()
    raw = Raw(address)
    hello = signed({"op": "hello", "call": 1}, 1)
    reply = raw.ask([*hello, *[b"x"] * 20])[1]
    assert reply["code"] == "limit" and "has 22 frames" in reply["error"]
    quarter = b"x" * (wire.MAX_REQUEST_BYTES // 4)  # each frame under the per-frame limit, together over
    assert raw.ask([*hello, quarter, quarter, quarter, quarter])[1]["code"] == "limit"
    raw.sock.send_multipart([b"", hello[0], b"x" * (wire.MAX_REQUEST_BYTES + 1)])  # ZeroMQ drops this peer
    assert not raw.sock.poll(300)
    raw.close()
    raw = Raw(address)
    assert raw.ask(signed({"op": "hello", "call": 1}, 1, client=b"d" * 16))[1]["ok"]
    raw.close()
    assert server.thread.is_alive() and server.stats["malformed"] == 2


def test_the_watchdog_holds_while_the_socket_is_flooded(serve):
    """A client goes quiet while others flood the server with oversized, many-framed and unsigned messages: the
    robot still holds within the deadline. Before, a 32 MiB JSON header was parsed before the token check, and
    the watchdog waited for it."""
    watchdog = 0.3
    server, address = serve(watchdog_s=watchdog)
    sim = server.guard.robot
    socks = [Raw(address).sock for _ in range(3)]
    big = [b"", b"[" + b"0," * (16 << 20) + b"0]"]  # 32 MiB of JSON
    many = [b"", *[b""] * 100_000]
    max_size = [b"", b"\x00" * wire.AUTH_BYTES, b"x" * (wire.MAX_REQUEST_BYTES - wire.AUTH_BYTES)]
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            for sock, frames in ((socks[1], many), (socks[2], max_size)):
                sock.send_multipart(frames)
            for sock in socks[1:]:
                if sock.poll(10_000):
                    sock.recv_multipart()

    robot = RemoteRobot(address, TOKEN, timeout_s=5.0)
    robot.connect()
    robot.get_observation()
    robot.send_action(np.array([0.5, 0.5], np.float32))
    acted = time.time()
    socks[0].send_multipart(big)
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        assert wait_for(lambda: any(e.reason == "watchdog" for e in server.guard.events), 10)
        flooded = server.stats["requests"]
        assert wait_for(lambda: server.stats["requests"] >= flooded + 4, 10)  # the flood went on past the hold
    finally:
        stop.set()
        flooder.join(timeout=20)
        for sock in socks:
            sock.close()
    hold = next(e for e in server.guard.events if e.reason == "watchdog")
    assert hold.time - acted < watchdog + 1.5, hold.time - acted
    assert np.array_equal(sim.last_command, [0, 0])
    robot.get_observation()  # still serving
    robot.send_action(np.zeros(2, np.float32))


def serve_again(serve, address: str):
    """A new server on the port of a stopped one (retried while the old socket is still being released)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return serve(port=int(address.rsplit(":", 1)[1]))
        except WMError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_client_whose_server_restarted_ends_with_one_line_instead_of_splicing_episodes(serve):
    """Before: the retry reconnected to the fresh server (new simulator state, empty replay table) and went on; the
    spliced episode was recorded complete."""
    first, address = serve()
    robot = RemoteRobot(address, TOKEN, timeout_s=0.25, retries=40)
    robot.connect()
    robot.get_observation()
    serve.stop(first)
    timed_out, close = threading.Event(), robot._close
    robot._close = lambda: (timed_out.set(), close())
    result = {}

    def ask():
        try:
            robot.get_observation()
        except RobotError as e:
            result["error"] = str(e)

    asker = threading.Thread(target=ask)
    asker.start()
    assert timed_out.wait(10)  # the request timed out against nobody at least once
    second, _ = serve_again(serve, address)
    asker.join(timeout=30)
    assert "restarted" in result["error"] and "\n" not in result["error"]
    assert second.session != first.session and second.stats["refused"] + second.stats["malformed"] >= 1


def test_a_captured_request_is_refused_by_a_restarted_server_or_another_sharing_the_token(serve):
    """Before: replay state lived in memory only, so a request captured from one server moved the robot of a
    restarted one (or of a second server with the same token)."""
    first, address = serve()
    other, other_address = serve()
    raw = Raw(address)
    act = {"op": "send_action", "call": 1, "action": np.full(2, 0.5, np.float32), "events_seen": 0}
    request = signed(act, seq=1, session=first.session)
    assert raw.ask(request)[1]["ok"] and first.guard.robot.actions == 1
    raw.close()
    serve.stop(first)
    again, _ = serve_again(serve, address)
    for address_, server in ((address, again), (other_address, other)):
        raw = Raw(address_)
        reply = raw.ask(request)[1]  # the captured bytes, replayed as they were
        raw.close()
        assert reply["code"] == "session" and server.guard.robot.actions == 0


def test_estop_over_the_bridge_is_reported_in_one_line(serve, tmp_path):
    stop_file = tmp_path / "STOP"
    server, address = serve(estop=EStop(signals=(), stop_file=stop_file))
    robot = RemoteRobot(address, TOKEN, timeout_s=5.0)
    robot.connect()
    robot.get_observation()
    robot.send_action(np.array([0.5, 0.5], np.float32))
    stop_file.touch()
    with pytest.raises(RobotError, match="e-stopped") as e:
        robot.send_action(np.array([0.5, 0.5], np.float32))
    assert "\n" not in str(e.value) and server.guard.stopped is not None
    assert np.array_equal(server.guard.robot.last_command, [0, 0])
    assert robot.events[-1]["reason"] == "estop"  # before: only in the error text, so no report counted it


def test_a_rate_wait_is_parked_so_observations_and_the_watchdog_go_on(serve):
    """Finding 3. Before: the server slept through the rate wait inside send_action, so with --max-rate 0.25 a
    0.8 command stayed in force for 4 s with no hold and another client's observation waited 3.96 s."""
    server, address = serve(max_rate_hz=2.0, watchdog_s=1.0)
    mover, watcher = RemoteRobot(address, TOKEN, timeout_s=5.0), RemoteRobot(address, TOKEN, timeout_s=5.0)
    mover.connect()
    watcher.connect()
    mover.get_observation()
    mover.send_action(np.array([0.8, 0.0], np.float32))
    done = {}
    second = threading.Thread(target=lambda: done.update(sent=mover.send_action(np.array([0.8, 0.0], np.float32)),
                                                         at=time.monotonic()))  # fmt: skip
    second.start()
    assert wait_for(lambda: server._parked is not None, 5.0)  # waiting out the 0.5 s period, parked
    watcher.get_observation()  # answered meanwhile
    observed = time.monotonic()
    second.join(timeout=10)
    assert observed < done["at"] and np.allclose(done["sent"], [0.8, 0.0])
    assert server.guard.robot.actions == 2 and "rate" in [e.reason for e in server.guard.events]
    spacing = np.diff([t for t, _ in server.guard.robot.sent_at])
    assert spacing.min() >= 0.5 - 1e-3  # the limit itself still holds


def test_killing_the_client_mid_episode_makes_the_robot_hold_within_the_watchdog_deadline(serve):
    watchdog = 1.0  # the client acts every ~50 ms: even on a loaded CPU it never goes a second without acting
    server, address = serve(watchdog_s=watchdog)
    sim = server.guard.robot
    client = subprocess.Popen([sys.executable, "-c", CLIENT, address, TOKEN], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "sent"
        assert client.stdout.readline().strip() == "sent"
        np.testing.assert_allclose(sim.last_command, [0.7, -0.7])
        client.kill()  # SIGKILL: no goodbye, no cleanup
        killed = time.time()
        client.wait(timeout=10)
        assert wait_for(lambda: np.array_equal(sim.last_command, [0, 0]), 10)
    finally:
        client.kill()
        client.stdout.close()
    holds = [e for e in server.guard.events if e.reason == "watchdog"]
    assert len(holds) == 1
    held_after = holds[0].time - killed
    assert 0 < held_after < watchdog + 1.0, held_after


# ---------------------------------------------------------------------------------------------------- the client
@pytest.fixture
def fake_server():
    """`fake_server(answer) -> address`: a ROUTER thread replying `answer(auth, msg) -> (reply dict, signed?)`."""
    stops = []

    def start(answer):
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        stop = threading.Event()

        def run():
            while not stop.is_set():
                if sock.poll(10):
                    identity, empty, auth, *body = sock.recv_multipart()
                    auth = wire.parse_auth(auth)
                    reply, sign = answer(auth, wire.decode(body))
                    out = wire.encode(reply)
                    frame = wire.sign(TOKEN.encode() if sign else None, wire.MAGIC_REPLY, auth.client, auth.seq, 0, out)
                    sock.send_multipart([identity, empty, frame, *out])
            sock.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stops.append((stop, thread))
        return f"tcp://127.0.0.1:{port}"

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(timeout=10)


def real_session(server) -> tuple[dict, dict]:
    """A real server's hello reply and an observation (to impersonate it)."""
    robot = RemoteRobot(server.address, TOKEN, timeout_s=5.0)
    robot.connect()
    info, obs = dict(robot.info), robot.get_observation()
    robot.disconnect()
    return info, obs


@pytest.mark.parametrize(
    "hello_change, obs_reply, match",
    [
        (lambda h: h.pop("observation_features"), None, "incomplete reply to 'hello'.*observation_features"),
        (lambda h: h.pop("can_reset"), None, "'can_reset' is missing"),
        (lambda h: h.update(hold_action=np.zeros(3, np.float32)), None, "hold action has shape"),
        (lambda h: h["action_features"].update(dtype=123), None, "bad features"),
        (None, lambda o: {}, "incomplete reply to 'get_observation': no 'obs'"),
        (None, lambda o: {"obs": {}}, "the observation has keys"),
        (None, lambda o: {"obs": {**o, "rgb": np.zeros((32, 32, 3), np.uint8)}}, "'rgb' is uint8 \\(32, 32, 3\\)"),
        (None, lambda o: {"obs": {**o, "rgb": np.zeros((64, 64, 3), np.float32)}}, "'rgb' is float32"),
        (None, lambda o: {"obs": {**o, "sim_success": 1.0}}, "'sim_success' is float"),
    ],
)
def test_incomplete_or_mismatched_replies_are_one_line_errors(serve, fake_server, hello_change, obs_reply, match):
    """Before: a reply without a key was a KeyError, and a wrong shape or dtype went through unchecked."""
    server, _ = serve()
    hello, obs = real_session(server)
    if hello_change is not None:
        hello_change(hello)

    def answer(auth, msg):
        reply = hello if msg["op"] == "hello" else {"session": hello["session"], **obs_reply(obs)}
        return {"ok": True, **reply}, True

    robot = RemoteRobot(fake_server(answer), TOKEN, timeout_s=5.0)
    with pytest.raises(RobotError, match=match) as e:
        robot.connect()
        robot.get_observation()
    assert "\n" not in str(e.value)


def test_unsigned_or_misaddressed_replies_are_refused(serve, fake_server):
    server, _ = serve()
    hello, _ = real_session(server)
    robot = RemoteRobot(fake_server(lambda auth, msg: ({"ok": True, **hello}, False)), TOKEN, timeout_s=5.0)
    with pytest.raises(RobotError, match="not signed for this request"):
        robot.connect()
    robot = RemoteRobot(fake_server(lambda auth, msg: ({"ok": True, **hello}, True)), "another-token", timeout_s=5.0)
    with pytest.raises(RobotError, match="not signed for this request"):
        robot.connect()
    refusal = {"ok": False, "code": "replay", "error": "seq 3\nis old"}
    robot = RemoteRobot(fake_server(lambda auth, msg: (refusal, False)), TOKEN, timeout_s=5.0)
    with pytest.raises(RobotError, match="refused the request as a replay: seq 3 is old$"):
        robot.connect()


def test_the_client_limits_the_size_of_replies(serve, fake_server, monkeypatch):
    """Before: the client's socket had no receive limit."""
    server, _ = serve()
    hello, _ = real_session(server)
    monkeypatch.setattr(client_module, "MAX_REPLY_BYTES", 1 << 16)
    big = {"ok": True, **hello, "pad": np.zeros(1 << 17, np.uint8)}
    robot = RemoteRobot(fake_server(lambda auth, msg: (big, True)), TOKEN, timeout_s=0.3, retries=2)
    with pytest.raises(RobotError, match="no reply"):  # ZeroMQ drops a frame over MAXMSGSIZE
        robot.connect()
    many = {"ok": True, **hello, "pad": [np.zeros(1, np.uint8)] * 100}
    robot = RemoteRobot(fake_server(lambda auth, msg: (many, True)), TOKEN, timeout_s=5.0)
    with pytest.raises(RobotError, match="over the limits of 64 frames"):
        robot.connect()


def test_an_oversized_request_is_refused_before_sending(serve):
    _, address = serve()
    robot = RemoteRobot(address, TOKEN, timeout_s=5.0)
    robot.connect()
    with pytest.raises(WMError, match="takes at most"):
        robot.reset({"state": np.zeros(1 << 18)})


# ---------------------------------------------------------------------------------------------------- Curve
def test_keygen_writes_a_key_pair_and_refuses_to_overwrite(tmp_path):
    public, secret = keygen(tmp_path / "keys")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(load_public_key(public)) == 40
    assert len(load_secret_key(secret)) == 40
    before = secret.read_bytes()
    with pytest.raises(WMError, match="already exist"):
        keygen(tmp_path / "keys")
    assert secret.read_bytes() == before
    os.chmod(secret, 0o644)
    with pytest.raises(WMError, match="chmod 600"):
        load_secret_key(secret)
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(WMError, match="not a Curve public key"):
        load_public_key(tmp_path / "bad.key")
    with pytest.raises(WMError, match="cannot read"):
        load_public_key(tmp_path / "missing.key")


def test_wm_robot_keygen_cli(tmp_path, capsys):
    assert main(["robot", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert "secret.key" in capsys.readouterr().out
    assert main(["robot", "keygen", "--out", str(tmp_path / "k")]) == 2
    assert "already exist" in capsys.readouterr().err


def test_curve_encrypts_the_link_and_clients_need_the_servers_key(serve, tmp_path):
    public, secret = keygen(tmp_path)
    server, address = serve(curve=load_secret_key(secret))
    robot = RemoteRobot(address, TOKEN, timeout_s=5.0, server_key=load_public_key(public))
    robot.connect()
    assert robot._sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
    robot.get_observation()
    robot.send_action(np.zeros(2, np.float32))
    robot.disconnect()
    with pytest.raises(RobotError, match="no reply.*needs --server-key"):
        RemoteRobot(address, TOKEN, timeout_s=0.3, retries=1).connect()
    other, _ = zmq.curve_keypair()
    with pytest.raises(RobotError, match="no reply.*key pair of --server-key"):
        RemoteRobot(address, TOKEN, timeout_s=0.3, retries=1, server_key=other).connect()
    assert server.thread.is_alive()


def test_curve_without_libsodium_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    with pytest.raises(WMError, match=r"zmq.has\('curve'\) is False"):
        RobotServer(SafetyGuard(CountingSim("wm/PointMaze-v0")), TOKEN, curve_secret_key=b"x" * 40)
    with pytest.raises(WMError, match="no CurveZMQ"):
        RemoteRobot("tcp://127.0.0.1:9", TOKEN, server_key=b"x" * 40)


def test_binding_beyond_loopback_needs_curve_or_insecure(tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("*") and not is_loopback("robot.lan")
    guard = SafetyGuard(CountingSim("wm/PointMaze-v0"))
    with pytest.raises(WMError, match="--curve-key .*--insecure") as e:
        RobotServer(guard, TOKEN, host="0.0.0.0")
    assert "\n" not in str(e.value)
    RobotServer(guard, TOKEN, host="0.0.0.0", insecure=True)
    _, secret = keygen(tmp_path)
    RobotServer(guard, TOKEN, host="0.0.0.0", curve_secret_key=load_secret_key(secret))
    argv = ["robot", "serve", "--env", "wm/PointMaze-v0", "--port", "0", "--token", TOKEN, "--host", "0.0.0.0"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wm: error")]
    assert len(err) == 1 and "--insecure" in err[0]


def test_wm_validate_reads_the_servers_key_file(tmp_path, capsys):
    argv = ["validate", "--robot", "tcp://127.0.0.1:9", "--token", TOKEN, "--controller", "random", "--episodes", "1"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--server-key", str(tmp_path / "none.key")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wm: error")]
    assert len(err) == 1 and "cannot read the public key file" in err[0]


def test_a_full_client_table_evicts_the_least_recent_and_an_evicted_clients_requests_stay_refused(serve, monkeypatch):
    """Finding 10. Before: one token holder filled the 1,024-client table in 1.3 s and every new client was locked
    out for 60 s."""
    import envs.robot.server as server_module

    monkeypatch.setattr(server_module, "MAX_CLIENTS", 8)
    server, address = serve()
    raw = Raw(address)
    first = signed({"op": "events", "call": 1, "since": 0}, 1, client=b"F" * 16, session=server.session)
    assert raw.ask(first)[1]["ok"]  # the oldest client: evicted first
    for i in range(20):  # a flood of fresh clients
        assert raw.ask(signed({"op": "hello", "call": 1}, 1, client=bytes([i]) * 16))[1]["ok"]
    assert raw.ask(signed({"op": "hello", "call": 1}, 1, client=b"N" * 16))[1]["ok"]  # a new client gets in
    assert len(server._clients) <= 8
    reply = raw.ask(first)[1]  # the evicted client's captured request, replayed: still refused
    raw.close()
    assert reply["code"] == "replay"
