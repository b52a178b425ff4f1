"""Round trips through the real `lerobot` package (the `lerobot` extra: Python 3.12, `.ci/run` runs these in a
second venv; skipped where lerobot is not installed): our export loads in `LeRobotDataset` with exact actions and
states and its quantile stats; a dataset that lerobot itself records imports into a store; a v2.1 dataset of our
fixture goes through lerobot's own v2.1 -> v3.0 converter and imports the same before and after. Offline: the hub
is never asked."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: local roots only

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from lerobot_v21 import write_lerobot_v21  # noqa: E402

from envs.collector import collect  # noqa: E402
from wm.app.cli import main  # noqa: E402
from wm.data.exporters.lerobot import export_lerobot  # noqa: E402
from wm.data.layout import store_layout  # noqa: E402
from wm.data.store import EpisodeStore  # noqa: E402

pytest.importorskip("lerobot", reason="the real-package round trips need the `lerobot` extra (Python 3.12)")
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

ENV, SIZE, STEPS = "wm/PointMaze-v0", 64, 12
VIDEO_TOLERANCE = 4.0  # mean |error| in uint8 levels a lossy video codec may add


@pytest.fixture(scope="module")
def episodes():
    """3 PointMaze episodes of 13 frames at 64 px, as `wm collect` yields them (the last action 0)."""
    return list(collect(ENV, 3, STEPS, policy="expert", seed=0, workers=1, image_size=SIZE))


def stored(path) -> list[dict]:
    with EpisodeStore.open(path) as store:
        return [store.episode(i) for i in range(store.num_episodes)]


def assert_same(got: list[dict], want: list[dict]) -> None:
    """Frames within `VIDEO_TOLERANCE`, proprio and actions exact (an import zeroes the last action)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["rgb"].shape == w["rgb"].shape
        assert np.abs(g["rgb"].astype(int) - w["rgb"]).mean() <= VIDEO_TOLERANCE
        np.testing.assert_array_equal(g["proprio"], w["proprio"].astype(np.float32))
        np.testing.assert_array_equal(g["action"][:-1], w["action"][:-1].astype(np.float32))


def test_our_export_loads_in_lerobot_dataset(episodes, tmp_path):
    keys, spec = store_layout(ENV, SIZE, STEPS)
    with EpisodeStore.create(tmp_path / "store", keys, spec) as store:
        for ep in episodes:
            store.append_episode(ep)
        export_lerobot(store, tmp_path / "export")
    dataset = LeRobotDataset("local/wm-export", root=tmp_path / "export")
    assert (dataset.num_episodes, dataset.num_frames, dataset.fps) == (3, 39, 10)
    item = dataset[14]  # episode 1, frame 1
    assert int(item["episode_index"]) == 1 and int(item["frame_index"]) == 1
    np.testing.assert_array_equal(item["action"].numpy(), episodes[1]["action"][1])
    np.testing.assert_array_equal(item["observation.state"].numpy(), episodes[1]["proprio"][1])
    image = item["observation.image"].numpy()  # (3, H, W) in [0, 1]
    assert image.shape == (3, SIZE, SIZE)
    assert np.abs(image.transpose(1, 2, 0) * 255 - episodes[1]["rgb"][1]).mean() <= VIDEO_TOLERANCE
    stats = dataset.meta.stats["action"]
    assert {"q01", "q10", "q50", "q90", "q99"} <= set(stats)  # QUANTILES normalisation can use it
    assert np.all(np.asarray(stats["q01"]) <= np.asarray(stats["q99"]))


def test_a_dataset_recorded_by_lerobot_imports(episodes, tmp_path):
    features = {
        "observation.image": {"dtype": "video", "shape": (SIZE, SIZE, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": None},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    root = tmp_path / "recorded"
    dataset = LeRobotDataset.create("local/recorded", fps=10, features=features, root=root, use_videos=True)
    for ep in episodes:
        for t in range(len(ep["rgb"])):
            dataset.add_frame({"observation.image": ep["rgb"][t], "observation.state": ep["proprio"][t],
                               "action": ep["action"][t], "task": "reach the goal"})  # fmt: skip
        dataset.save_episode()
    dataset.finalize()
    assert main(["import", "lerobot", str(root), "--out", str(tmp_path / "store"), "--image-size", str(SIZE)]) == 0
    assert_same(stored(tmp_path / "store"), episodes)


def test_lerobots_converter_takes_our_v21_fixture(episodes, tmp_path):
    from lerobot.scripts.convert_dataset_v21_to_v30 import convert_dataset

    root = tmp_path / "v21"
    write_lerobot_v21(root, episodes, {"observation.image": [e["rgb"] for e in episodes]}, "video")
    argv = ["import", "lerobot", str(root), "--image-size", str(SIZE), "--out"]
    assert main([*argv, str(tmp_path / "before")]) == 0
    convert_dataset("local/v21", root=root, push_to_hub=False)  # v3.0 in root, the v2.1 moved beside it
    assert main([*argv, str(tmp_path / "after")]) == 0
    with EpisodeStore.open(tmp_path / "after") as store:
        assert store.spec["source"]["version"] == "v3.0"
    before, after = stored(tmp_path / "before"), stored(tmp_path / "after")
    assert_same(after, before)
    assert_same(before, episodes)
