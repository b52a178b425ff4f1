"""The robot side of the network bridge: a guarded robot served over TCP (ZeroMQ ROUTER, one request at a time).

A request is a `wire` message `[auth, header, *arrays]` whose header is `{"op", "call", ...fields}`. Before any work
the server checks, each step in bounded time and in this order: at most MAX_REQUEST_FRAMES frames and
MAX_REQUEST_BYTES bytes in all (ZeroMQ itself drops a peer that sends a single larger frame), a 68-byte auth frame,
its HMAC over every frame under the shared secret (the secret never travels), a timestamp within `window_s` of the
server's clock, and a seq above the last one of that client (a replay is refused). Only then is the header parsed,
with bounded size and depth, and checked field by field for its op. Every server start draws a random `session` id
and puts it in every signed reply; a client learns it at hello and names it in every later request, which the MAC
covers, so a request bound for one server instance is refused by any other (a restarted server, a second server
sharing the token), and a client whose server restarted sees the change and ends its episode. Ops:
  hello            -> name, observation/action features, hold action, watchdog deadline, can_reset, control_hz,
                      events_total (the guard events so far)
  get_observation  -> {"obs": {...}}
  send_action      {"action": float32 (A,), "events_seen": n} -> {"sent": (A,), "events": [guard events from n on]}
  reset            {"options": {"state"?, "goal"?: float (S,)}} -> {"obs": {...}}  (robots with the reset extension)
  events           {"since": n} -> {"events": [...]}
  bye              -> the robot holds at once
Every message gets a reply; a refused one `{"ok": false, "code", "error"}` with code `auth` (unsigned: the sender
was not authenticated), `replay`, `session`, `limit`, `rate` or `bad_request`, and `estop` once the robot was
e-stopped (with the e-stop's guard event); nothing refused reaches the robot, and no message can stop the server.
A `send_action` that comes before the guard's rate limit allows it is parked, not waited for: the loop goes on
serving observations and ticking the watchdog, and sends the action (and its reply) when the period has passed.
A retried call (the same client and `call` with a fresh seq, after a client-side timeout) gets the cached reply and
is not executed twice. The loop polls every few ms and ticks the guard's watchdog between messages,
before executing one, and while draining an oversized one, so a client that vanishes mid-episode (killed, unplugged)
leaves the robot holding within the watchdog deadline however busy the socket is. With `curve_secret_key` the link
is encrypted with CurveZMQ; binding beyond loopback needs it, or `insecure=True`. After an e-stop the server
answers every request with the e-stop error for `grace_s`, then exits.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import zmq

from envs.robot import wire
from envs.robot.guard import SafetyGuard
from envs.robot.keys import is_loopback, require_curve
from envs.robot.protocol import RobotError, hold_action
from wm.errors import WMError

log = logging.getLogger("wm.robot")
REPLAY_WINDOW_S = 30.0  # a request's timestamp may be this far from the server's clock, either way
MAX_CLIENTS = 1024  # authenticated clients remembered for replay checks (the least recently seen are evicted)
RECEIVE_QUEUE = 64  # frames queued per peer (ZeroMQ's high-water mark): with MAXMSGSIZE, bounds a peer's memory
TICK_EVERY_FRAMES = 256  # watchdog ticks while draining a message of many frames
OPS = ("hello", "get_observation", "send_action", "reset", "events", "bye")


class _Refused(Exception):
    """A request answered with an error and not executed."""

    def __init__(self, code: str, error: str):
        super().__init__(error)
        self.code, self.error = code, error

    def reply(self) -> dict:
        return {"ok": False, "code": self.code, "error": self.error}


@dataclass
class _Client:
    """Replay state of one authenticated client: its last seq and when it came, its last call and that reply."""

    seq: int = 0
    seen: float = 0.0  # time.time()
    stamped: float = 0.0  # the newest timestamp its requests carried
    call: int = 0
    reply: list | None = None  # body frames


@dataclass
class _Parked:
    """A send_action waiting out the guard's rate limit: sent, and answered, once `due` (time.monotonic()) comes."""

    envelope: list
    auth: wire.Auth
    client: _Client
    call: int
    msg: dict
    due: float


