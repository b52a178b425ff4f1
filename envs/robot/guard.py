"""The safety guard: a robot wrapping any robot so that no requested action reaches it unchecked.

Per `send_action(a (A,))`, in this order:
  e-stop tripped                        -> safe stop (hold, disconnect), then every call raises RobotError
  `a` not an (A,) vector of numbers     -> hold
  NaN / inf in `a`                      -> hold
  last observation older than watchdog  -> hold (the controller acted on stale data)
  workspace box set                     -> the guard reads the robot's proprio itself, now (`read_proprio` where the
                                           robot has it, else a fresh observation), whatever the client last asked
                                           for: no proprio, or proprio outside the box -> hold (an operator moves
                                           the robot back; the guard never guesses how)
  otherwise                             -> clip to the absolute bounds, then to `max_delta` around the last sent
                                           action (the hold action before the first), like LeRobot's
                                           `max_relative_target`, then to the absolute bounds again: the last
                                           thing before the robot is commanded is the bound clip
  faster than `max_rate_hz`             -> wait (without holding the lock, polling the e-stop every few ms) until
                                           the minimum period has passed, then send; a server parks the request
                                           instead (`rate_wait`), so it never blocks the watchdog or observations
The e-stop is checked again immediately before the robot is commanded, so a trip during a rate wait stops the
action. Watchdog (`tick`, driven by a thread from `start_watchdog` or by a server's poll loop): no new action within
`watchdog_s` of the last one -> hold once, until the next action. Every limit is checked when the config is made
(finite, positive, ordered; a rate slower than one command per watchdog deadline is refused). `connect` refuses a
workspace box on a robot that reports no proprio (or fewer dims than the box); `reset` (simulated robots) refuses a
start whose proprio is not finite or lies outside the box. Every intervention is a `SafetyEvent` (wall time,
reason, detail, step) in `events`, an `EventLog`: the last `max_events` in memory, all of them appended to
`event_log` (JSON lines) when given. The hold action is the robot's (`protocol.hold_action`), clipped to bounds.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from envs.robot.protocol import Feature, RobotError, hold_action
from wm.errors import WMError

log = logging.getLogger("wm.robot")
QUIET_REASONS = ("bounds", "max_delta", "rate")  # frequent by design: recorded, logged at debug level only
ESTOP_POLL_S = 0.005  # a rate wait sleeps in slices this long, checking the e-stop between them


@dataclass
class GuardConfig:
    """Limits; None switches a check off (bounds default to the robot's action feature bounds)."""

    low: list[float] | float | None = None
    high: list[float] | float | None = None
    max_delta: list[float] | float | None = None  # per-dim |a_t - a_{t-1}| limit, action units per step (inf: none)
    workspace_low: list[float] | None = None  # bounds on proprio[:k], k = len(workspace_low); both or neither
    workspace_high: list[float] | None = None
    max_rate_hz: float | None = None
    watchdog_s: float | None = 1.0

    def __post_init__(self):
        for name in ("low", "high", "max_delta", "workspace_low", "workspace_high", "max_rate_hz", "watchdog_s"):
            value = getattr(self, name)
            finite = np.isfinite(np.asarray(value, np.float64)) | (name == "max_delta")  # max_delta: inf = free dim
            if value is not None and not (np.all(finite) and not np.any(np.isnan(np.asarray(value, np.float64)))):
                raise WMError(f"guard limit {name} must be finite, got {value}")
        for name in ("max_delta", "max_rate_hz", "watchdog_s"):
            value = getattr(self, name)
            if value is not None and not np.all(np.asarray(value, np.float64) > 0):
                raise WMError(f"guard limit {name} must be positive, got {value}")
        if self.low is not None and self.high is not None and not np.all(np.asarray(self.low) < np.asarray(self.high)):
            raise WMError(f"guard bounds low {self.low} and high {self.high} need each low below its high")
        low, high = self.workspace_low, self.workspace_high
        if (low is None) != (high is None):
            raise WMError("a workspace box needs both workspace_low and workspace_high (bounds on proprio[:k])")
        if low is not None and (len(low) != len(high) or not np.all(np.asarray(low) < np.asarray(high))):
            raise WMError(
                f"workspace_low {list(low)} and workspace_high {list(high)} need as many values, each low below high"
            )
        if self.max_rate_hz is not None and self.watchdog_s is not None and 1 / self.max_rate_hz > self.watchdog_s:
            raise WMError(
                f"a rate limit of {self.max_rate_hz:g} Hz spaces commands {1 / self.max_rate_hz:g} s apart, longer "
                f"than the watchdog's {self.watchdog_s:g} s: raise the rate to at least {1 / self.watchdog_s:g} Hz or "
                "lengthen the watchdog"
            )


@dataclass
class SafetyEvent:
    time: float  # time.time() of the intervention
    reason: str  # estop | malformed | nonfinite | stale_observation | workspace | bounds | max_delta | rate | watchdog
    # (or a caller's hold reason: client_left, server_stop, ...)
    detail: str
    step: int  # send_action calls so far

    def to_json(self) -> dict:
        return asdict(self)


class EventLog:
    """The guard's safety events: the newest `maxlen` kept in memory (a ring buffer), every one appended to `path`
    (one JSON object a line) when given. Indices count every event ever logged, so a reader's cursor stays valid
    when old events leave memory: `len(log)` is the total logged, `log[n:]` the kept events from the n-th on,
    `log[-1]` the newest; iterating gives the kept events, `counts` the total per reason. Thread-safe."""

    def __init__(self, maxlen: int = 1000, path: str | os.PathLike | None = None):
        if maxlen < 1:
            raise WMError(f"the event log must keep at least one event in memory, got maxlen={maxlen}")
        self.path = Path(path) if path is not None else None
        self.counts: Counter = Counter()
        self._kept: deque[SafetyEvent] = deque(maxlen=maxlen)
        self._total = 0
        self._lock = threading.Lock()

    def append(self, event: SafetyEvent) -> None:
        with self._lock:
            self._kept.append(event)
            self._total += 1
            self.counts[event.reason] += 1
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(event.to_json()) + "\n")

    def __len__(self) -> int:
        return self._total

    def __iter__(self):
        with self._lock:
            return iter(list(self._kept))

    def __getitem__(self, index):
        with self._lock:
            first = self._total - len(self._kept)  # the index of the oldest kept event
            if isinstance(index, slice):
                start, stop, step = index.indices(self._total)
                if step != 1:
                    raise ValueError("event log slices take no step")
                return list(itertools.islice(self._kept, max(start - first, 0), max(stop - first, 0)))
            i = index + self._total if index < 0 else index
            if not first <= i < self._total:
                raise IndexError(f"event {index} is not in memory (events {first}..{self._total - 1} are)")
            return self._kept[i - first]


