"""`wm robot serve`: a simulated robot (any built-in env) behind the safety guard, served over TCP.

Prints the address it serves at, then answers requests until Ctrl-C / SIGTERM (the robot holds, then the server
stops) or an e-stop: SIGUSR1, the `--stop-file` appearing, or `s` + Enter on stdin with `--estop-key` (the robot
holds and is disconnected; the command exits with a one-line error). Ends with a summary of requests and safety
events. The token may come from `--token` or the WM_ROBOT_TOKEN environment variable (kept out of `ps`); requests
are signed with it, it never travels. `--curve-key DIR/secret.key` (from `wm robot keygen --out DIR`) encrypts the
link with CurveZMQ; a `--host` beyond loopback needs it, or `--insecure`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import asdict, dataclass

from wm.errors import WMError


@dataclass
class ServeConfig:
    env: str
    port: int = 5555
    token: str = ""
    host: str = "127.0.0.1"
    curve_key: str | None = None  # the server's secret key file (wm robot keygen)
    insecure: bool = False  # allow a host beyond loopback without curve_key
    image_size: int = 64
    seed: int = 0
    watchdog: float = 1.0  # seconds without a new action (or a fresh observation) before the robot holds
    max_delta: float | None = None
    max_rate: float | None = None
    workspace_low: str | None = None  # comma-separated bounds on proprio[:k]
    workspace_high: str | None = None
    stop_file: str | None = None
    estop_key: bool = False

    def guard_config(self):
        from envs.robot.guard import GuardConfig

        if not 0 < self.watchdog <= 60:
            raise WMError(f"--watchdog must be in (0, 60] seconds, got {self.watchdog}")
        if self.max_delta is not None and self.max_delta <= 0:
            raise WMError(f"--max-delta must be positive, got {self.max_delta}")
        if self.max_rate is not None and self.max_rate <= 0:
            raise WMError(f"--max-rate must be positive, got {self.max_rate}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise WMError("pass both --workspace-low and --workspace-high, e.g. -0.5,-0.5 and 3.5,3.5")
        low, high = _floats(self.workspace_low, "--workspace-low"), _floats(self.workspace_high, "--workspace-high")
        if low is not None and (len(low) != len(high) or any(lo >= hi for lo, hi in zip(low, high, strict=True))):
            raise WMError("--workspace-low and --workspace-high need as many values, each low below its high")
        return GuardConfig(
            max_delta=self.max_delta,
            workspace_low=low,
            workspace_high=high,
            max_rate_hz=self.max_rate,
            watchdog_s=self.watchdog,
        )


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise WMError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def run_serve(cfg: ServeConfig) -> dict:
    """Serve until stopped; returns the summary (requests, refused, safety events by reason)."""
    from envs.robot.estop import EStop
    from envs.robot.guard import SafetyGuard
    from envs.robot.keys import is_loopback, load_secret_key
    from envs.robot.server import RobotServer
    from envs.robot.sim import SimRobot

    token = cfg.token or os.environ.get("WM_ROBOT_TOKEN", "")
    if not 0 <= cfg.port <= 65535:
        raise WMError(f"--port must be in [0, 65535] (0: any free port), got {cfg.port}")
    curve = load_secret_key(cfg.curve_key) if cfg.curve_key else None
    estop = EStop(signals=(signal.SIGUSR1,), stop_file=cfg.stop_file, key=cfg.estop_key)
    guard = SafetyGuard(SimRobot(cfg.env, cfg.image_size, cfg.seed), cfg.guard_config(), estop)
    server = RobotServer(guard, token, cfg.host, cfg.port, curve_secret_key=curve, insecure=cfg.insecure)
    address = server.bind()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    estop.install()
    exposed = "" if is_loopback(cfg.host) else " (reachable from other machines)"
    link = "unencrypted" if curve is None else f"CurveZMQ, server key {server.public_key.decode()}"
    print(
        f"serving {cfg.env} at {address}{exposed} ({link}); watchdog {cfg.watchdog} s; Ctrl-C stops, "
        f"SIGUSR1{', ' + cfg.stop_file if cfg.stop_file else ''}{', s+Enter' if cfg.estop_key else ''} e-stops",
        flush=True,
    )
    try:
        summary = server.serve(stop)
    finally:
        estop.uninstall()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {"env": cfg.env, "address": address, **summary, "config": {**asdict(cfg), "token": "***"}}
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
