"""A bounded loopback fuzzer for the robot bridge (hypothesis, derandomised, so every run sends the same messages).

Over 10,000 messages go to a live server on a thread: garbage frames, bad auth frames, requests signed with other
keys, tampered, replayed and stale requests, too many frames or bytes, and requests signed with the right token
whose headers are malformed (bad JSON, deep nesting, wrong types, dtypes and shapes, missing fields). Every one must
get a refusal, signed exactly when the sender was authenticated. Twice during the storm the real client acts and
goes quiet: the robot must hold within the watchdog deadline each time. Afterwards no message has moved the robot
(its send_action calls are the client's and the holds, none was a reset, the simulator state is where the last
hold left it) and the server still serves the real client.
"""

import json
import secrets
import socket
import threading
import time

import numpy as np
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from envs.robot import wire
from envs.robot.client import RemoteRobot
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.server import REPLAY_WINDOW_S, RobotServer
from envs.robot.sim import SimRobot

TOKEN = "fuzz-secret"
SESSION = "__the server's session__"  # replaced by the real one when a signed case is sent
MESSAGES = 10_200
WATCHDOG_S = 0.3
HOLD_MARGIN_S = 1.5  # generous: a loaded 2-core CPU
EXPECTED = {  # category -> the refusal codes it may get (signed requests: bad_request, or ok without acting)
    "garbage": {"auth", "limit"},
    "bad_auth": {"auth"},
    "wrong_key": {"auth"},
    "tampered": {"auth"},
    "replay": {"replay"},
    "stale": {"replay"},
    "limit": {"limit"},
}


