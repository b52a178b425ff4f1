"""`wm robot serve` for real robots (`--robot package.module:factory`) and the start-up checks that keep an unsafe
configuration from serving at all: limits, a dead e-stop, a robot that does not connect. The factories below stand
for a user's module (the stand-ins of lerobot's classes come from test_lerobot_adapter)."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_lerobot_adapter import SO100Follower, SO100FollowerConfig

from envs.robot.client import RemoteRobot
from envs.robot.lerobot import LeRobotAdapter
from wm.app.cli import main

HERE = Path(__file__).parent
WM = [sys.executable, "-m", "wm.app.cli"]
TOKEN = "serve-secret"
BOUNDS = ["--low", "-90", "--high", "90"]


def make_arm(max_relative_target=None) -> LeRobotAdapter:
    """A user's factory: an SO100 follower (stand-in) behind the adapter."""
    config = SO100FollowerConfig(port="/dev/ttyACM0", id="arm", max_relative_target=max_relative_target)
    return LeRobotAdapter(SO100Follower(config), image_size=16)


def make_arm_with_limit() -> LeRobotAdapter:
    return make_arm(max_relative_target=5.0)


def make_broken_arm() -> LeRobotAdapter:
    return LeRobotAdapter(SO100Follower(SO100FollowerConfig(port="/dev/ttyACM0", id="arm"), calibrated=False))


def make_not_a_robot():
    return object()


def one_line_error(capsys, argv: list[str], match: str) -> str:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if line.startswith("wm: error")]
    assert code == 2 and len(err) == 1 and match in err[0], captured.err
    assert "serving" not in captured.out  # nothing was served
    return err[0]


SERVE = ["robot", "serve", "--port", "0", "--token", TOKEN]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--env", "wm/PointMaze-v0", "--max-delta", "nan"], "max_delta must be finite"),
        (["--env", "wm/PointMaze-v0", "--max-delta", "-0.5"], "max_delta must be positive"),
        (["--env", "wm/PointMaze-v0", "--max-rate", "0.25", "--watchdog", "1"], "at least 1 Hz"),
        (["--env", "wm/PointMaze-v0", "--stop-file", "/nonexistent/folder/STOP"], "does not exist"),
        (["--robot", "test_robot_serve:make_arm", *BOUNDS, "--max-rate", "30"], "without --max-delta"),
        (["--robot", "test_robot_serve:make_arm", *BOUNDS, "--max-delta", "2"], "without --max-rate"),
        (["--robot", "test_robot_serve:make_arm", "--max-delta", "2", "--max-rate", "30"], "pass low/high"),
        (
            ["--robot", "test_robot_serve:make_broken_arm", *BOUNDS, "--max-delta", "2", "--max-rate", "30"],
            "lerobot-calibrate",
        ),  # fmt: skip
        (["--robot", "test_robot_serve:make_not_a_robot"], "not a robot"),
        (["--robot", "no_such_module:make"], "cannot load the robot factory"),
    ],
)
def test_unsafe_or_broken_serving_is_refused_in_one_line_before_anything_is_served(capsys, extra, match):
    """Findings 2, 3, 8, 9, 10. Before: nan and negative limits were accepted, a rate slower than the watchdog
    starved it, a LeRobot robot could not be served (and "serving" was printed before that failed), a real robot
    started without any rate or change limit, and a stop file in a missing folder was accepted."""
    one_line_error(capsys, [*SERVE, *extra], match)


def test_an_estop_key_on_a_stdin_that_can_never_type_is_refused():
    """Finding 10. Before: `--estop-key` with stdin at its end (a server started with `&`) was silently dead."""
    argv = [*WM, *SERVE, "--env", "wm/PointMaze-v0", "--estop-key"]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "serving" not in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("wm: error: --estop-key reads s + Enter from stdin")


def test_a_lerobot_robot_is_served_behind_the_limits_its_config_gives():
    """Finding 8 and 9: `--robot` serves any robot of the protocol; the change limit comes from the robot's own
    `max_relative_target` when no flag gives one, and "serving" is printed only once it is connected."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    argv = [*WM, *SERVE, "--robot", "test_robot_serve:make_arm_with_limit", *BOUNDS, "--max-rate", "100"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"tcp://[\d.]+:\d+", line)
        assert match and "serving test_robot_serve:make_arm_with_limit" in line, line + proc.stderr.read()
        robot = RemoteRobot(match.group(0), TOKEN, timeout_s=10.0)
        robot.connect()
        start = robot.get_observation()["proprio"]
        sent = robot.send_action(start + 40.0)  # far past what one step may change
        np.testing.assert_allclose(sent, start + 5.0, atol=1e-4)  # max_relative_target: 5 per step
        assert robot.events[-1]["reason"] == "max_delta"
        robot.disconnect()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
