"""`wm robot serve`: a robot behind the safety guard, served over TCP: a real one (`--robot package.module:factory`,
e.g. a factory returning `envs.robot.lerobot.LeRobotAdapter` around a LeRobot robot) or an env as a simulated one
(`--env`, any env with state hooks).

The robot is connected first; only then does the command print the address it serves at and answer requests, until
Ctrl-C / SIGTERM (the robot holds, then the server stops) or an e-stop: SIGUSR1, the `--stop-file` appearing, or
`s` + Enter on stdin with `--estop-key` (the robot holds and is disconnected; the command exits with a one-line
error). Ends with a summary of requests and safety events. A real robot does not start without a limit on each
step's change (`--max-delta`, else its config's `max_relative_target`) and a rate limit (`--max-rate`, else its
`control_hz`); simulation needs neither. `--low`/`--high` bound the actions where the robot declares no bounds (a
LeRobot robot declares none). The token may come from `--token` or the WM_ROBOT_TOKEN environment variable (kept
out of `ps`); requests are signed with it, it never travels. `--curve-key DIR/secret.key` (from `wm robot keygen
--out DIR`) encrypts the link with CurveZMQ; a `--host` beyond loopback needs it, or `--insecure`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import asdict, dataclass

import numpy as np

from wm.errors import WMError


@dataclass
class ServeConfig:
    env: str | None = None  # simulate this env as the robot
    robot: str | None = None  # or serve the robot `package.module:factory` returns
    port: int = 5555
    token: str = ""
    host: str = "127.0.0.1"
    curve_key: str | None = None  # the server's secret key file (wm robot keygen)
    insecure: bool = False  # allow a host beyond loopback without curve_key
    image_size: int = 64
    seed: int = 0
    watchdog: float = 1.0  # seconds without a new action (or a fresh observation) before the robot holds
    low: str | None = None  # action bounds: one number or comma-separated per dim
    high: str | None = None
    max_delta: str | None = None  # one number or comma-separated per dim
    max_rate: float | None = None
    workspace_low: str | None = None  # comma-separated bounds on proprio[:k]
    workspace_high: str | None = None
    stop_file: str | None = None
    estop_key: bool = False

    def guard_config(self, robot=None):
        """The guard's limits; for a real robot (`robot` given), a max delta and a rate limit are required, from the
        flags or else from the robot (`max_relative_target`, `control_hz`)."""
        from envs.robot.guard import GuardConfig

        if (self.workspace_low is None) != (self.workspace_high is None):
            raise WMError("pass both --workspace-low and --workspace-high, e.g. -0.5,-0.5 and 3.5,3.5")
        max_delta, max_rate = _floats(self.max_delta, "--max-delta"), self.max_rate
        if robot is not None:
            if max_delta is None and (given := getattr(robot, "max_relative_target", None)) is not None:
                max_delta = [float(v) for v in np.asarray(given, np.float64).ravel()]
            max_rate = max_rate if max_rate is not None else getattr(robot, "control_hz", None)
            missing = [flag for flag, v in (("--max-delta", max_delta), ("--max-rate", max_rate)) if v is None]
            if missing:
                raise WMError(f"a real robot does not start without {' and '.join(missing)} (its config has no "
                              "max_relative_target / control_hz); pass them")  # fmt: skip
        return GuardConfig(
            low=_floats(self.low, "--low"),
            high=_floats(self.high, "--high"),
            max_delta=max_delta,
            workspace_low=_floats(self.workspace_low, "--workspace-low"),
            workspace_high=_floats(self.workspace_high, "--workspace-high"),
            max_rate_hz=max_rate,
            watchdog_s=self.watchdog,
        )


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise WMError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def load_robot(spec: str, image_size: int):
    """The robot `package.module:factory` returns (called with `image_size=` if it names it); one-line errors."""
    from envs.entry_points import call_factory, load_factory
    from envs.robot.protocol import Robot

    robot = call_factory(load_factory(spec, "--robot", "robot"), spec, image_size, "robot")
    if not isinstance(robot, Robot):
        raise WMError(f"{spec} returned {type(robot).__name__}, which is not a robot (connect, disconnect, "
                      "observation_features, action_features, get_observation, send_action); wrap a LeRobot robot "
                      "in envs.robot.lerobot.LeRobotAdapter")  # fmt: skip
    return robot


def make_guard(cfg: ServeConfig, estop):
    """The guarded robot `cfg` names: the real one behind its required limits, or the simulated env."""
    from envs.robot.guard import SafetyGuard
    from envs.robot.sim import SimRobot

    if cfg.robot:
        robot = load_robot(cfg.robot, cfg.image_size)
        return SafetyGuard(robot, cfg.guard_config(robot), estop), cfg.robot
    return SafetyGuard(SimRobot(cfg.env, cfg.image_size, cfg.seed), cfg.guard_config(), estop), cfg.env


def run_serve(cfg: ServeConfig) -> dict:
    """Serve until stopped; returns the summary (requests, refused, safety events by reason)."""
    from envs.robot.estop import EStop
    from envs.robot.keys import is_loopback, load_secret_key
    from envs.robot.server import RobotServer

    token = cfg.token or os.environ.get("WM_ROBOT_TOKEN", "")
    if not 0 <= cfg.port <= 65535:
        raise WMError(f"--port must be in [0, 65535] (0: any free port), got {cfg.port}")
    curve = load_secret_key(cfg.curve_key) if cfg.curve_key else None
    estop = EStop(signals=(signal.SIGUSR1,), stop_file=cfg.stop_file, key=cfg.estop_key)
    guard, name = make_guard(cfg, estop)
    server = RobotServer(guard, token, cfg.host, cfg.port, curve_secret_key=curve, insecure=cfg.insecure)
    address = server.start()  # the robot is connected before anyone is told it is served
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    estop.install()
    exposed = "" if is_loopback(cfg.host) else " (reachable from other machines)"
    link = "unencrypted" if curve is None else f"CurveZMQ, server key {server.public_key.decode()}"
    print(
        f"serving {name} at {address}{exposed} ({link}); watchdog {cfg.watchdog} s; Ctrl-C stops, "
        f"SIGUSR1{', ' + cfg.stop_file if cfg.stop_file else ''}{', s+Enter' if cfg.estop_key else ''} e-stops",
        flush=True,
    )
    try:
        summary = server.serve(stop)
    finally:
        estop.uninstall()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {"robot": name, "address": address, **summary, "config": {**asdict(cfg), "token": "***"}}
    print(json.dumps(summary, indent=2), flush=True)
    if guard.stopped is not None:
        raise WMError(
            f"e-stopped ({guard.stopped}): the robot held and was disconnected; clear the cause and serve again"
        )
    return summary


def run_keygen(out: str) -> None:
    """`wm robot keygen --out DIR`: write a new Curve key pair and say where each half goes."""
    from envs.robot.keys import keygen

    public, secret = keygen(out)
    print(f"wrote {secret} (mode 0600: keep it on the robot machine, `wm robot serve --curve-key {secret}`)")
    print(f"wrote {public} (give it to clients: `wm validate --server-key {public}`)")
