"""`wm import` / `wm export`: LeRobot v3.0 (our export, round-tripped) and v2.1 (built to the spec with pyarrow and
PyAV, video and image features), Minari (written by minari itself), diffusion_policy zarr v2 replay buffers, a JEPA
trained on imported data, and one-line errors for layouts the importers cannot use."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from lerobot_v21 import write_lerobot_v21

from envs.collector import collect
from wm.app.cli import main
from wm.app.train import TrainRunConfig, run_train
from wm.data.exporters.lerobot import export_lerobot
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.evaluation.open_loop import evaluate
from wm.models.checkpoint import load_checkpoint

VIDEO_TOLERANCE = 4.0  # mean |error| in uint8 levels that H.264 (crf 12, yuv420p) may add to a 32-px frame
ENV = "wm/PointMaze-v0"


@pytest.fixture(scope="module")
def episodes():
    """5 PointMaze episodes of 13 frames at 32 px, as `wm collect` yields them."""
    return list(collect(ENV, 5, 12, policy="expert", seed=0, workers=1, image_size=32))


@pytest.fixture(scope="module")
def maze(episodes, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "maze"
    keys, spec = store_layout(ENV, 32, 12)
    with EpisodeStore.create(path, keys, spec) as store:
        for ep in episodes:
            store.append_episode(ep)
    return path


def imported(path) -> list[dict]:
    with EpisodeStore.open(path) as store:
        return [store.episode(i) for i in range(store.num_episodes)]


def assert_same_episodes(got: list[dict], want: list[dict], rgb_tolerance: float = 0.0) -> None:
    """Frames within `rgb_tolerance` (mean |error|), proprio exact, actions exact with a 0 row at the end."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["rgb"].shape == w["rgb"].shape and g["rgb"].dtype == np.uint8
        assert np.abs(g["rgb"].astype(int) - w["rgb"]).mean() <= rgb_tolerance
        np.testing.assert_array_equal(g["proprio"], w["proprio"].astype(np.float32))
        np.testing.assert_array_equal(g["action"][:-1], w["action"][:-1].astype(np.float32))
        assert not g["action"][-1].any()