class RecordingSim(SimRobot):
    """Counts send_action and reset calls and keeps the simulator state after the last action."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.actions, self.resets, self.state_after_last_action = 0, 0, None

    def send_action(self, action):
        sent = super().send_action(action)
        self.actions += 1
        self.state_after_last_action = self._info["state"].copy()
        return sent

    def reset(self, options=None):
        self.resets += 1
        return super().reset(options)


# ------------------------------------------------------------------------------------------------ strategies
json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
json_value = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12
)
dtypes = st.sampled_from(["<f4", "<f8", "|u1", "|b1", "<i8", "|O", "<c8", "S3", "V8", "(2,)f4", ">f4", "f16", "M8", ""])
bad_dtype = dtypes | st.integers() | st.text(max_size=10) | st.none() | st.lists(st.integers(), max_size=2)
shape = st.lists(st.integers(-2, 2**33), max_size=4) | json_value


def descriptor(dtype=bad_dtype, shapes=shape):
    index = st.integers(-2, 4) | st.booleans() | json_leaf
    return st.fixed_dictionaries({"__nd__": index, "dtype": dtype, "shape": shapes}, optional={"extra": json_leaf})


not_float32 = dtypes.filter(lambda d: d not in ("<f4", "f4", "float32"))
bad_action = (
    json_value
    | descriptor(dtype=not_float32)
    | descriptor(dtype=st.just("<f4"), shapes=st.lists(st.integers(0, 4), max_size=3).filter(lambda s: s != [2]))
)
bad_options = (
    json_value.filter(lambda v: not isinstance(v, dict))
    | st.dictionaries(st.sampled_from(["seed", "pose", "x"]), json_value, min_size=1, max_size=2)
    | st.fixed_dictionaries(
        {"state": descriptor(shapes=st.lists(st.integers(0, 9), max_size=2).filter(lambda s: s != [6]))}
    )
    | st.fixed_dictionaries({"state": descriptor(dtype=st.sampled_from(["<i8", "|u1", "|b1"]), shapes=st.just([6]))})
)
call = st.integers(-3, 2**64) | json_leaf
headers = st.one_of(
    json_value,  # often not an object, never with an op
    st.fixed_dictionaries(
        {"op": st.sampled_from(["send_action"]), "call": call},
        optional={"action": bad_action, "events_seen": json_value},
    ),
    st.fixed_dictionaries({"op": st.just("reset"), "call": call}, optional={"options": bad_options}),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["events", "hello", "get_observation"]), "call": call},
        optional={"since": json_value, "x": descriptor()},
    ),
    st.fixed_dictionaries({"op": json_value, "call": call}),
)


@st.composite
def signed_malformed(draw):
    """A header (and array frames) signed with the right token at the next seq: malformed in its content."""
    kind = draw(st.sampled_from(["json", "bytes", "deep"]))
    if kind == "json":
        header = draw(headers)
        if isinstance(header, dict) and draw(st.booleans()):  # bound to the server's session, as a client's are
            header["session"] = SESSION
        body = [json.dumps(header).encode()]
    elif kind == "bytes":
        body = [draw(st.binary(max_size=200))]
    else:
        depth = draw(st.integers(wire.MAX_DEPTH, (wire.MAX_REQUEST_BYTES - 1024) // 2))  # within the size limit
        body = [b'{"op": "hello", "call": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"]
    return "signed", body + draw(st.lists(st.binary(max_size=64), max_size=4))


def cases(captured: list):
    """`(category, frames or body)`; 'signed' and 'stale' bodies are signed at send time. Categories whose
    messages are few (replays of the captured requests) repeat them."""
    garbage = st.tuples(st.just("garbage"), st.lists(st.binary(max_size=200), max_size=20))
    body = st.sampled_from([r[1:] for r in captured])
    bad_auth = st.tuples(
        st.just("bad_auth"),
        st.tuples(
            st.binary(max_size=100).filter(lambda b: len(b) != wire.AUTH_BYTES)
            | st.binary(min_size=wire.AUTH_BYTES, max_size=wire.AUTH_BYTES)
            | st.binary(min_size=64, max_size=64).map(lambda b: wire.MAGIC_REQUEST + b),
            body,
        ).map(lambda t: [t[0], *t[1]]),
    )
    wrong_key = st.tuples(
        st.just("wrong_key"),
        st.tuples(
            st.binary(min_size=1, max_size=32).filter(lambda k: k != TOKEN.encode()), body, st.integers(1, 2**63)
        ).map(lambda t: [wire.sign(t[0], wire.MAGIC_REQUEST, b"k" * 16, t[2], time.time(), t[1]), *t[1]]),
    )
    tampered = st.tuples(st.just("tampered"), tampered_request(st.sampled_from(captured)))
    replayed = st.tuples(st.just("replay"), st.sampled_from(captured))
    stale = st.tuples(
        st.just("stale"),
        st.tuples(
            body, st.floats(REPLAY_WINDOW_S + 1, 1e9) | st.floats(-1e9, -REPLAY_WINDOW_S - 1) | st.just(float("nan"))
        ),
    )
    limit = st.tuples(
        st.just("limit"),
        st.integers(wire.MAX_REQUEST_FRAMES + 1, 60).map(lambda n: [b"x"] * n)
        | st.integers(2, 3).map(lambda n: [b"x" * (wire.MAX_REQUEST_BYTES // 2 + 1)] * n),
    )
    every = st.one_of(garbage, bad_auth, wrong_key, tampered, replayed, stale, limit, signed_malformed())
    return st.tuples(every, st.integers(0, 2**32)).map(lambda t: t[0])  # a nonce: hypothesis skips repeats


@st.composite
def tampered_request(draw, requests):
    """A captured request with one frame altered: a byte flipped, a frame cut, added or dropped."""
    frames = list(draw(requests))
    how = draw(st.sampled_from(["flip", "cut", "add", "drop"]))
    i = draw(st.integers(0, len(frames) - 1))
    if how == "flip" and frames[i]:
        j = draw(st.integers(0, len(frames[i]) - 1))
        frames[i] = frames[i][:j] + bytes([frames[i][j] ^ draw(st.integers(1, 255))]) + frames[i][j + 1 :]
    elif how == "cut" and frames[i]:
        frames[i] = frames[i][: draw(st.integers(0, len(frames[i]) - 1))]
    elif how == "drop" and len(frames) > 2:
        del frames[max(i, 1)]
    else:
        frames.append(draw(st.binary(max_size=16)))
    return frames


# ------------------------------------------------------------------------------------------------ the fuzzer
def test_ten_thousand_bad_messages_move_nothing_and_the_robot_holds_when_its_client_goes_quiet(monkeypatch):
    guard = SafetyGuard(RecordingSim("wm/PointMaze-v0"), GuardConfig(watchdog_s=WATCHDOG_S))
    sim = guard.robot
    server = RobotServer(guard, TOKEN)
    address = server.bind()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        captured, sign = [], wire.sign

        def recording_sign(secret, magic, client, seq, timestamp, body):
            frame = sign(secret, magic, client, seq, timestamp, body)
            if magic == wire.MAGIC_REQUEST:
                captured.append([frame, *[bytes(f) for f in body]])
            return frame

        monkeypatch.setattr(wire, "sign", recording_sign)
        robot = RemoteRobot(address, TOKEN, timeout_s=10.0)
        robot.connect()
        robot.get_observation()
        robot.send_action(np.array([0.5, -0.5], np.float32))
        acted = [time.time()]
        monkeypatch.setattr(wire, "sign", sign)
        assert len(captured) == 3 and sim.actions == 1

        fuzzer = FuzzClient(address, server.session)
        raw_tcp_garbage(server, 50)
        started = time.monotonic()

        @settings(
            max_examples=MESSAGES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(captured))
        def fuzz(case):
            fuzzer.send(*case)
            if fuzzer.sent == MESSAGES // 2:  # the real client acts again mid-storm, then goes quiet again
                robot.get_observation()
                robot.send_action(np.array([-0.5, 0.5], np.float32))
                acted.append(time.time())

        fuzz()
        elapsed = time.monotonic() - started
        fuzzer.close()
        assert fuzzer.sent >= 10_000 and thread.is_alive(), (fuzzer.sent, elapsed)
        print(f"fuzzed {fuzzer.sent} messages in {elapsed:.1f} s: {dict(fuzzer.categories)}")

        holds = [e.time for e in guard.events if e.reason == "watchdog"]
        assert len(holds) == 2 and sim.actions == 4 and sim.resets == 0, (holds, sim.actions, sim.resets)
        for act, hold in zip(acted, holds, strict=True):
            assert WATCHDOG_S / 2 < hold - act < WATCHDOG_S + HOLD_MARGIN_S, hold - act
        np.testing.assert_array_equal(sim._info["state"], sim.state_after_last_action)
        np.testing.assert_array_equal(sim.last_command, [0, 0])

        robot.get_observation()  # the server still serves the real client
        robot.send_action(np.zeros(2, np.float32))
        assert sim.actions == 5
    finally:
        stop.set()
        thread.join(timeout=10)


class FuzzClient:
    """A DEALER socket that sends one case at a time and checks its refusal."""

    def __init__(self, address: str, session: str):
        self.session = session
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.client, self.seq, self.sent = secrets.token_bytes(16), 0, 0
        self.categories: dict[str, int] = {}

    def send(self, category: str, frames: list) -> None:
        if category in ("signed", "stale"):
            body, stamp = (frames, time.time()) if category == "signed" else (frames[0], time.time() + frames[1])
            body = [body[0].replace(SESSION.encode(), self.session.encode()), *body[1:]] if body else body
            self.seq += 1
            frames = [wire.sign(TOKEN.encode(), wire.MAGIC_REQUEST, self.client, self.seq, stamp, body), *body]
        self.sock.send_multipart([b"", *frames] if frames else [b""])
        self.sent += 1
        self.categories[category] = self.categories.get(category, 0) + 1
        assert self.sock.poll(10_000), f"no reply to a {category} message"
        reply = self.sock.recv_multipart()
        assert reply[0] == b""
        auth, answer = wire.parse_auth(reply[1]), wire.decode(reply[2:])
        authenticated = category in ("signed", "stale", "replay")
        assert (auth.mac != wire.UNSIGNED) == authenticated, (category, answer)
        if authenticated:
            request = wire.parse_auth(frames[0])
            assert (auth.client, auth.seq) == (request.client, request.seq)
            assert wire.verify(TOKEN.encode(), auth, reply[2:])
        if category == "signed":
            assert answer["ok"] is True or answer["code"] in ("bad_request", "session"), answer
            assert "sent" not in answer  # nothing acted
        else:
            expected = EXPECTED[category]
            assert answer["ok"] is False and answer["code"] in expected, (category, answer)
        assert "\n" not in answer.get("error", "") and len(answer.get("error", "")) < 400

    def close(self) -> None:
        self.sock.close()


def raw_tcp_garbage(server: RobotServer, connections: int) -> None:
    """Connections that write bytes that are not ZMTP at all (ZeroMQ drops them)."""
    rng = np.random.default_rng(0)
    port = int(server.address.rsplit(":", 1)[1])
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
