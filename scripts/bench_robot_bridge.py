"""Benchmark the robot bridge on loopback; prints one JSON object.

- `observe_ms`, `act_ms`: p50/p95 round trips of `get_observation` (64 px PointMaze frame) and `send_action` (a sim
  step included) from a `RemoteRobot` to a `RobotServer` on a thread, unencrypted and with CurveZMQ.
- `refusals_per_s`: unauthenticated requests the server refuses per second (one DEALER, one request in flight).

Usage: python scripts/bench_robot_bridge.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time

import numpy as np
import zmq

from envs.robot import wire
from envs.robot.client import RemoteRobot
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.keys import keygen, load_public_key, load_secret_key
from envs.robot.server import RobotServer
from envs.robot.sim import SimRobot

TOKEN = "bench-secret"


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p95": round(float(np.percentile(ms, 95)), 3)}


def bench(steps: int, curve: tuple[bytes, bytes] | None) -> dict:
    guard = SafetyGuard(SimRobot("wm/PointMaze-v0"), GuardConfig(watchdog_s=None))
    server = RobotServer(guard, TOKEN, curve_secret_key=None if curve is None else curve[1])
    address = server.bind()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    robot = RemoteRobot(address, TOKEN, timeout_s=10.0, server_key=None if curve is None else curve[0])
    robot.connect()
    observe, act = [], []
    for _ in range(steps):
        t = time.perf_counter()
        robot.get_observation()
        observe.append(time.perf_counter() - t)
        t = time.perf_counter()
        robot.send_action(np.zeros(2, np.float32))
        act.append(time.perf_counter() - t)
    result = {"observe_ms": percentiles(observe), "act_ms": percentiles(act)}
    if curve is None:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(address)
        garbage = [b"", b"\x00" * wire.AUTH_BYTES, b'{"op": "hello", "call": 1}']
        t = time.perf_counter()
        for _ in range(steps * 10):
            sock.send_multipart(garbage)
            sock.recv_multipart()
        result["refusals_per_s"] = round(steps * 10 / (time.perf_counter() - t))
        sock.close(linger=0)
    robot.disconnect()
    stop.set()
    thread.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        public, secret = keygen(keys)
        curve = (load_public_key(public), load_secret_key(secret))
        print(json.dumps({"plain": bench(args.steps, None), "curve": bench(args.steps, curve)}, indent=2))


if __name__ == "__main__":
    main()