def test_lerobot_v3_export_has_the_layout_and_imports_back(maze, episodes, tmp_path):
    out = tmp_path / "lerobot"
    with EpisodeStore.open(maze) as store:
        info = export_lerobot(store, out, episodes_per_file=2)  # 3 data files and 3 videos
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == 65 and info["fps"] == 10
    assert info["features"]["observation.image"]["dtype"] == "video"
    for i in range(3):
        assert (out / f"data/chunk-000/file-{i:03d}.parquet").is_file()
        assert (out / f"videos/observation.image/chunk-000/file-{i:03d}.mp4").is_file()
    meta = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["length"] for m in meta] == [13] * 5 and meta[3]["data/file_index"] == 1
    assert meta[3]["videos/observation.image/from_timestamp"] == pytest.approx(1.3)
    assert meta[3]["dataset_from_index"] == 39 and meta[3]["tasks"] == [f"wm-engine episodes of {ENV}"]
    stats = json.loads((out / "meta/stats.json").read_text())
    actions = np.concatenate([e["action"] for e in episodes])
    assert stats["action"]["max"] == pytest.approx(actions.max(0).tolist())
    assert np.asarray(stats["observation.image"]["mean"]).shape == (3, 1, 1)
    for feature in ("action", "observation.state", "observation.image"):  # QUANTILES normalisation needs them
        q = np.stack([np.asarray(stats[feature][k]) for k in ("min", "q01", "q10", "q50", "q90", "q99", "max")])
        assert q.shape[1:] == np.asarray(stats[feature]["mean"]).shape and (np.diff(q, axis=0) >= -1e-9).all()
    per_episode = np.quantile(np.stack([e["action"] for e in episodes]), 0.5, axis=1)  # (5, 2) episode medians
    assert stats["action"]["q50"] == pytest.approx(per_episode.mean(0).tolist())  # equal lengths: LeRobot's mean
    assert pq.read_table(out / "meta/tasks.parquet").column("task_index").to_pylist() == [0]
    rows = pq.read_table(out / "data/chunk-000/file-001.parquet")
    assert rows.column("episode_index").to_pylist() == [2] * 13 + [3] * 13

    assert main(["import", "lerobot", str(out), "--out", str(tmp_path / "back"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "back"), episodes, VIDEO_TOLERANCE)
    with EpisodeStore.open(tmp_path / "back") as back:
        assert back.spec["source"] == {
            "format": "lerobot",
            "version": "v3.0",
            "keys": {"rgb": "observation.image", "proprio": "observation.state", "action": "action"},
            "fps": 10.0,
        }
        assert back.spec["env"]["control_dt"] == pytest.approx(0.1) and back.spec["env"]["episode_steps"] == 12
        assert back.spec["action"]["bounds_from"] == "data"
        record = back.attrs["collections"][0]
        assert record["src"] == str(out.resolve()) and record["episodes_written"] == 5

    assert main(["export", "lerobot", str(maze), "--out", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli/meta/info.json").read_text())["total_episodes"] == 5


def _doubled(frames: np.ndarray) -> np.ndarray:
    """`(L, 2H, 2W, 3)`: each pixel repeated 2x2, so area-downsampling by 2 gives `frames` back exactly."""
    return frames.repeat(2, axis=1).repeat(2, axis=2)


def test_lerobot_v21_video_and_image_features(episodes, tmp_path, capsys):
    top = [_doubled(e["rgb"]) for e in episodes]
    wrist = [_doubled(e["rgb"][:, ::-1]) for e in episodes]
    videos = tmp_path / "v21-video"
    write_lerobot_v21(videos, episodes, {"observation.images.top": top, "observation.images.wrist": wrist}, "video")
    capsys.readouterr()
    assert main(["import", "lerobot", str(videos), "--out", str(tmp_path / "a")]) == 2
    assert "--camera" in capsys.readouterr().err and not (tmp_path / "a").exists()
    argv = ["import", "lerobot", str(videos), "--out", str(tmp_path / "a"), "--camera", "observation.images.wrist"]
    assert main([*argv, "--image-size", "32"]) == 0
    flipped = [{**e, "rgb": e["rgb"][:, ::-1]} for e in episodes]
    assert_same_episodes(imported(tmp_path / "a"), flipped, VIDEO_TOLERANCE)
    with EpisodeStore.open(tmp_path / "a") as store:
        assert store.spec["action"]["names"] == ["x", "y"] and store.spec["env"]["id"] == "lerobot:koch"
        assert store.spec["source"]["version"] == "v2.1"

    images = tmp_path / "v21-image"
    write_lerobot_v21(images, episodes, {"observation.image": top}, "image")
    assert main(["import", "lerobot", str(images), "--out", str(tmp_path / "b"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "b"), episodes)  # PNG is lossless and the downsampling exact

    lines = (images / "meta/episodes.jsonl").read_text().replace('"length": 13', '"length": 14', 1)
    (images / "meta/episodes.jsonl").write_text(lines)
    capsys.readouterr()
    assert main(["import", "lerobot", str(images), "--out", str(tmp_path / "c")]) == 2
    assert "has 13 rows of episode 0, expected 14" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "c").exists()  # the store it had begun is removed: nothing was imported


def test_lerobot_bookkeeping_columns_are_never_a_state(episodes, tmp_path, capsys):
    """Issue 28 item 14: `timestamp` (float32, shape (1,)) was a state candidate: a state named otherwise gave
    `several state feature candidates ['observation.joints', 'timestamp']`, a dataset without one an internal
    KeyError."""
    top = [_doubled(e["rgb"]) for e in episodes]
    named = tmp_path / "joints"
    write_lerobot_v21(named, episodes, {"observation.image": top}, "image", state="observation.joints")
    assert main(["import", "lerobot", str(named), "--out", str(tmp_path / "a"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "a"), episodes)
    stateless = tmp_path / "stateless"
    write_lerobot_v21(stateless, episodes, {"observation.image": top}, "image", state=None)
    capsys.readouterr()
    assert main(["import", "lerobot", str(stateless), "--out", str(tmp_path / "b")]) == 2
    assert "no state feature found" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "b").exists()


def write_minari(dataset_id: str, episodes, observations) -> None:
    """A Minari dataset written by minari (HDF5, JPEG off) from collected episodes; `observations(ep)` is what
    each episode observed: L+1 of them beside L actions."""
    import minari
    from minari.data_collector import EpisodeBuffer

    from envs.registry import make_env

    env = make_env(ENV, 32, 12)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=observations(ep),
            actions=ep["action"][:-1],
            rewards=list(ep["reward"][1:]),
            terminations=[False] * 12,
            truncations=[False] * 11 + [True],
        )
        for i, ep in enumerate(episodes)
    ]
    space = env.observation_space
    spaces = {"observation_space": space if isinstance(observations(episodes[0]), dict) else space["proprio"]}
    minari.create_dataset_from_buffers(
        dataset_id, buffers, env=env.spec, action_space=env.action_space, jpeg_encoding=False, **spaces
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_dataset_by_id_and_by_path(episodes, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_minari("wm/maze-expert-v0", episodes, lambda ep: {"rgb": ep["rgb"], "proprio": ep["proprio"]})
    assert main(["import", "minari", "wm/maze-expert-v0", "--out", str(tmp_path / "by-id"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "by-id"), episodes)
    with EpisodeStore.open(tmp_path / "by-id") as store:
        assert store.spec["env"]["id"] == ENV and store.spec["action"]["bounds_from"] == "action space"
        assert store.spec["action"]["low"] == [-1.0, -1.0] and store.spec["source"]["keys"]["rgb"] == "rgb"
    path = tmp_path / "minari/wm/maze-expert-v0"
    assert main(["import", "minari", str(path), "--out", str(tmp_path / "by-path"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "by-path"), episodes)

    write_minari("wm/maze-vector-v0", episodes, lambda ep: ep["proprio"])
    capsys.readouterr()
    assert main(["import", "minari", "wm/maze-vector-v0", "--out", str(tmp_path / "vec")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image observations" in err[0]


def write_replay_buffer(path, episodes, zarr_format: int = 2) -> None:
    """diffusion_policy's ReplayBuffer layout: data/img float in [0, 255] (as its pusht data), state, agent_pos,
    action (last row non-zero), keypoint, and meta/episode_ends."""
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    data = root.create_group("data")
    action = np.concatenate(
        [e["action"] + (np.arange(len(e["action"])) == len(e["action"]) - 1)[:, None] for e in episodes]
    )
    arrays = {
        "img": np.concatenate([e["rgb"] for e in episodes]).astype(np.float32),
        "state": np.concatenate([e["proprio"] for e in episodes]),
        "agent_pos": np.concatenate([e["proprio"][:, :2] for e in episodes]),
        "action": action,
        "keypoint": np.zeros((len(action), 9, 2), np.float32),
    }
    for key, values in arrays.items():
        data.create_array(key, shape=values.shape, dtype=values.dtype, chunks=(16, *values.shape[1:]))[:] = values
    ends = np.cumsum([len(e["rgb"]) for e in episodes])
    root.create_group("meta").create_array("episode_ends", shape=ends.shape, dtype="int64")[:] = ends


def test_zarr_v2_replay_buffer_with_detected_and_named_keys(episodes, tmp_path):
    write_replay_buffer(tmp_path / "rb.zarr", episodes)
    assert (tmp_path / "rb.zarr/.zgroup").is_file()  # zarr v2, as diffusion_policy writes it
    assert main(["import", "zarr", str(tmp_path / "rb.zarr"), "--out", str(tmp_path / "a"), "--image-size", "32"]) == 0
    assert_same_episodes(imported(tmp_path / "a"), episodes)
    with EpisodeStore.open(tmp_path / "a") as store:
        assert store.spec["source"]["keys"] == {"rgb": "img", "proprio": "state", "action": "action"}
        assert store.spec["source"]["version"] == "zarr v2"
    argv = ["import", "zarr", str(tmp_path / "rb.zarr"), "--out", str(tmp_path / "b"), "--proprio-key", "agent_pos"]
    assert main([*argv, "--rgb-key", "img", "--action-key", "action", "--image-size", "16"]) == 0
    with EpisodeStore.open(tmp_path / "b") as store:
        assert store.keys["proprio"]["shape"] == [2] and store.keys["rgb"]["shape"] == [16, 16, 3]
        np.testing.assert_array_equal(store.episode(1)["proprio"], episodes[1]["proprio"][:, :2])


def test_a_jepa_trained_on_an_imported_replay_buffer_beats_copy_last(tmp_path):
    """12 expert episodes of 41 frames through a zarr v2 replay buffer; 300 steps of a tiny JEPA (~15 s)."""
    write_replay_buffer(
        tmp_path / "rb.zarr", list(collect(ENV, 12, 40, policy="expert", seed=3, workers=1, image_size=32))
    )
    store = tmp_path / "store"
    assert main(["import", "zarr", str(tmp_path / "rb.zarr"), "--out", str(store), "--image-size", "32"]) == 0
    tiny = [
        *("encoder.width=32", "encoder.depth=1", "encoder.heads=2", "encoder.out_dim=16", "decoder_width=32"),
        *("predictor.dim=32", "predictor.depth=1", "predictor.heads=2", "batch_size=8", "frameskip=2", "num_hist=2"),
        *("val_every=1000", "log_every=100", "warmup_steps=10", "ckpt_every=1000", "val_fraction=0.25"),
    ]
    run_train(TrainRunConfig(str(store), "jepa", str(tmp_path / "run"), steps=300, overrides=tiny))
    report = evaluate(*load_checkpoint(tmp_path / "run" / "model"), str(store), horizon=3, max_windows=64)
    assert report["held_out"] == "validation episodes of the training store" and report["episodes"] == 3
    assert report["beats_copy_last_every_step"], report["latent_mse"]


def test_bad_inputs_are_one_line_errors_and_leave_nothing(maze, episodes, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    old = tmp_path / "old"
    (old / "meta").mkdir(parents=True)
    (old / "meta/info.json").write_text(
        json.dumps({"codebase_version": "v1.6", "fps": 10, "features": {}, "data_path": ""})
    )
    no_ends = zarr.open_group(tmp_path / "no-ends.zarr", mode="w", zarr_format=2)
    no_ends.create_group("data")
    write_replay_buffer(tmp_path / "rb.zarr", episodes[:2])
    broken = tmp_path / "broken"
    with EpisodeStore.open(maze) as store:
        export_lerobot(store, broken)
    (broken / "videos/observation.image/chunk-000/file-000.mp4").unlink()
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    good_info = json.loads((broken / "meta/info.json").read_text())
    bad_infos = {  # info.json variants: what each gets wrong -> the message
        "list-features": ({**good_info, "features": list(good_info["features"])}, "features must be an object"),
        "fps-ten": ({**good_info, "fps": "ten"}, "fps must be a positive number"),
        "fps-zero": ({**good_info, "fps": 0}, "fps must be a positive number"),
        "shape-str": (
            {**good_info, "features": {**good_info["features"], "action": {"dtype": "float32", "shape": "2"}}},
            "needs a dtype string and a shape list",
        ),  # fmt: skip
        "no-data-path": ({**good_info, "data_path": None}, "data_path must be a format string"),
        "a-list": ([good_info], "holds a JSON list"),
        "deep": ("[" * 100_000 + "]" * 100_000, "RecursionError"),
    }
    for name, (info, _) in bad_infos.items():
        (tmp_path / name / "meta").mkdir(parents=True)
        (tmp_path / name / "meta/info.json").write_text(info if isinstance(info, str) else json.dumps(info))
    out = str(tmp_path / "out")
    rb = str(tmp_path / "rb.zarr")
    for argv, match in [
        *[(["import", "lerobot", str(tmp_path / name), "--out", out], msg) for name, (_, msg) in bad_infos.items()],
        (["import", "lerobot", str(tmp_path / "empty"), "--out", out], "meta/info.json is missing"),
        (["import", "lerobot", str(old), "--out", out], "v1.6"),
        (["import", "lerobot", str(broken), "--out", out], "the dataset is incomplete"),
        (["import", "zarr", str(tmp_path / "nothing"), "--out", out], "no zarr replay buffer"),
        (["import", "zarr", str(tmp_path / "no-ends.zarr"), "--out", out], "meta/episode_ends"),
        (["import", "zarr", rb, "--out", out, "--rgb-key", "camera_9"], "--rgb-key 'camera_9'"),
        (["import", "zarr", rb, "--out", out, "--image-size", "8"], "--image-size"),
        (["import", "zarr", rb, "--out", str(tmp_path / "full")], "not empty"),
        (["import", "minari", "nobody/nothing-v0", "--out", out], "no Minari dataset"),
        (["import", "hdf5", rb, "--out", out], "invalid choice"),
        (["export", "lerobot", str(tmp_path / "nothing"), "--out", out], "no episode store"),
        (["export", "lerobot", str(maze), "--out", str(tmp_path / "full")], "not empty"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[-1], (argv, err)
        assert not (tmp_path / "out").exists(), argv
    assert (tmp_path / "full/keep.txt").read_text() == "mine" and len(list((tmp_path / "full").iterdir())) == 1
