"""The planner side of the network bridge: a robot served by `RobotServer`, behind the same robot protocol.

Each call is one request/reply (ZeroMQ REQ) with a timeout; on a timeout the socket is thrown away and the request
is sent again on a fresh connection ("lazy pirate"), up to `retries` times; the server recognises a retry by its
sequence number and does not execute it twice. A server that never answers, refuses the token or reports a robot
failure raises `RobotError` with one line saying so. Guard events the server reports accumulate in `events`.
"""

from __future__ import annotations

import re
import secrets

import numpy as np
import zmq

from envs.robot import wire
from envs.robot.protocol import Feature, RobotError
from wm.errors import WMError

ADDRESS = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def parse_address(address: str) -> str:
    """Check `tcp://HOST:PORT` and return it; a one-line WMError otherwise."""
    match = ADDRESS.match(address or "")
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise WMError(f"bad robot address {address!r}; use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555")
    return address


class RemoteRobot:
    """A robot at `tcp://HOST:PORT` served by `wm robot serve`; `token` is the server's shared secret."""

    def __init__(self, address: str, token: str, timeout_s: float = 2.0, retries: int = 3):
        self.address = parse_address(address)
        if not token:
            raise WMError("a robot token is needed; pass --token (or set WM_ROBOT_TOKEN) as given to `wm robot serve`")
        self.name = f"remote:{address}"
        self._token, self.timeout_s, self.retries = token, timeout_s, max(1, retries)
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._id = secrets.token_hex(8)
        self._seq = 0
        self.info: dict | None = None  # the server's hello reply
        self.events: list[dict] = []  # guard events reported by the server since connect, in order
        self._events_before = 0

    # ------------------------------------------------------------------------------------ protocol
    @property
    def is_connected(self) -> bool:
        return self.info is not None

    @property
    def observation_features(self) -> dict[str, Feature]:
        return {k: Feature.from_json(v) for k, v in self._info()["observation_features"].items()}

    @property
    def action_features(self) -> Feature:
        return Feature.from_json(self._info()["action_features"])

    @property
    def watchdog_s(self) -> float | None:
        return self._info()["watchdog_s"]

    @property
    def control_hz(self) -> float | None:
        return self._info()["control_hz"]

    @property
    def can_reset(self) -> bool:
        return bool(self._info()["can_reset"])

    def connect(self) -> None:
        self.info = self._request("hello")
        self._events_before = self.info["events_total"]

    def disconnect(self) -> None:
        """Tell the server (the robot holds at once) and close; never raises if the server is gone."""
        if self.info is not None:
            try:
                self._request("bye", retries=1, timeout_s=min(self.timeout_s, 0.5))
            except RobotError:
                pass
            self.info = None
        self._close()

    def get_observation(self) -> dict:
        return self._request("get_observation")["obs"]

    def send_action(self, action) -> np.ndarray:
        seen = self._events_before + len(self.events)
        reply = self._request("send_action", action=np.asarray(action, np.float32), events_seen=seen)
        self.events.extend(reply["events"])
        return reply["sent"]

    def reset(self, options: dict | None = None) -> dict:
        """The reset extension: only robots that can reset themselves (the simulated robot) accept it."""
        return self._request("reset", options=options or {})["obs"]

    def hold_action(self) -> np.ndarray:
        return np.asarray(self._info()["hold_action"], np.float32)

    # ------------------------------------------------------------------------------------ transport
    def _info(self) -> dict:
        if self.info is None:
            raise RobotError(f"{self.name} is not connected; call connect() first")
        return self.info

    def _open(self):
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
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
        self._seq += 1
        frames = wire.encode({"op": op, "token": self._token, "client": self._id, "seq": self._seq, **fields})
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        tries = retries or self.retries
        for _ in range(tries):
            if self._sock is None:
                self._sock = self._open()
            self._sock.send_multipart(frames, copy=False)
            if self._sock.poll(int(timeout_s * 1000)):
                try:
                    reply = wire.decode(self._sock.recv_multipart())
                except ValueError as e:
                    raise RobotError(
                        f"{self.address} sent an unreadable reply ({e}); is it a wm robot server?"
                    ) from None
                break
            self._close()  # a REQ socket that timed out cannot send again: start a fresh connection
        else:
            raise RobotError(
                f"no reply from a robot server at {self.address} to {op!r} ({tries} tries of {timeout_s:g} s); "
                "check that `wm robot serve` is running there"
            )
        if reply.get("ok"):
            return reply
        if reply.get("code") == "auth":
            raise RobotError(
                f"the robot server at {self.address} refused the token; pass the token it was started with"
            )
        raise RobotError(f"robot server at {self.address}: {reply.get('error')}")
