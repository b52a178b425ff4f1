"""An episode store as a LeRobot dataset, codebase v3.0 (`wm export lerobot STORE --out DIR`).

Written (pyarrow for parquet, PyAV for mp4), with `episodes_per_file` episodes in each data/video file:
  data/chunk-000/file-XXX.parquet            rows: observation.state, action, timestamp, frame_index,
                                             episode_index, index, task_index
  videos/observation.image/chunk-000/file-XXX.mp4   H.264 yuv420p, the file's episodes back to back
  meta/episodes/chunk-000/file-000.parquet   one row per episode: length, its data and video file, its
                                             from/to timestamps in the video, per-episode stats/<feature>/<stat>
  meta/tasks.parquet, meta/stats.json        one task; min/max/mean/std/count and the q01/q10/q50/q90/q99
                                             quantiles per feature (images per channel in [0, 1], shape (3, 1, 1),
                                             as LeRobot keeps them; QUANTILES normalisation needs the quantiles)
  meta/info.json                             written last: a folder without it is an unfinished export

Alignment: the store's rows are LeRobot's rows (action[t] commanded at frame t), the last frame's 0 action included.
fps is 1 / the spec's control_dt (DEFAULT_FPS when it has none).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wm.data.exporters.video import Mp4Writer
from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.outputs import require_empty_dir

CODEBASE_VERSION = "v3.0"
CAMERA = "observation.image"
DEFAULT_FPS = 10
CHUNK_SIZE = 1000  # files per chunk folder, as LeRobot counts them
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
DATASET_FILES = "LeRobot dataset files"  # what a non-empty --out would mix
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's default set


def _names(given, prefix: str, dim: int) -> list[str]:
    return list(given) if isinstance(given, list) and len(given) == dim else [f"{prefix}_{i}" for i in range(dim)]


def features_of(store: EpisodeStore, fps: int) -> dict:
    """LeRobot's `features` of the dataset `store` exports to."""
    size = int(store.keys["rgb"]["shape"][0])
    proprio, action = int(store.keys["proprio"]["shape"][0]), int(store.keys["action"]["shape"][0])
    spec = store.spec
    video_info = {
        "video.height": size,
        "video.width": size,
        "video.codec": "h264",
        "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }
    names = spec.get("observation", {}).get("proprio", {}).get("names")
    return {
        CAMERA: {
            "dtype": "video",
            "shape": [size, size, 3],
            "names": ["height", "width", "channels"],
            "info": video_info,
        },
        "observation.state": {"dtype": "float32", "shape": [proprio], "names": _names(names, "proprio", proprio)},
        "action": {
            "dtype": "float32",
            "shape": [action],
            "names": _names(spec["action"].get("names"), "action", action),
        },
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in INDEX_FEATURES[1:]},
    }


def feature_stats(values: np.ndarray) -> dict:
    """min/max/mean/std/count and the `QUANTILES` over the rows of `values` `(L, D)`."""
    values = np.asarray(values, np.float64)
    quantiles = np.quantile(values, list(QUANTILES.values()), axis=0)
    return {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
        **dict(zip(QUANTILES, quantiles, strict=True)),
    }


def merge_stats(parts: list[dict]) -> dict:
    """The `feature_stats` of the concatenated rows from the stats of each part. Quantiles are the count-weighted
    mean of the parts' quantiles, as LeRobot aggregates them (exact for one part, an estimate otherwise)."""
    counts = np.array([p["count"][0] for p in parts], np.float64)
    means = np.stack([p["mean"] for p in parts])
    weights = (counts / counts.sum()).reshape(-1, *[1] * (means.ndim - 1))
    mean = (weights * means).sum(0)
    var = (weights * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min([p["min"] for p in parts], 0),
        "max": np.max([p["max"] for p in parts], 0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(counts.sum())]),
        **{q: (weights * np.stack([p[q] for p in parts])).sum(0) for q in QUANTILES},
    }


def image_stats(rgb: np.ndarray) -> dict:
    """`feature_stats` of frames `rgb` `(L, H, W, 3)` uint8 as LeRobot keeps an image feature's: per channel in
    [0, 1], shaped `(3, 1, 1)`, counted in frames."""
    image = feature_stats(rgb.reshape(-1, 3) / 255.0)
    return {k: (np.array([len(rgb)]) if k == "count" else v.reshape(3, 1, 1)) for k, v in image.items()}


