"""The safety guard: a robot wrapping any robot so that no requested action reaches it unchecked.

Per `send_action(a (A,))`, in this order:
  e-stop tripped                        -> safe stop (hold, disconnect), then every call raises RobotError
  NaN / inf in `a`                      -> hold
  last observation older than watchdog  -> hold (the controller acted on stale data)
  proprio outside the workspace box     -> hold (an operator moves the robot back; the guard never guesses how)
  otherwise                             -> clip to the absolute bounds, then to `max_delta` around the last sent
                                           action (the hold action before the first), like LeRobot's
                                           `max_relative_target`
  faster than `max_rate_hz`             -> wait until the minimum period has passed, then send
Watchdog (`tick`, driven by a thread from `start_watchdog` or by a server's poll loop): no new action within
`watchdog_s` of the last one -> hold once, until the next action. Every intervention is a `SafetyEvent` (wall
time, reason, detail, step) in `events`; the hold action is the robot's (`protocol.hold_action`), clipped to bounds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from envs.robot.protocol import Feature, RobotError, hold_action
from wm.errors import WMError

log = logging.getLogger("wm.robot")
QUIET_REASONS = ("bounds", "max_delta", "rate")  # frequent by design: recorded, logged at debug level only


@dataclass
class GuardConfig:
    """Limits; None switches a check off (bounds default to the robot's action feature bounds)."""

    low: list[float] | float | None = None
    high: list[float] | float | None = None
    max_delta: list[float] | float | None = None  # per-dim |a_t - a_{t-1}| limit, action units per step
    workspace_low: list[float] | None = None  # bounds on proprio[:k], k = len(workspace_low)
    workspace_high: list[float] | None = None
    max_rate_hz: float | None = None
    watchdog_s: float | None = 1.0


@dataclass
class SafetyEvent:
    time: float  # time.time() of the intervention
    reason: str  # estop | nonfinite | stale_observation | workspace | bounds | max_delta | rate | watchdog | hold
    detail: str
    step: int  # send_action calls so far

    def to_json(self) -> dict:
        return asdict(self)


class SafetyGuard:
    """A robot that forwards to `robot` through the checks above. Thread-safe (one lock around the robot)."""

    def __init__(self, robot, config: GuardConfig | None = None, estop=None):
        self.robot, self.config, self.estop = robot, config or GuardConfig(), estop
        self.name = f"guarded:{robot.name}"
        self.events: list[SafetyEvent] = []
        self.stopped: str | None = None  # the e-stop reason once a safe stop happened
        self.holding = True  # nothing commanded yet
        self._lock = threading.RLock()
        self._steps = 0
        self._last_sent: np.ndarray | None = None
        self._last_send_time: float | None = None  # time.monotonic()
        self._last_obs_time: float | None = None
        self._last_proprio: np.ndarray | None = None
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
        with self._lock:
            self.robot.connect()
            self.bounds()  # refuse to run without finite bounds

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
            return self._observed(obs)

    @property
    def can_reset(self) -> bool:
        return callable(getattr(self.robot, "reset", None))

    def _observed(self, obs: dict) -> dict:
        self._last_obs_time = time.monotonic()
        if "proprio" in obs:
            self._last_proprio = np.asarray(obs["proprio"], np.float32)
        return obs

    def send_action(self, action) -> np.ndarray:
        with self._lock:
            self._check_estop()
            self._steps += 1
            a = np.asarray(action, np.float32)
            low, high = self.bounds()
            if a.shape != low.shape:
                raise WMError(f"action has shape {a.shape}, {self.robot.name} takes {low.shape}")
            target, self.holding = self._checked(a, low, high)
            self._throttle()
            sent = np.asarray(self.robot.send_action(target), np.float32)
            self._last_sent, self._last_send_time = sent.copy(), time.monotonic()
            return sent

    # ------------------------------------------------------------------------------------ checks
    def _hold(self, low, high) -> np.ndarray:
        return np.clip(hold_action(self.robot), low, high)

    def _checked(self, a: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to send `(A,)` and whether it is the hold action."""
        cfg, now = self.config, time.monotonic()
        if not np.all(np.isfinite(a)):
            self._event("nonfinite", f"requested {a.tolist()}")
            return self._hold(low, high), True
        if cfg.watchdog_s is not None and (self._last_obs_time is None or now - self._last_obs_time > cfg.watchdog_s):
            age = "no observation yet" if self._last_obs_time is None else f"{now - self._last_obs_time:.3f} s old"
            self._event("stale_observation", f"last observation {age} (deadline {cfg.watchdog_s} s)")
            return self._hold(low, high), True
        if cfg.workspace_low is not None and self._last_proprio is not None:
            k = len(cfg.workspace_low)
            pos = self._last_proprio[:k]
            if np.any(pos < np.asarray(cfg.workspace_low)) or np.any(pos > np.asarray(cfg.workspace_high)):
                self._event("workspace", f"proprio[:{k}] = {pos.tolist()} outside the workspace")
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
        return target, False

    def _throttle(self) -> None:
        if self.config.max_rate_hz and self._last_send_time is not None:
            wait = 1.0 / self.config.max_rate_hz - (time.monotonic() - self._last_send_time)
            if wait > 0:
                self._event("rate", f"waited {wait * 1000:.1f} ms (max {self.config.max_rate_hz} Hz)")
                time.sleep(wait)

    def _check_estop(self) -> None:
        if self.stopped is None and self.estop is not None and self.estop.reason is not None:
            self.safe_stop(self.estop.reason)
        if self.stopped is not None:
            raise RobotError(f"{self.robot.name} was e-stopped ({self.stopped}); clear the cause and restart")

    def _event(self, reason: str, detail: str) -> None:
        event = SafetyEvent(time.time(), reason, detail, self._steps)
        self.events.append(event)
        log.log(logging.DEBUG if reason in QUIET_REASONS else logging.WARNING, "safety %s: %s", reason, detail)

    # --------------------------------------------------------------------------- holds and stops
    def hold(self, reason: str, detail: str = "") -> None:
        """Command the hold action now and log why (e.g. the network client went away)."""
        with self._lock:
            if self.robot.is_connected and self.stopped is None:
                low, high = self.bounds()
                self._last_sent = np.asarray(self.robot.send_action(self._hold(low, high)), np.float32)
                self.holding = True
                self._event(reason, detail or "hold commanded")

    def safe_stop(self, reason: str) -> None:
        """Hold, then disconnect the robot; the guard refuses everything afterwards."""
        with self._lock:
            if self.stopped is not None:
                return
            self.hold("estop", f"{reason}: holding, then disconnecting")
            self.stopped = reason
            if self.robot.is_connected:
                self.robot.disconnect()

    def tick(self) -> None:
        """One watchdog check: e-stop, then the action deadline. Call often (every few ms) or use start_watchdog."""
        with self._lock:
            if self.stopped is not None:
                return
            if self.estop is not None and self.estop.reason is not None:
                self.safe_stop(self.estop.reason)
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
