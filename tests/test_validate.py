"""`wm robot serve` + `wm validate` end to end on loopback: recordings, results, judges, one-line errors, data kept
when the robot vanishes mid-run. Waits are for events (a line, a file, the progress bar), with generous deadlines,
so a busy machine slows the tests down but does not fail them."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import timm  # noqa: F401  (torchvision, which timm imports, crashes when first imported after an EGL context exists)
from conftest import ROBOT_TOKEN

from envs.registry import make_env
from envs.robot.protocol import Feature
from wm.app.cli import main
from wm.app.validate import ValidateConfig, resolve_judge
from wm.data.store import EpisodeStore
from wm.errors import WMError

WM = [sys.executable, "-m", "wm.app.cli"]
TOKEN = ROBOT_TOKEN  # the `server` fixture's (conftest.py)
CHECKPOINT = "checkpoints/jepa-pointmaze"
FAST_MPC = ["--samples", "32", "--iterations", "2", "--elites", "8"]


@pytest.fixture(scope="module")
def goals_file(tmp_path_factory):
    """Two start/goal pairs of PointMaze as a goal file: rgb, proprio (goal observations), start and goal states."""
    env = make_env("wm/PointMaze-v0").unwrapped
    rng = np.random.default_rng(0)
    rows = {"rgb": [], "proprio": [], "start": [], "goal": []}
    for i in range(2):
        _, info = env.reset(seed=i)
        goal = env.sample_goal(rng)
        obs = env.observe_state(goal)
        for key, value in (("rgb", obs["rgb"]), ("proprio", obs["proprio"]), ("start", info["state"]), ("goal", goal)):
            rows[key].append(value)
    env.close()
    path = tmp_path_factory.mktemp("goals") / "goals.npz"
    np.savez(path, **{k: np.stack(v) for k, v in rows.items()})
    return path


def one_line_error(capsys, argv, match):
    capsys.readouterr()
    code = main(argv)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("wm: error")]
    assert code == 2 and len(err) == 1 and match in err[0], err
    return err[0]


def test_loopback_mpc_validation_records_episodes_results_and_plot(server, goals_file, tmp_path, capsys):
    _, address = server
    out = tmp_path / "run"
    argv = ["validate", "--robot", address, "--token", TOKEN, "--controller", "mpc", "--checkpoint", CHECKPOINT]
    argv += ["--episodes", "2", "--budget", "10", "--goals", str(goals_file), "--out", str(out), *FAST_MPC]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Validated 2 episode(s) of mpc" in printed and f"wm info {out}/store" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["episodes_complete"] == 2 and results["aborted"] is None
    assert results["judge"]["kind"] == "latent" and results["truth_success_rate"] is not None
    assert results["latency_ms"]["step"]["n"] == 20 and results["replan_latency_ms"]["n"] >= 4
    assert "token" not in results["config"] and TOKEN not in (out / "results.json").read_text()
    assert (out / "summary.png").stat().st_size > 0
    info = subprocess.run([*WM, "info", str(out / "store"), "--json"], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["episodes"] == 2 and json.loads(info.stdout)["frames"] == 22
    with EpisodeStore.open(out / "store") as store:
        ep = store.episode(1)
        assert ep["complete"].all() and ep["plan_step"][-1] == -1 and not ep["action"][-1].any()
        assert ep["new_plan"][:-1].sum() == 2  # one chunk of frameskip=5 actions per world-model block
        assert np.all(np.abs(ep["action"]) <= 1) and ep["plan"].shape == (11, 5, 2)
        np.testing.assert_allclose(ep["state"][0][:2], np.load(goals_file)["start"][1][:2], atol=1e-6)
        assert ep["goal_latent_distance"].shape == (11,)
        assert store.attrs["collections"][0]["kind"] == "validation"


def test_async_mpc_judged_by_the_simulator(server, goals_file, tmp_path):
    _, address = server
    out = tmp_path / "run"
    argv = ["validate", "--robot", address, "--token", TOKEN, "--controller", "mpc", "--checkpoint", CHECKPOINT]
    argv += ["--episodes", "1", "--budget", "10", "--goals", str(goals_file), "--out", str(out), *FAST_MPC]
    assert main([*argv, "--async-plan", "--judge", "sim"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["judge"]["kind"] == "sim" and results["config"]["async_plan"]
    assert [e["judged_success"] for e in results["per_episode"]] == [e["truth_success"] for e in results["per_episode"]]
    with EpisodeStore.open(out / "store") as store:
        ep = store.episode(0)
        assert ep["complete"].all() and ep["new_plan"][:-1].sum() >= 2 and ep["plan"].shape == (11, 5, 2)
        assert ep["judged_success"][-1] == ep["success"][-1]


def test_random_controller_on_a_simulated_robot_needs_no_operator(server, goals_file, tmp_path, monkeypatch):
    _, address = server
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # closed: an operator judge would stop the run
    out = tmp_path / "run"
    argv = ["validate", "--robot", address, "--token", TOKEN, "--controller", "random", "--episodes", "2"]
    assert main([*argv, "--budget", "5", "--goals", str(goals_file), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["judge"]["kind"] == "sim" and results["episodes_complete"] == 2 and results["aborted"] is None
    assert [e["judged_success"] for e in results["per_episode"]] == [e["truth_success"] for e in results["per_episode"]]


class FakeRemote:
    """What `resolve_judge` asks of a connected robot: its name and observation features."""

    def __init__(self, simulated):
        self.name = "remote:tcp://arm:5555"
        self.observation_features = {"rgb": Feature((64, 64, 3), "uint8"), "proprio": Feature((6,), "float32")}
        if simulated:
            self.observation_features["sim_success"] = Feature((), "bool")


def test_the_judge_defaults_to_the_simulator_and_sim_needs_a_simulated_robot():
    def cfg(**kw):
        return ValidateConfig(robot="tcp://arm:5555", token="t", controller="random", episodes=1, out="x", **kw)

    assert resolve_judge(cfg(), FakeRemote(simulated=True)) == "sim"
    assert resolve_judge(cfg(), FakeRemote(simulated=False)) == "operator"
    assert resolve_judge(cfg(checkpoint="c"), FakeRemote(simulated=True)) == "latent"
    assert resolve_judge(cfg(judge="operator"), FakeRemote(simulated=True)) == "operator"
    with pytest.raises(WMError, match="--judge sim needs a simulated robot .* remote:tcp://arm:5555 is not one"):
        resolve_judge(cfg(judge="sim"), FakeRemote(simulated=False))


def test_random_controller_with_operator_judge_and_a_goal_store(server, tmp_path, capsys, monkeypatch):
    _, address = server
    store = tmp_path / "maze"
    collect = [*WM, "collect", "--env", "wm/PointMaze-v0", "--episodes", "2", "--steps", "30", "--workers", "1"]
    assert subprocess.run([*collect, "--out", str(store)], capture_output=True, timeout=120).returncode == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("maybe\ny\nn\n"))
    out = tmp_path / "run"
    argv = ["validate", "--robot", address, "--token", TOKEN, "--controller", "random", "--episodes", "2"]
    argv += ["--budget", "6", "--goal-store", str(store), "--goal-offset", "5", "--async-plan", "--out", str(out)]
    argv += ["--judge", "operator"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [e["judged_success"] for e in results["per_episode"]] == [True, False]
    assert results["judge"] == {"kind": "operator", "threshold": None} and results["success_rate"] == 0.5

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # then stdin closes: the second episode is left unjudged
    argv[argv.index("--out") + 1] = str(tmp_path / "unjudged")
    capsys.readouterr()
    assert main(argv) == 2 and "the operator judge got no answer" in capsys.readouterr().err
    results = json.loads((tmp_path / "unjudged" / "results.json").read_text())
    assert results["episodes_complete"] == 1 and results["success_rate"] == 1.0  # not counted as a failure
    assert [e["complete"] for e in results["per_episode"]] == [True, False]


def test_wrong_token_missing_server_and_bad_address_are_one_line_errors(server, goals_file, tmp_path, capsys):
    _, address = server
    base = ["validate", "--controller", "random", "--episodes", "1", "--goals", str(goals_file), "--timeout", "1"]
    one_line_error(capsys, [*base, "--robot", address, "--token", "wrong", "--out", str(tmp_path / "a")], "refused")
    port = int(address.rsplit(":", 1)[1])
    missing = f"tcp://127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    one_line_error(capsys, [*base, "--robot", missing, "--token", TOKEN, "--out", str(tmp_path / "b")], "no reply")
    one_line_error(capsys, [*base, "--robot", "127.0.0.1", "--token", TOKEN, "--out", str(tmp_path / "c")], "bad robot")
    one_line_error(capsys, ["validate", "--robot", address, "--token", TOKEN, "--controller", "mpc", "--episodes", "1",
                            "--out", str(tmp_path / "d")], "--checkpoint")  # fmt: skip
    one_line_error(capsys, [*base[:-4], "--goals", "none.npz", "--robot", address, "--token", TOKEN, "--out",
                            str(tmp_path / "e")], "goal file none.npz not found")  # fmt: skip
    assert not any((tmp_path / d).exists() for d in "abcde")  # nothing is created before the robot answers


def test_a_robot_that_vanishes_mid_run_keeps_the_data_so_far(server, goals_file, tmp_path):
    proc, address = server
    out = tmp_path / "run"
    argv = [*WM, "validate", "--robot", address, "--token", TOKEN, "--controller", "random", "--episodes", "3"]
    argv += ["--budget", "30", "--hz", "20", "--goals", str(goals_file), "--timeout", "1", "--out", str(out)]
    run = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = []  # stderr as it comes: the progress bar says how many steps have run
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: os.read(run.stderr.fileno(), 4096), b"")))
    reader.start()
    deadline = time.monotonic() + 120
    while not any(33 <= int(n) < 55 for n in re.findall(rb"(\d+)/90", b"".join(err))):  # into episode 1 (steps 31-60)
        assert run.poll() is None and time.monotonic() < deadline, b"".join(err).decode()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    run.wait(timeout=60)
    reader.join(timeout=10)
    run.stdout.close()
    run.stderr.close()
    errors = [line for line in b"".join(err).decode().splitlines() if line.startswith("wm: error")]
    assert run.returncode == 2 and len(errors) == 1, errors
    assert "no reply" in errors[0] and "1 complete episode(s) and the partial one are saved" in errors[0]
    results = json.loads((out / "results.json").read_text())
    assert results["episodes_complete"] == 1 and "no reply" in results["aborted"]
    with EpisodeStore.open(out / "store") as store:
        assert store.num_episodes == 2
        assert store.episode(0)["complete"].all() and not store.episode(1)["complete"].any()
        assert 0 < store.episode_lengths()[1] < 31


def test_a_server_restart_mid_run_ends_the_episode_instead_of_splicing_two_servers(server, goals_file, tmp_path):
    """Finding 4. Before: the client's retry reached the restarted server (new simulator state, empty replay table)
    and the run went on; the spliced episode, with a jump of 2 m, was recorded complete and the command exited 0."""
    proc, address = server
    out = tmp_path / "run"
    argv = [*WM, "validate", "--robot", address, "--token", TOKEN, "--controller", "random", "--episodes", "2"]
    argv += ["--budget", "40", "--hz", "20", "--goals", str(goals_file), "--timeout", "5", "--out", str(out)]
    run = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = []  # 3 tries of 5 s: room for the new server to start, so the retry reaches it
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: os.read(run.stderr.fileno(), 4096), b"")))
    reader.start()
    deadline = time.monotonic() + 120
    while not any(5 <= int(n) < 30 for n in re.findall(rb"(\d+)/80", b"".join(err))):  # into the first episode
        assert run.poll() is None and time.monotonic() < deadline, b"".join(err).decode()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)
    port = address.rsplit(":", 1)[1]
    again = subprocess.Popen([*WM, "robot", "serve", "--env", "wm/PointMaze-v0", "--port", port, "--token", TOKEN],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert "serving" in again.stdout.readline()
        run.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=20)
        again.stdout.close()
        again.stderr.close()
        run.stdout.close()
        run.stderr.close()
    errors = [line for line in b"".join(err).decode().splitlines() if line.startswith("wm: error")]
    assert run.returncode == 2 and len(errors) == 1, errors
    assert "restarted" in errors[0] and "connect again" in errors[0]
    with EpisodeStore.open(out / "store") as store:
        assert store.num_episodes == 1 and not store.episode(0)["complete"].any()