def episode_stats(columns: dict, rgb: np.ndarray) -> dict:
    """`{feature: stats}` of one episode: its parquet `columns` and its frames `rgb` `(L, H, W, 3)` uint8."""
    stats = {k: feature_stats(np.asarray(v).reshape(len(v), -1)) for k, v in columns.items()}
    stats[CAMERA] = image_stats(rgb)
    return stats


def _table(columns: dict):
    """A pyarrow table; `(N, D)` columns become fixed-size lists (as Hugging Face datasets' Sequence)."""
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _write_tasks(path: Path, task: str) -> None:
    """meta/tasks.parquet: `task_index` indexed by the task text (pandas metadata, so pandas restores the index)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object"},
        ],
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task])})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def _jsonable(stats: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


def export_lerobot(
    store: EpisodeStore,
    out,
    episodes_per_file: int = 1000,
    on_episode: Callable[[], None] | None = None,
) -> dict:
    """Write `store` as a new LeRobot v3.0 dataset at `out` (absent or empty); returns its info.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [k for k in ("rgb", "proprio", "action") if not store.has(k)]
    if missing:
        raise WMError(f"{store.root} has no {missing}; only stores with rgb, proprio and action export to LeRobot")
    if not store.num_episodes:
        raise WMError(f"{store.root} holds no episodes; nothing to export")
    root = require_empty_dir(out, DATASET_FILES)
    control_dt = store.spec.get("env", {}).get("control_dt")
    fps = max(1, round(1.0 / control_dt)) if control_dt else DEFAULT_FPS
    task = f"wm-engine episodes of {store.spec.get('env', {}).get('id')}"
    size = int(store.keys["rgb"]["shape"][0])
    episodes, all_stats = [], []
    for first in range(0, store.num_episodes, episodes_per_file):
        file_number = first // episodes_per_file
        where = {"chunk_index": file_number // CHUNK_SIZE, "file_index": file_number % CHUNK_SIZE}
        parts = []
        video = root / VIDEO_PATH.format(video_key=CAMERA, **where)
        with Mp4Writer(video, fps, size, size) as writer:
            for i in range(first, min(first + episodes_per_file, store.num_episodes)):
                start, end = store.episode_bounds(i)
                ep = store.episode(i, keys=("rgb", "proprio", "action"))
                length, video_from = end - start, writer.frames / fps
                writer.write(ep["rgb"])
                columns = {
                    "observation.state": ep["proprio"].astype(np.float32),
                    "action": ep["action"].astype(np.float32),
                    "timestamp": (np.arange(length) / fps).astype(np.float32),
                    "frame_index": np.arange(length, dtype=np.int64),
                    "episode_index": np.full(length, i, np.int64),
                    "index": np.arange(start, end, dtype=np.int64),
                    "task_index": np.zeros(length, np.int64),
                }
                parts.append(_table(columns))
                stats = episode_stats(columns, ep["rgb"])
                all_stats.append(stats)
                episodes.append(
                    {
                        "episode_index": i,
                        "tasks": [task],
                        "length": length,
                        "data/chunk_index": where["chunk_index"],
                        "data/file_index": where["file_index"],
                        "dataset_from_index": start,
                        "dataset_to_index": end,
                        f"videos/{CAMERA}/chunk_index": where["chunk_index"],
                        f"videos/{CAMERA}/file_index": where["file_index"],
                        f"videos/{CAMERA}/from_timestamp": video_from,
                        f"videos/{CAMERA}/to_timestamp": video_from + length / fps,
                        "meta/episodes/chunk_index": 0,
                        "meta/episodes/file_index": 0,
                        **{f"stats/{k}/{s}": np.asarray(v).tolist() for k, st in stats.items() for s, v in st.items()},
                    }
                )
                if on_episode:
                    on_episode()
        data = root / DATA_PATH.format(**where)
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(parts), data)
    meta = root / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), root / EPISODES_PATH)
    _write_tasks(meta / "tasks.parquet", task)
    merged = {k: merge_stats([s[k] for s in all_stats]) for k in all_stats[0]}
    (meta / "stats.json").write_text(json.dumps(_jsonable(merged), indent=2))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": store.spec.get("env", {}).get("id"),
        "total_episodes": store.num_episodes,
        "total_frames": store.num_frames,
        "total_tasks": 1,
        "chunks_size": CHUNK_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{store.num_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features_of(store, fps),
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    return info
