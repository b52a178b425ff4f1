"""Benchmark the robot executor's timing: control-loop rate, watchdog hold latency, rate-limit spacing, e-stop
reaction during a rate wait, each idle and again beside `--load` busy processes (default 2: what a planner and a
second job do to a 2-core machine). These depend on how busy the machine is, so tests check only what is
deterministic (never early, never faster than asked) and this script measures the rest.

Prints one JSON object (times in ms, p50/p95/max). Usage: python scripts/bench_robot.py [--hz 50] [--steps 200]
[--repeats 20] [--load 2] [--sim wm/PointMaze-v0]  (--sim: also time the loop on the simulated robot: physics and
rendering every step)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from envs.controller import ZeroActions
from envs.robot.estop import EStop
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.loop import ControlLoop
from envs.robot.protocol import Feature, RobotError


class NullRobot:
    """A 2-D robot that costs nothing: observe and send are instant; records the monotonic time of every send."""

    name = "null"

    def __init__(self):
        self.is_connected, self.sent_at = False, []

    observation_features = {"rgb": Feature((8, 8, 3), "uint8"), "proprio": Feature((2,), "float32")}
    action_features = Feature((2,), "float32", (-1.0, -1.0), (1.0, 1.0))

    def connect(self):
        self.is_connected = True

    def disconnect(self):
        self.is_connected = False

    def get_observation(self):
        return {"rgb": np.zeros((8, 8, 3), np.uint8), "proprio": np.zeros(2, np.float32)}

    def send_action(self, action):
        self.sent_at.append(time.monotonic())
        return np.asarray(action, np.float32)


def ms(values) -> dict:
    v = np.asarray(values, np.float64) * 1000
    return {"p50": round(float(np.percentile(v, 50)), 3), "p95": round(float(np.percentile(v, 95)), 3),
            "max": round(float(v.max()), 3)}  # fmt: skip


def bench_loop(robot, hz: float, steps: int) -> dict:
    guard = SafetyGuard(robot, GuardConfig(watchdog_s=None))
    guard.connect()
    zero = ZeroActions(2)
    zero.reset({"rgb": np.zeros((1, 1, 1, 3), np.uint8)})  # one robot
    stats = ControlLoop(guard, zero, hz).run(steps)
    guard.disconnect()
    return {"hz_target": hz, "hz_achieved": round(stats.rate_hz, 2), "late_steps": stats.late_steps,
            "step_ms": ms(stats.t_step)}  # fmt: skip


def bench_watchdog(deadline_s: float, repeats: int) -> dict:
    """How long after the deadline the watchdog thread (10 ms ticks) holds."""
    lateness = []
    for _ in range(repeats):
        robot = NullRobot()
        guard = SafetyGuard(robot, GuardConfig(watchdog_s=deadline_s))
        guard.connect()
        guard.get_observation()
        guard.send_action(np.zeros(2, np.float32))
        guard.start_watchdog()
        while len(robot.sent_at) < 2:
            time.sleep(0.001)
        guard.disconnect()
        lateness.append(robot.sent_at[1] - robot.sent_at[0] - deadline_s)
    return {"deadline_s": deadline_s, "hold_after_deadline_ms": ms(lateness)}


def bench_rate_limit(rate_hz: float, actions: int) -> dict:
    robot = NullRobot()
    guard = SafetyGuard(robot, GuardConfig(max_rate_hz=rate_hz, watchdog_s=None))
    guard.connect()
    guard.get_observation()
    for _ in range(actions):
        guard.send_action(np.zeros(2, np.float32))
    extra = np.diff(robot.sent_at) - 1.0 / rate_hz
    return {"max_rate_hz": rate_hz, "spacing_beyond_period_ms": ms(extra), "min_spacing_ok": bool(extra.min() >= 0)}


def bench_estop(repeats: int) -> dict:
    """From tripping the e-stop while an action waits out a 1 Hz rate limit to that action's RobotError."""
    reaction = []
    for _ in range(repeats):
        estop = EStop(signals=())
        guard = SafetyGuard(NullRobot(), GuardConfig(max_rate_hz=1.0, watchdog_s=None), estop)
        guard.connect()
        guard.get_observation()
        guard.send_action(np.zeros(2, np.float32))
        done = {}

        def second(guard=guard, done=done):
            try:
                guard.send_action(np.zeros(2, np.float32))
            except RobotError:  # the e-stop's: only its time matters here
                done["t"] = time.monotonic()

        sender = threading.Thread(target=second)
        sender.start()
        time.sleep(0.05)
        tripped = time.monotonic()
        estop.trip("bench")
        sender.join()
        reaction.append(done["t"] - tripped)
    return {"estop_during_rate_wait_ms": ms(reaction)}


@contextmanager
def busy_processes(count: int):
    """`count` processes spinning a core each while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach the scheduler
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure(args) -> dict:
    """Every figure once, on the machine as it is now."""
    result = {
        "load_1min": round(os.getloadavg()[0], 2),
        "loop_null_robot": bench_loop(NullRobot(), args.hz, args.steps),
        "watchdog": bench_watchdog(0.1, args.repeats),
        "rate_limit": bench_rate_limit(args.hz, args.steps // 4),
        "estop": bench_estop(args.repeats),
    }
    if args.sim:
        from envs.robot.sim import SimRobot

        result["loop_sim_robot"] = {"env": args.sim, **bench_loop(SimRobot(args.sim), args.hz, args.steps)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sim", default=None, help="also time the loop on this built-in env as a simulated robot")
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded run (0: idle only)")
    args = parser.parse_args()
    logging.getLogger("wm.robot").setLevel(logging.ERROR)  # every hold here is on purpose
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "idle": measure(args)}
    if args.load:
        with busy_processes(args.load):
            result[f"beside_{args.load}_busy_processes"] = measure(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