class SafetyGuard:
    """A robot that forwards to `robot` through the checks above. Thread-safe (one lock around the robot, never held
    while waiting). `event_log`: a file every safety event is appended to; `max_events`: how many stay in memory."""

    def __init__(
        self,
        robot,
        config: GuardConfig | None = None,
        estop=None,
        *,
        event_log: str | os.PathLike | None = None,
        max_events: int = 1000,
    ):
        self.robot, self.config, self.estop = robot, config or GuardConfig(), estop
        self.name = f"guarded:{robot.name}"
        self.events = EventLog(max_events, event_log)
        self.stopped: str | None = None  # the e-stop reason once a safe stop happened
        self.holding = True  # nothing commanded yet
        self._lock = threading.RLock()
        self._steps = 0
        self._last_sent: np.ndarray | None = None
        self._last_send_time: float | None = None  # time.monotonic() of the last command (action or hold)
        self._last_obs_time: float | None = None
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ protocol
    @property
    def is_connected(self) -> bool:
        return self.robot.is_connected

    @property
    def observation_features(self) -> dict[str, Feature]:
        return self.robot.observation_features

    @property
    def action_features(self) -> Feature:
        low, high = self.bounds()
        return Feature(
            tuple(low.shape), "float32", tuple(low.tolist()), tuple(high.tolist()), self.robot.action_features.names
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Absolute action bounds `(A,)`, `(A,)`: the config's, tightened by the robot's own where it has them."""
        feat = self.robot.action_features
        shape = feat.shape
        low = np.full(shape, -np.inf, np.float32) if feat.low is None else np.asarray(feat.low, np.float32)
        high = np.full(shape, np.inf, np.float32) if feat.high is None else np.asarray(feat.high, np.float32)
        if self.config.low is not None:
            low = np.maximum(low, np.broadcast_to(np.float32(self.config.low), shape))
        if self.config.high is not None:
            high = np.minimum(high, np.broadcast_to(np.float32(self.config.high), shape))
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
            raise WMError(f"{self.robot.name}: action bounds [{low}, {high}] are not finite and ordered; pass low/high")
        return low, high

    def connect(self) -> None:
        """Connect the robot; refuses (WMError, the robot disconnected again) a robot without finite bounds, or
        without the proprio dims the workspace box bounds."""
        with self._lock:
            self.robot.connect()
            try:
                self.bounds()
                if self.config.workspace_low is not None:
                    k, proprio = len(self.config.workspace_low), self.robot.observation_features.get("proprio")
                    if proprio is None or not proprio.shape or proprio.shape[0] < k:
                        has = "no proprio" if proprio is None else f"proprio {proprio.shape}"
                        raise WMError(f"the workspace box bounds proprio[:{k}] but {self.robot.name} reports {has}")
            except WMError:
                self.robot.disconnect()
                raise

    def disconnect(self) -> None:
        self._stop_watchdog()
        with self._lock:
            if self.robot.is_connected:
                self.robot.disconnect()

    def get_observation(self) -> dict:
        with self._lock:
            self._check_estop()
            return self._observed(self.robot.get_observation())

    def reset(self, options: dict | None = None) -> dict:
        """The reset extension (simulated robots); the robot is at rest afterwards. Returns the observation."""
        with self._lock:
            self._check_estop()
            if not self.can_reset:
                raise RobotError(f"{self.robot.name} cannot reset itself; resetting a real robot is an operator action")
            obs = self.robot.reset(options)
            self._last_sent, self._last_send_time, self.holding = None, None, True
            if (outside := self._outside(obs.get("proprio"), require_finite=True)) is not None:
                self._event("workspace", f"refused the start: {outside}")
                raise RobotError(f"{self.robot.name}: the start state puts {outside}; pass starts inside it")
            return self._observed(obs)

    @property
    def can_reset(self) -> bool:
        return callable(getattr(self.robot, "reset", None))

    def _observed(self, obs: dict) -> dict:
        self._last_obs_time = time.monotonic()
        return obs

    def send_action(self, action) -> np.ndarray:
        """Check `action (A,)` and command the robot with it, or with the hold action; returns what was sent `(A,)`.
        A tripped e-stop (checked before the wait, every few ms during it, and right before the send) makes it the
        safe stop and a RobotError."""
        first = True
        while True:
            with self._lock:
                self._check_estop()
                if first:
                    self._steps += 1
                wait = self.rate_wait()
                if wait <= 0:
                    low, high = self.bounds()
                    target, holding = self._checked(action, low, high)
                    self._check_estop()  # immediately before commanding the robot
                    self.holding = holding
                    return self._send(target)
                if first:
                    self.note_rate_wait(wait)
            first = False
            time.sleep(min(wait, ESTOP_POLL_S))  # the lock is free meanwhile: observations, ticks, holds go on

    # ------------------------------------------------------------------------------------ checks
    def _hold(self, low, high) -> np.ndarray:
        return np.clip(hold_action(self.robot), low, high)

    def _send(self, target: np.ndarray) -> np.ndarray:
        sent = np.asarray(self.robot.send_action(target), np.float32)
        self._last_sent, self._last_send_time = sent.copy(), time.monotonic()
        return sent

    def _checked(self, action, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to send `(A,)` and whether it is the hold action."""
        cfg, now = self.config, time.monotonic()
        try:
            a = np.asarray(action, np.float32)
        except (TypeError, ValueError):
            a = None
        if a is None or a.shape != low.shape:
            what = type(action).__name__ if a is None else f"shape {a.shape}"
            self._event("malformed", f"requested an action of {what}; {self.robot.name} takes {low.shape}")
            return self._hold(low, high), True
        if not np.all(np.isfinite(a)):
            self._event("nonfinite", f"requested {a.tolist()}")
            return self._hold(low, high), True
        if cfg.watchdog_s is not None and (self._last_obs_time is None or now - self._last_obs_time > cfg.watchdog_s):
            age = "no observation yet" if self._last_obs_time is None else f"{now - self._last_obs_time:.3f} s old"
            self._event("stale_observation", f"last observation {age} (deadline {cfg.watchdog_s} s)")
            return self._hold(low, high), True
        if cfg.workspace_low is not None and (outside := self._outside(self._fresh_proprio())) is not None:
            self._event("workspace", outside)
            return self._hold(low, high), True
        target = np.clip(a, low, high)
        if not np.array_equal(target, a):
            self._event("bounds", f"requested {a.tolist()} clipped to {target.tolist()}")
        if cfg.max_delta is not None:
            ref = self._last_sent if self._last_sent is not None else self._hold(low, high)
            delta = np.broadcast_to(np.float32(cfg.max_delta), a.shape)
            limited = np.clip(target, np.maximum(ref - delta, low), np.minimum(ref + delta, high))
            if not np.array_equal(limited, target):
                self._event("max_delta", f"change {np.abs(target - ref).max():.3f} > {np.max(delta):.3f}")
            target = limited
        return np.clip(target, low, high), False  # whatever came before, the bounds are the last word

    def _fresh_proprio(self) -> np.ndarray | None:
        """The robot's proprio read now (its `read_proprio` extension, else a fresh observation), or None."""
        read = getattr(self.robot, "read_proprio", None)
        proprio = read() if callable(read) else self.robot.get_observation().get("proprio")
        return None if proprio is None else np.asarray(proprio, np.float32)

    def _outside(self, proprio, require_finite: bool = False) -> str | None:
        """Why `proprio` is not inside the workspace box (no reading, not finite, or outside), or None when it is
        (or when there is no box and a finite reading is not required)."""
        k = None if self.config.workspace_low is None else len(self.config.workspace_low)
        if k is None and not require_finite:
            return None
        if proprio is None:
            return "no proprio: nothing says where the robot is" if k is not None else None
        proprio = np.asarray(proprio, np.float64)
        if not np.all(np.isfinite(proprio)):
            return f"proprio {proprio.tolist()} not finite"
        if k is None:
            return None
        pos = proprio[:k]
        if np.any(pos < np.asarray(self.config.workspace_low)) or np.any(pos > np.asarray(self.config.workspace_high)):
            return f"proprio[:{k}] = {pos.tolist()} outside the workspace"
        return None

    def note_rate_wait(self, wait: float | None = None) -> None:
        """Record that a command waits `wait` s (default: `rate_wait()`) for the rate limit."""
        wait = self.rate_wait() if wait is None else wait
        self._event("rate", f"waiting {wait * 1000:.1f} ms (max {self.config.max_rate_hz} Hz)")

    def rate_wait(self) -> float:
        """Seconds until the rate limit allows the next command (<= 0: now)."""
        if not self.config.max_rate_hz or self._last_send_time is None:
            return 0.0
        return 1.0 / self.config.max_rate_hz - (time.monotonic() - self._last_send_time)

    def _tripped(self) -> str | None:
        return None if self.estop is None else self.estop.reason

    def _check_estop(self) -> None:
        if self.stopped is None and (reason := self._tripped()) is not None:
            self.safe_stop(reason)
        if self.stopped is not None:
            raise RobotError(f"{self.robot.name} was e-stopped ({self.stopped}); clear the cause and restart")

    def _event(self, reason: str, detail: str) -> None:
        self.events.append(SafetyEvent(time.time(), reason, detail, self._steps))
        log.log(logging.DEBUG if reason in QUIET_REASONS else logging.WARNING, "safety %s: %s", reason, detail)

    # --------------------------------------------------------------------------- holds and stops
    def hold(self, reason: str, detail: str = "") -> None:
        """Command the hold action now and log why (e.g. the network client went away); a tripped e-stop makes it
        the safe stop."""
        with self._lock:
            if self.stopped is not None or not self.robot.is_connected:
                return
            if (tripped := self._tripped()) is not None:
                self.safe_stop(tripped)
                return
            self._hold_now(reason, detail or "hold commanded")

    def _hold_now(self, reason: str, detail: str) -> None:
        low, high = self.bounds()
        self._send(self._hold(low, high))
        self.holding = True
        self._event(reason, detail)

    def safe_stop(self, reason: str) -> None:
        """Hold, then disconnect the robot (even when the hold fails); the guard refuses everything afterwards."""
        with self._lock:
            if self.stopped is not None:
                return
            self.stopped = reason
            try:
                if self.robot.is_connected:
                    self._hold_now("estop", f"{reason}: holding, then disconnecting")
            finally:
                if self.robot.is_connected:
                    self.robot.disconnect()

    def tick(self) -> None:
        """One watchdog check: e-stop, then the action deadline. Call often (every few ms) or use start_watchdog."""
        with self._lock:
            if self.stopped is not None:
                return
            if (tripped := self._tripped()) is not None:
                self.safe_stop(tripped)
                return
            deadline = self.config.watchdog_s
            if deadline is None or self.holding or self._last_send_time is None:
                return
            idle = time.monotonic() - self._last_send_time
            if idle > deadline:
                self.hold("watchdog", f"no new action for {idle:.3f} s (deadline {deadline} s)")

    def start_watchdog(self, period_s: float = 0.01) -> None:
        """Run `tick` every `period_s` in a daemon thread (for thread-safe robots; servers tick in their loop)."""
        if self._watchdog is None:
            self._watchdog_stop = threading.Event()
            self._watchdog = threading.Thread(target=self._watch, args=(period_s,), name="watchdog", daemon=True)
            self._watchdog.start()

    def _watch(self, period_s: float) -> None:
        while not self._watchdog_stop.wait(period_s):
            self.tick()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog_stop.set()
            self._watchdog.join()
            self._watchdog = None