class RobotServer:
    """`start()` (bind, connect the robot) then `serve(stop)`; binds 127.0.0.1 unless told otherwise (`port=0`: a
    free port).

    `token` is the shared secret both sides sign with; `curve_secret_key` (Z85, from `wm robot keygen`) encrypts."""

    def __init__(
        self,
        guard: SafetyGuard,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_s: float = 0.005,
        curve_secret_key: bytes | None = None,
        insecure: bool = False,
        window_s: float = REPLAY_WINDOW_S,
    ):
        if not token:
            raise WMError("the robot server needs a non-empty shared-secret token; pass --token or set WM_ROBOT_TOKEN")
        if curve_secret_key is not None:
            require_curve()
        elif not is_loopback(host) and not insecure:
            raise WMError(
                f"serving on {host} would expose the robot to the network unencrypted; pass --curve-key "
                "DIR/secret.key (made by `wm robot keygen --out DIR`), or --insecure to accept that"
            )
        self.guard, self._secret, self.host, self.port, self.poll_s = guard, token.encode(), host, port, poll_s
        self._curve, self.window_s = curve_secret_key, window_s
        self.address: str | None = None
        self.stats: Counter = Counter()
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._clients: dict[bytes, _Client] = {}
        self._admit_after = 0.0  # requests of unknown clients must be stamped later (evicted clients' replays)
        self._parked: _Parked | None = None
        self.session = secrets.token_hex(8)  # this server instance, in every signed reply
        self._action_shape: tuple[int, ...] = ()  # the robot's, once connected
        self._state_shape: tuple[int, ...] | None = None  # the simulator's state vector (sim_state), if any
        self._warned: dict[str, float] = {}  # refusal code -> time.monotonic() of its last warning
        self._unwarned: Counter = Counter()  # refusals since that warning

    @property
    def public_key(self) -> bytes | None:
        """The Curve public key clients need (Z85), or None when the link is not encrypted."""
        return None if self._curve is None else zmq.curve_public(self._curve)

    def bind(self) -> str:
        """Bind the socket; returns the address clients connect to (`tcp://HOST:PORT`)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_REQUEST_BYTES)  # per frame; the whole message is checked in _receive
        sock.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)  # what one peer can queue before the signature is checked
        if self._curve is not None:
            sock.curve_secretkey, sock.curve_publickey, sock.curve_server = self._curve, self.public_key, True
        host = f"[{self.host}]" if ":" in self.host else self.host
        if ":" in self.host:
            sock.setsockopt(zmq.IPV6, 1)
        try:
            if self.port:
                sock.bind(f"tcp://{host}:{self.port}")
            else:
                sock.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError as e:
            sock.close()
            raise WMError(
                f"cannot serve on tcp://{host}:{self.port or '*'} ({e}); pick another --host/--port"
            ) from None
        self._sock = sock
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.address

    def start(self) -> str:
        """Bind (if not yet) and connect the robot through the guard; returns the address. A robot that fails to
        connect leaves nothing bound."""
        address = self.address if self._sock is not None else self.bind()
        try:
            self.guard.connect()
        except Exception:
            self._sock.close()
            self._sock = None
            raise
        self._action_shape = self.guard.action_features.shape
        state = self.guard.observation_features.get("sim_state")
        self._state_shape = None if state is None else state.shape
        return address

    def serve(self, stop: threading.Event | None = None, grace_s: float = 1.0) -> dict:
        """Answer requests until `stop` is set or an e-stop's grace period ends (`start` first, if not done)."""
        if self._sock is None or not self.guard.is_connected:
            self.start()
        stop = stop or threading.Event()
        stopped_at = None
        try:
            while not stop.is_set():
                self.guard.tick()
                if self.guard.stopped is not None:
                    stopped_at = stopped_at or time.monotonic()
                    if time.monotonic() - stopped_at > grace_s:
                        break
                if self._parked is not None and time.monotonic() >= self._parked.due:
                    self._send_parked()
                wait = self.poll_s if self._parked is None else min(self.poll_s, self._parked.due - time.monotonic())
                if self._sock.poll(max(0, int(wait * 1000))):
                    self._serve_one()
        finally:
            if self.guard.stopped is None and self.guard.is_connected:
                self.guard.hold("server_stop", "the server is stopping")
            self.guard.disconnect()
            self._sock.close()
            self._sock = None
        return {
            "requests": self.stats["requests"],
            "refused": self.stats["refused"],
            "malformed": self.stats["malformed"],
            **self.event_counts(),
        }

    def event_counts(self) -> dict:
        return {"safety_events": dict(Counter(e.reason for e in self.guard.events))}

    # ------------------------------------------------------------------------------------ requests
    def _serve_one(self) -> None:
        envelope, frames, too_big = self._receive()
        self.stats["requests"] += 1
        try:
            if too_big:
                raise _Refused("limit", too_big)
            auth, body = self._authenticate(frames)
        except _Refused as r:
            self._count(r)
            reply = wire.encode(r.reply())
            auth_frame = wire.sign(None, wire.MAGIC_REPLY, bytes(wire.CLIENT_ID_BYTES), 0, time.time(), reply)
        else:
            try:
                reply = self._call(auth, body, envelope)
            except _Refused as r:
                self._count(r)
                reply = self._signed_refusal(r)
            except Exception as e:  # defence in depth: no message may stop the server
                log.exception("a request could not be answered")
                reply = wire.encode({"ok": False, "code": "bad_request", "error": f"{type(e).__name__}: {e}",
                                     "session": self.session})  # fmt: skip
            if reply is None:  # parked: answered when the rate limit allows the action
                return
            auth_frame = wire.sign(self._secret, wire.MAGIC_REPLY, auth.client, auth.seq, time.time(), reply)
        self._sock.send_multipart([*envelope, auth_frame, *reply], copy=False)

    def _signed_refusal(self, refusal: _Refused) -> list:
        return wire.encode({**refusal.reply(), "session": self.session})

    def _receive(self) -> tuple[list, list, str | None]:
        """One message -> (envelope, frames, why it is over the limits or None). Frames past the limits are
        drained and dropped, ticking the watchdog as they go."""
        frame = self._sock.recv(copy=False)
        envelope, frames, count, total, over = [frame.bytes], [], 0, 0, False
        while frame.more:
            frame = self._sock.recv(copy=False)
            if len(envelope) == 1 and not count and not len(frame):  # the empty delimiter a REQ socket adds
                envelope.append(b"")
                continue
            count, total = count + 1, total + len(frame)
            if count % TICK_EVERY_FRAMES == 0:
                self.guard.tick()
            over = over or count > wire.MAX_REQUEST_FRAMES or total > wire.MAX_REQUEST_BYTES
            if not over:
                frames.append(frame)
        if over:
            limits = f"{wire.MAX_REQUEST_FRAMES} frames and {wire.MAX_REQUEST_BYTES} bytes"
            return envelope, [], f"the request has {count} frames of {total} bytes in all; the limits are {limits}"
        return envelope, frames, None

    def _authenticate(self, frames: list) -> tuple[wire.Auth, list]:
        if len(frames) < 2:
            raise _Refused("auth", f"a request is an auth frame, a header and arrays; got {len(frames)} frame(s)")
        try:
            auth = wire.parse_auth(frames[0])
        except ValueError as e:
            raise _Refused("auth", f"bad auth frame: {e}") from None
        body = frames[1:]
        if auth.magic != wire.MAGIC_REQUEST or not wire.verify(self._secret, auth, body):
            raise _Refused("auth", "the signature does not verify: a wrong token, or the message was altered")
        return auth, body

    def _call(self, auth: wire.Auth, body: list, envelope: list) -> list | None:
        """An authenticated request -> reply body frames (cached per client for retries), or None when a
        send_action was parked to wait out the rate limit."""
        now = time.time()
        skew = now - auth.timestamp
        if not abs(skew) <= self.window_s:
            raise _Refused(
                "replay",
                f"the request's timestamp is {skew:+.1f} s off the server's clock, outside the +-{self.window_s:g} s "
                "window: a replay, or the two machines' clocks disagree (synchronise them)",
            )
        client = self._admit(auth, now)
        try:
            msg = wire.decode(body, wire.MAX_HEADER_BYTES)
        except ValueError as e:
            raise _Refused("bad_request", f"bad message: {e}") from None
        if msg.get("op") != "hello" and msg.get("session") != self.session:
            raise _Refused("session", "the request was signed for another server session (this server restarted, or "
                           "another server shares the token); connect again")  # fmt: skip
        call = msg.get("call")
        if type(call) is not int or call < 1 or call < client.call:
            raise _Refused("bad_request", f"bad message: 'call' must be an integer >= {max(1, client.call)}")
        if call == client.call:  # a retry: answer again, do not execute again
            return client.reply
        parked = self._parked
        if parked is not None and parked.client is client and parked.call == call:  # a retry of the parked one
            parked.envelope, parked.auth = envelope, auth  # answer on the newest connection, for the newest seq
            return None
        self.guard.tick()  # the deadline may have passed while this request was checked
        if msg.get("op") == "send_action" and self.guard.stopped is None and self.guard.rate_wait() > 0:
            if parked is not None:
                raise _Refused("rate", "another action is waiting for the guard's rate limit; send one at a time")
            wait = self.guard.rate_wait()
            self._parked = _Parked(envelope, auth, client, call, msg, time.monotonic() + wait)
            self.guard.note_rate_wait(wait)
            return None
        return self._answer(client, call, msg)

    def _answer(self, client: _Client, call: int, msg: dict) -> list:
        """Execute `msg` and cache its reply for the client's retries."""
        try:
            reply = {"ok": True, **self._execute(msg)}
        except _Refused as r:
            self._count(r)
            reply = r.reply()
        except RobotError as e:
            reply = {"ok": False, "error": str(e)}
            if self.guard.stopped is not None:  # the e-stop's refusal carries its event
                estops = [ev.to_json() for ev in self.guard.events if ev.reason == "estop"]
                reply.update(code="estop", events=estops[-1:])
        except WMError as e:
            reply = {"ok": False, "error": str(e)}
        except Exception as e:  # a robot failure must reach the client as one line, and the server keeps serving
            log.exception("robot request %s failed", wire.short(msg.get("op")))
            reply = {"ok": False, "error": f"robot failure: {type(e).__name__}: {e}"}
        client.call, client.reply = call, wire.encode({**reply, "session": self.session})
        return client.reply

    def _send_parked(self) -> None:
        """Send the parked action now that the rate limit allows it, and its reply."""
        parked, self._parked = self._parked, None
        reply = self._answer(parked.client, parked.call, parked.msg)
        auth = parked.auth
        auth_frame = wire.sign(self._secret, wire.MAGIC_REPLY, auth.client, auth.seq, time.time(), reply)
        self._sock.send_multipart([*parked.envelope, auth_frame, *reply], copy=False)

    def _admit(self, auth: wire.Auth, now: float) -> _Client:
        """The client's replay state, its seq advanced; a seq not above its last one is a replay. A full table
        evicts its least recently seen client; from then on a request of a client the server does not know must be
        stamped after every evicted client's newest request, so an evicted client's captured requests stay refused
        (at worst a new client whose clock lags is asked to retry)."""
        client = self._clients.get(auth.client)
        if client is None:
            if auth.timestamp <= self._admit_after:
                raise _Refused("replay", "the request is stamped before a forgotten client's last one: a replay, or "
                               "this machine's clock lags the server's; retry")  # fmt: skip
            if len(self._clients) >= MAX_CLIENTS:
                oldest = min(self._clients, key=lambda k: self._clients[k].seen)
                self._admit_after = max(self._admit_after, self._clients.pop(oldest).stamped)
            client = self._clients[auth.client] = _Client()
        if auth.seq <= client.seq:
            raise _Refused(
                "replay", f"seq {auth.seq} is not above this client's last, {client.seq}: a replayed request"
            )
        client.seq, client.seen, client.stamped = auth.seq, now, max(client.stamped, auth.timestamp)
        return client

    def _count(self, refusal: _Refused) -> None:
        """Count a refusal and log it, at most one warning per code and second."""
        self.stats["refused" if refusal.code in ("auth", "replay") else "malformed"] += 1
        now, code = time.monotonic(), refusal.code
        if now - self._warned.get(code, -1.0) < 1.0:
            self._unwarned[code] += 1
            return
        more = self._unwarned.pop(code, 0)
        log.warning("refused a request (%s): %s%s", code, refusal.error, f" (+{more} like it)" if more else "")
        self._warned[code] = now

    def _execute(self, msg: dict) -> dict:
        op, guard = msg.get("op"), self.guard
        if op == "hello":
            robot = guard.robot
            return {
                "session": self.session,
                "name": robot.name,
                "observation_features": {k: f.to_json() for k, f in guard.observation_features.items()},
                "action_features": guard.action_features.to_json(),
                "hold_action": hold_action(robot),
                "watchdog_s": guard.config.watchdog_s,
                "can_reset": guard.can_reset,
                "control_hz": getattr(robot, "control_hz", None),
                "events_total": len(guard.events),  # a new client hears only of events from now on
            }
        if op == "get_observation":
            return {"obs": guard.get_observation()}
        if op == "send_action":
            action, seen = self._action(msg), _index(msg, "events_seen")
            return {"sent": guard.send_action(action), "events": self._events(seen)}
        if op == "reset":
            return {"obs": guard.reset(self._reset_options(msg))}
        if op == "events":
            return {"events": self._events(_index(msg, "since"))}
        if op == "bye":
            guard.hold("client_left", "the client disconnected")
            return {}
        raise _Refused("bad_request", f"unknown op {wire.short(op)}; the ops are {', '.join(OPS)}")

    def _action(self, msg: dict) -> np.ndarray:
        action, shape = msg.get("action"), self._action_shape
        if isinstance(action, np.ndarray) and action.dtype == np.float32 and action.shape == shape:
            return action
        got = f"{action.dtype} {action.shape}" if isinstance(action, np.ndarray) else type(action).__name__
        raise _Refused("bad_request", f"send_action needs 'action': a float32 array of shape {shape}, got {got}")

    def _reset_options(self, msg: dict) -> dict | None:
        options = msg.get("options")
        if not isinstance(options, dict) or not set(options) <= {"state", "goal"}:
            raise _Refused("bad_request", "reset needs 'options': a dict of 'state' and/or 'goal' arrays")
        shape = self._state_shape
        for key, value in options.items():
            ok = isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.ndim == 1
            if not ok or (shape is not None and value.shape != shape) or not np.all(np.isfinite(value)):
                shape = "(S,)" if shape is None else shape
                raise _Refused("bad_request", f"reset option {key!r} must be a finite float array of shape {shape}")
        return options or None

    def _events(self, since: int) -> list[dict]:
        return [e.to_json() for e in self.guard.events[since:]]


def _index(msg: dict, key: str) -> int:
    value = msg.get(key)
    if type(value) is not int or value < 0:
        raise _Refused("bad_request", f"{msg.get('op')} needs {key!r}: an integer >= 0, got {wire.short(value)}")
    return value
