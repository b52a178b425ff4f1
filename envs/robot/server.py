"""The robot side of the network bridge: a guarded robot served over TCP (ZeroMQ ROUTER, one request at a time).

Requests are `wire` messages `{"op", "token", "client", "seq", ...}`; every one must carry the shared-secret
token (compared with `hmac.compare_digest`) or it is refused unexecuted. Ops:
  hello            -> name, observation/action features, hold action, watchdog deadline, can_reset, control_hz,
                      events_total (the guard events so far)
  get_observation  -> {"obs": {...}}
  send_action      {"action": (A,), "events_seen": n} -> {"sent": (A,), "events": [guard events from n on]}
  reset            {"options": {...}} -> {"obs": {...}}  (robots with the reset extension only)
  events           {"since": n} -> {"events": [...]}
  bye              -> the robot holds at once
A retried request (same client and seq, after a client-side timeout) gets the cached reply and is not executed
twice. The loop polls every few ms and ticks the guard's watchdog, so a client that vanishes mid-episode (killed,
unplugged) leaves the robot holding within the watchdog deadline. After an e-stop the server answers every request
with the e-stop error for `grace_s`, then exits.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter

import numpy as np
import zmq

from envs.robot import wire
from envs.robot.guard import SafetyGuard
from envs.robot.protocol import hold_action
from wm.errors import WMError

log = logging.getLogger("wm.robot")
MAX_MESSAGE_BYTES = 64 << 20


class RobotServer:
    """`bind()` then `serve(stop)`; binds 127.0.0.1 unless told otherwise (`port=0`: a free port)."""

    def __init__(self, guard: SafetyGuard, token: str, host: str = "127.0.0.1", port: int = 0, poll_s: float = 0.005):
        if not token:
            raise WMError("the robot server needs a non-empty shared-secret token; pass --token or set WM_ROBOT_TOKEN")
        self.guard, self._token, self.host, self.port, self.poll_s = guard, token.encode(), host, port, poll_s
        self.address: str | None = None
        self.stats: Counter = Counter()
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._cache: tuple[str, int, list] | None = None  # (client, seq, reply frames) of the last request

    def bind(self) -> str:
        """Bind the socket; returns the address clients connect to (`tcp://HOST:PORT`)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
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

    def serve(self, stop: threading.Event | None = None, grace_s: float = 1.0) -> dict:
        """Connect the robot and answer requests until `stop` is set or an e-stop's grace period ends."""
        if self._sock is None:
            self.bind()
        self.guard.connect()
        stop = stop or threading.Event()
        stopped_at = None
        try:
            while not stop.is_set():
                self.guard.tick()
                if self.guard.stopped is not None:
                    stopped_at = stopped_at or time.monotonic()
                    if time.monotonic() - stopped_at > grace_s:
                        break
                if self._sock.poll(int(self.poll_s * 1000)):
                    self._handle(self._sock.recv_multipart(copy=False))
        finally:
            if self.guard.stopped is None and self.guard.is_connected:
                self.guard.hold("server_stop", "the server is stopping")
            self.guard.disconnect()
            self._sock.close()
            self._sock = None
        return {"requests": self.stats["requests"], "refused": self.stats["refused"], **self.event_counts()}

    def event_counts(self) -> dict:
        return {"safety_events": dict(Counter(e.reason for e in self.guard.events))}

    # ------------------------------------------------------------------------------------ requests
    def _handle(self, frames) -> None:
        frames = [f.bytes if hasattr(f, "bytes") else f for f in frames]
        split = 2 if len(frames) > 1 and frames[1] == b"" else 1  # identity (+ the empty delimiter REQ adds)
        envelope, payload = frames[:split], frames[split:]
        self.stats["requests"] += 1
        try:
            msg = wire.decode(payload)
        except ValueError as e:
            self._sock.send_multipart([*envelope, *wire.encode({"ok": False, "error": f"bad message: {e}"})])
            return
        token = msg.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            self.stats["refused"] += 1
            log.warning("refused a %r request with a wrong token", msg.get("op"))
            reply = {"ok": False, "code": "auth", "error": "wrong token"}
            self._sock.send_multipart([*envelope, *wire.encode(reply)])
            return
        client, seq = str(msg.get("client")), msg.get("seq")
        if self._cache is not None and self._cache[:2] == (client, seq):
            self._sock.send_multipart([*envelope, *self._cache[2]], copy=False)
            return
        try:
            reply = {"ok": True, **self._execute(msg)}
        except WMError as e:
            reply = {"ok": False, "error": str(e)}
        except Exception as e:  # a robot failure must reach the client as one line, and the server keeps serving
            log.exception("robot request %r failed", msg.get("op"))
            reply = {"ok": False, "error": f"robot failure: {type(e).__name__}: {e}"}
        out = wire.encode(reply)
        self._cache = (client, seq, out)
        self._sock.send_multipart([*envelope, *out], copy=False)

    def _execute(self, msg: dict) -> dict:
        op, guard = msg.get("op"), self.guard
        if op == "hello":
            robot = guard.robot
            return {
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
            sent = guard.send_action(np.asarray(msg.get("action"), np.float32))
            return {"sent": sent, "events": self._events(msg.get("events_seen", 0))}
        if op == "reset":
            return {"obs": guard.reset(msg.get("options") or None)}
        if op == "events":
            return {"events": self._events(msg.get("since", 0))}
        if op == "bye":
            guard.hold("client_left", "the client disconnected")
            return {}
        raise WMError(f"unknown op {op!r}")

    def _events(self, since) -> list[dict]:
        since = since if isinstance(since, int) and since >= 0 else 0
        return [e.to_json() for e in self.guard.events[since:]]
