import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tests are many tiny ops (and subprocesses): one thread each is fastest

import numpy as np
import pytest
import torch

from wm.data.store import EpisodeStore

torch.set_num_threads(1)

KEYS = {
    "rgb": {"shape": [8, 8, 3], "dtype": "uint8"},
    "action": {"shape": [2], "dtype": "float32"},
    "proprio": {"shape": [3], "dtype": "float32"},
}


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
