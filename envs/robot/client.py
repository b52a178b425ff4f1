"""The planner side of the network bridge: a robot served by `RobotServer`, behind the same robot protocol.

Each call is one request/reply (ZeroMQ REQ) with a timeout; on a timeout the socket is thrown away and the request
is sent again on a fresh connection ("lazy pirate"), up to `retries` times, each try with a fresh seq and timestamp
but the same `call` number, so the server answers a retry from its cache instead of executing it twice. Requests
are signed with the shared secret (HMAC-SHA256, see `wire`), which never travels. A reply is accepted only when the
server signed it for this very request (client id and seq) and it matches the robot's features (observation keys,
shapes and dtypes; the action's shape); replies are limited to MAX_REPLY_BYTES (ZeroMQ's MAXMSGSIZE per frame, and
in all). With `server_key` (the server's Curve public key) the link is encrypted and the server proven. The server's
session id, learnt at `connect`, goes into every later request (so no other server instance executes it) and must
come back in every reply: a server that restarted (a retry reached a fresh one) ends the run with one line, never
a silent splice of two servers' episodes. A server that never answers, refuses the request, reports a robot
failure or sends a reply it should not raises `RobotError` with one line saying so. Guard events the server reports
accumulate in `events` (an e-stop's too).
"""

from __future__ import annotations

import re
import secrets
import time

import numpy as np
import zmq

from envs.robot import wire
from envs.robot.keys import require_curve
from envs.robot.protocol import Feature, RobotError
from wm.errors import WMError

ADDRESS = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
MAX_REPLY_BYTES = 64 << 20
MAX_REPLY_FRAMES = 64
MAX_REFUSAL_BYTES = 4096  # an unsigned reply: a refusal's header only


def parse_address(address: str) -> str:
    """Check `tcp://HOST:PORT` and return it; a one-line WMError otherwise."""
    match = ADDRESS.match(address or "")
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise WMError(f"bad robot address {address!r}; use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555")
    return address


