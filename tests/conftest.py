import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tests are many tiny ops (and subprocesses): one thread each is fastest

import numpy as np
import pytest
import torch

from wm.data.store import EpisodeStore

torch.set_num_threads(1)

SHIPPED = "checkpoints/jepa-pointmaze"
ROBOT_TOKEN = "loopback-secret"  # the `server` fixture's shared secret
VELOCITY = (2, 3)  # PointMaze's proprio velocity dims

KEYS = {
    "rgb": {"shape": [8, 8, 3], "dtype": "uint8"},
    "action": {"shape": [2], "dtype": "float32"},
    "proprio": {"shape": [3], "dtype": "float32"},
}


def kill_once_committed(proc, store_path, episodes: int = 3, timeout_s: float = 120) -> None:
    """SIGKILL the writer `proc` once the store at `store_path` holds `episodes` committed episodes, as a reader
    counts them (a grown index slot is not yet an episode; a store being created may not be readable yet)."""
    import signal
    import time

    from wm.errors import WMError

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the writer ended before it was killed"
        try:
            with EpisodeStore.open(store_path) as store:
                if store.num_episodes >= episodes:
                    break
        except WMError:
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def make_episode(index: int, length: int) -> dict:
    """Synthetic episode whose every value encodes (episode index, row), so corruption is detectable."""
    rows = np.arange(length)
    return {
        "rgb": ((index * 7 + rows[:, None, None, None]) % 251 * np.ones((1, 8, 8, 3))).astype(np.uint8),
        "action": np.stack([np.full(length, index, np.float32), rows.astype(np.float32)], axis=1),
        "proprio": np.stack([rows * 1.0, rows * 2.0, np.full(length, index * 1.0)], axis=1).astype(np.float32),
    }


@pytest.fixture
def small_store(tmp_path):
    """A store with 5 synthetic episodes of lengths 20..24, closed."""
    path = tmp_path / "store"
    with EpisodeStore.create(path, KEYS, {"env": {"id": "synthetic"}}, chunk_rows={"rgb": 16}) as store:
        for i in range(5):
            store.append_episode(make_episode(i, 20 + i))
    return path


@pytest.fixture(scope="session")
def maze(tmp_path_factory):
    """10 PointMaze episodes of the shipped model's spec (64 px, 100 steps): 5 expert, then 5 random."""
    from envs.collector import collect
    from wm.data.layout import store_layout

    path = tmp_path_factory.mktemp("data") / "maze"
    keys, spec = store_layout("wm/PointMaze-v0", 64, 100)
    with EpisodeStore.create(path, keys, spec) as store:
        for policy, seed in (("expert", 0), ("random", 1)):
            for ep in collect("wm/PointMaze-v0", 5, 100, policy=policy, seed=seed, workers=1, first_index=seed * 5):
                store.append_episode(ep)
            store.record_collection({"policy": policy, "seed": seed, "first_episode": seed * 5, "episodes_written": 5})
    return path


@pytest.fixture(scope="session")
def jepa(maze, tmp_path_factory):
    """`(model, config, path)`: the shipped PointMaze JEPA with a success head trained on top of the frozen model."""
    from wm.app.train import TrainRunConfig, run_train
    from wm.models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("runs") / "head"
    settings = ["success_head=true", "only=success", "val_every=75", "lr=2e-3"]
    run_train(TrainRunConfig(str(maze), "jepa", str(out), steps=150, init=SHIPPED, overrides=settings))
    model, config = load_checkpoint(out / "model")
    return model, config, out / "model"


@pytest.fixture(scope="session")
def cloned(maze, jepa, tmp_path_factory):
    """A small Gaussian policy cloned by `wm bc` on the test store's expert episodes, reading `jepa`'s latents."""
    from wm.app.cli import main

    out = tmp_path_factory.mktemp("bc") / "gaussian"
    argv = ["bc", "--data", str(maze), "--world-model", str(jepa[2]), "--policy", "gaussian", "--out", str(out)]
    assert main([*argv, "--steps", "40", "batch_size=32", "val_every=20", "width=32"]) == 0
    return out / "policy"


@pytest.fixture
def server():
    """`wm robot serve` simulating PointMaze on a free port, token `loopback-secret`: yields `(process, address)`;
    stopped with SIGINT (checked: it exits cleanly)."""
    import re
    import signal
    import subprocess
    import sys

    serve = ["robot", "serve", "--env", "wm/PointMaze-v0", "--port", "0", "--token", ROBOT_TOKEN, "--watchdog", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "wm.app.cli", *serve], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()
    match = re.search(r"tcp://[\d.]+:\d+", line)
    assert match, line + proc.stderr.read()
    yield proc, match.group(0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    proc.stdout.close()
    proc.stderr.close()