class RemoteRobot:
    """A robot at `tcp://HOST:PORT` served by `wm robot serve`; `token` is the server's shared secret and
    `server_key` its Curve public key (Z85, DIR/public.key from `wm robot keygen`) when it encrypts."""

    def __init__(
        self, address: str, token: str, timeout_s: float = 2.0, retries: int = 3, server_key: bytes | None = None
    ):
        self.address = parse_address(address)
        if not token:
            raise WMError("a robot token is needed; pass --token (or set WM_ROBOT_TOKEN) as given to `wm robot serve`")
        if server_key is not None:
            require_curve()
        self.name = f"remote:{address}"
        self._secret, self.timeout_s, self.retries = token.encode(), timeout_s, max(1, retries)
        self._server_key = server_key
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._id = secrets.token_bytes(wire.CLIENT_ID_BYTES)
        self._seq = 0  # per transmission
        self._call = 0  # per request; retries repeat it
        self.info: dict | None = None  # the server's hello reply
        self.session: str | None = None  # the server instance this client talks to (from hello)
        self.events: list[dict] = []  # guard events reported by the server since connect, in order
        self._events_before = 0
        self._obs_features: dict[str, Feature] = {}
        self._action_feature: Feature | None = None

    # ------------------------------------------------------------------------------------ protocol
    @property
    def is_connected(self) -> bool:
        return self.info is not None

    @property
    def observation_features(self) -> dict[str, Feature]:
        self._info()
        return dict(self._obs_features)

    @property
    def action_features(self) -> Feature:
        self._info()
        return self._action_feature

    @property
    def watchdog_s(self) -> float | None:
        return self._info()["watchdog_s"]

    @property
    def control_hz(self) -> float | None:
        return self._info()["control_hz"]

    @property
    def can_reset(self) -> bool:
        return self._info()["can_reset"]

    def connect(self) -> None:
        reply = self._request("hello")
        try:
            obs = {k: _feature(v) for k, v in self._field("hello", reply, "observation_features", dict).items()}
            action = _feature(self._field("hello", reply, "action_features", dict))
        except (KeyError, TypeError, ValueError) as e:
            raise self._malformed("hello", f"bad features ({type(e).__name__}: {e})") from None
        hold = self._field("hello", reply, "hold_action", np.ndarray)
        for key, kind in (("session", str), ("name", str), ("can_reset", bool), ("events_total", int)):
            self._field("hello", reply, key, kind)
        for key in ("watchdog_s", "control_hz"):
            if key not in reply or not (reply[key] is None or _is_number(reply[key])):
                raise self._malformed("hello", f"{key!r} is missing or not a number")
        if hold.shape != action.shape:
            raise self._malformed("hello", f"the hold action has shape {hold.shape}, the actions {action.shape}")
        self._obs_features, self._action_feature = obs, action
        self.info, self.session = reply, reply["session"]
        self._events_before = reply["events_total"]

    def disconnect(self) -> None:
        """Tell the server (the robot holds at once) and close; never raises if the server is gone."""
        if self.info is not None:
            try:
                self._request("bye", retries=1, timeout_s=min(self.timeout_s, 0.5))
            except RobotError:
                pass
            self.info = self.session = None
        self._close()

    def get_observation(self) -> dict:
        return self._observation("get_observation", self._request("get_observation"))

    def send_action(self, action) -> np.ndarray:
        shape = self.action_features.shape
        seen = self._events_before + len(self.events)
        reply = self._request("send_action", action=np.asarray(action, np.float32), events_seen=seen)
        sent = self._field("send_action", reply, "sent", np.ndarray)
        events = self._field("send_action", reply, "events", list)
        if sent.shape != shape or sent.dtype != np.float32:
            raise self._malformed(
                "send_action", f"'sent' is {sent.dtype} {sent.shape}, the robot takes float32 {shape}"
            )
        if not all(isinstance(e, dict) and isinstance(e.get("reason"), str) for e in events):
            raise self._malformed("send_action", "'events' holds entries without a reason")
        self.events.extend(events)
        return sent

    def reset(self, options: dict | None = None) -> dict:
        """The reset extension: only robots that can reset themselves (the simulated robot) accept it."""
        return self._observation("reset", self._request("reset", options=options or {}))

    def hold_action(self) -> np.ndarray:
        return np.asarray(self._info()["hold_action"], np.float32)

    # ------------------------------------------------------------------------------------ replies
    def _info(self) -> dict:
        if self.info is None:
            raise RobotError(f"{self.name} is not connected; call connect() first")
        return self.info

    def _observation(self, op: str, reply: dict) -> dict:
        """The reply's observation, checked against the robot's observation features."""
        obs = reply.get("obs")
        if not isinstance(obs, dict):
            raise self._malformed(op, "no 'obs'")
        features = self.observation_features
        if set(obs) != set(features):
            raise self._malformed(op, f"the observation has keys {sorted(obs)}, the robot declares {sorted(features)}")
        for key, feature in features.items():
            if not _fits(obs[key], feature):
                value = obs[key]
                got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
                raise self._malformed(op, f"{key!r} is {got}, the robot declares {feature.dtype} {feature.shape}")
        return obs

    def _field(self, op: str, reply: dict, key: str, kind: type):
        value = reply.get(key)
        if not isinstance(value, kind):
            raise self._malformed(op, f"{key!r} is missing or not a {kind.__name__}")
        return value

    def _malformed(self, op: str, what: str) -> RobotError:
        return RobotError(f"the robot server at {self.address} sent an incomplete reply to {op!r}: {what}")

    # ------------------------------------------------------------------------------------ transport
    def _open(self):
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        if self._server_key is not None:
            public, secret = zmq.curve_keypair()  # this connection's own keys; the token proves the client
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._server_key, public, secret
        try:
            sock.connect(self.address)
        except zmq.ZMQError as e:
            sock.close()
            raise WMError(f"cannot connect to {self.address} ({e}); check the host name and port") from None
        return sock

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _request(self, op: str, retries: int | None = None, timeout_s: float | None = None, **fields) -> dict:
        self._call += 1
        session = {} if op == "hello" else {"session": self.session}
        body = wire.encode({"op": op, "call": self._call, **session, **fields})
        size = wire.AUTH_BYTES + wire.nbytes(body)
        if len(body) + 1 > wire.MAX_REQUEST_FRAMES or size > wire.MAX_REQUEST_BYTES:
            raise WMError(
                f"the {op!r} request is {size} bytes in {len(body) + 1} frames; a robot server takes at most "
                f"{wire.MAX_REQUEST_BYTES} bytes in {wire.MAX_REQUEST_FRAMES} frames"
            )
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        tries = retries or self.retries
        for _ in range(tries):
            if self._sock is None:
                self._sock = self._open()
            self._seq += 1
            auth = wire.sign(self._secret, wire.MAGIC_REQUEST, self._id, self._seq, time.time(), body)
            self._sock.send_multipart([auth, *body], copy=False)
            if self._sock.poll(int(timeout_s * 1000)):
                return self._reply(op, self._sock.recv_multipart(copy=False))
            self._close()  # a REQ socket that timed out cannot send again: start a fresh connection
        key_hint = "with the key pair of --server-key" if self._server_key else "(an encrypting one needs --server-key)"
        raise RobotError(
            f"no reply from a robot server at {self.address} to {op!r} ({tries} tries of {timeout_s:g} s); "
            f"check that `wm robot serve` is running there {key_hint}"
        )

    def _reply(self, op: str, frames: list) -> dict:
        """A reply's frames -> the reply, if the server signed it for this request and it says ok."""
        if len(frames) > MAX_REPLY_FRAMES or wire.nbytes(frames) > MAX_REPLY_BYTES:
            raise RobotError(
                f"{self.address} sent a reply of {len(frames)} frames and {wire.nbytes(frames)} bytes, over the "
                f"limits of {MAX_REPLY_FRAMES} frames and {MAX_REPLY_BYTES} bytes"
            )
        try:
            if not frames:
                raise ValueError("no frames")
            auth, body = wire.parse_auth(frames[0]), frames[1:]
            signed = auth.magic == wire.MAGIC_REPLY and (auth.client, auth.seq) == (self._id, self._seq)
            signed = signed and wire.verify(self._secret, auth, body)  # before decoding, which costs
            short = len(body) == 1 and wire.nbytes(body) <= MAX_REFUSAL_BYTES
            reply = wire.decode(body, MAX_REPLY_BYTES) if signed else wire.decode(body) if short else {}
        except ValueError as e:
            raise RobotError(f"{self.address} sent an unreadable reply ({e}); is it a wm robot server?") from None
        if signed and self.session is not None and reply.get("session") != self.session:
            raise RobotError(
                f"the robot server at {self.address} restarted (session {self.session}, now "
                f"{wire.short(reply.get('session'))}): the episode cannot go on across a restart; connect again"
            )
        if signed and reply.get("ok") is True:
            return reply
        if reply.get("ok") is not False:  # only a refusal, short and without arrays, may come unsigned
            raise RobotError(
                f"the reply from {self.address} to {op!r} is not signed for this request: a server with another "
                "token, or the reply was altered on the way"
            )
        error = " ".join(str(reply.get("error")).split())[:300]
        if reply.get("code") == "auth":
            raise RobotError(
                f"the robot server at {self.address} refused the token; pass the token it was started with"
            )
        if reply.get("code") == "replay":
            raise RobotError(f"the robot server at {self.address} refused the request as a replay: {error}")
        if signed and reply.get("code") == "estop" and isinstance(reply.get("events"), list):
            self.events.extend(e for e in reply["events"] if isinstance(e, dict) and isinstance(e.get("reason"), str))
        raise RobotError(f"robot server at {self.address}: {error}")


def _feature(spec: dict) -> Feature:
    feature = Feature.from_json(spec)
    np.dtype(feature.dtype)  # a dtype numpy knows
    return feature


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value, feature: Feature) -> bool:
    """Whether an observation entry has the feature's shape and dtype (a 0-d entry may come as a JSON scalar)."""
    dtype = np.dtype(feature.dtype)
    if isinstance(value, np.ndarray):
        return value.shape == feature.shape and value.dtype == dtype
    if feature.shape != ():
        return False
    return isinstance(value, bool) if dtype.kind == "b" else _is_number(value)
