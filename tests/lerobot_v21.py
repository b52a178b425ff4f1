"""A LeRobot v2.1 dataset written to the spec (pyarrow and PyAV, no lerobot): what lerobot 0.3 wrote and what
lerobot's own v2.1 -> v3.0 converter reads, for the importer's tests and the real-package round trip."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from wm.data.exporters.lerobot import INDEX_FEATURES, feature_stats, image_stats
from wm.data.exporters.video import Mp4Writer


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def write_lerobot_v21(root, episodes, cameras: dict, dtype: str, fps: int = 10, state="observation.state") -> None:
    """A LeRobot v2.1 dataset as lerobot 0.3 wrote them (the fields its v2.1 -> v3.0 converter reads): per-episode
    parquet (and mp4 per camera for `dtype` "video"), meta/info.json with the totals, chunks and splits,
    tasks.jsonl, episodes.jsonl and episodes_stats.jsonl; `cameras` maps each camera key to the `(L, H, W, 3)`
    frames of every episode; `state` names the state feature (None: none). Each episode's last action is kept
    non-zero, as real recordings have it."""
    size = next(iter(cameras.values()))[0].shape[1]
    episode_lines, stats_lines = [], []
    for i, ep in enumerate(episodes):
        length = len(ep["rgb"])
        action = ep["action"].copy()
        action[-1] = 0.5
        numeric = {
            **({state: ep["proprio"].astype(np.float32)} if state else {}),
            "action": action.astype(np.float32),
            "timestamp": np.arange(length, dtype=np.float32) / fps,
            "frame_index": np.arange(length),
            "episode_index": np.full(length, i),
            "index": np.arange(length) + i * length,
            "task_index": np.zeros(length, np.int64),
        }
        columns = {k: pa.array(v.tolist(), pa.list_(pa.float32())) if v.ndim == 2 else pa.array(v)
                   for k, v in numeric.items()}  # fmt: skip
        stats = {k: feature_stats(v.reshape(length, -1)) for k, v in numeric.items()}
        for key, frames in cameras.items():
            stats[key] = image_stats(frames[i])
            if dtype == "image":
                columns[key] = pa.array([{"bytes": _png(f), "path": None} for f in frames[i]])
            else:
                with Mp4Writer(root / f"videos/chunk-000/{key}/episode_{i:06d}.mp4", fps, size, size) as writer:
                    writer.write(frames[i])
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), root / f"data/chunk-000/episode_{i:06d}.parquet")
        episode_lines.append({"episode_index": i, "tasks": ["reach"], "length": length})
        stats_lines.append({"episode_index": i, "stats": {k: {s: np.asarray(v).tolist() for s, v in st.items()}
                                                          for k, st in stats.items()}})  # fmt: skip
    vector = {"dtype": "float32", "names": None}
    video_info = {"video.fps": float(fps), "video.height": size, "video.width": size, "video.channels": 3,
                  "video.codec": "h264", "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                  "has_audio": False}  # fmt: skip
    features = {
        **{
            k: {
                "dtype": dtype,
                "shape": [size, size, 3],
                "names": ["height", "width", "channel"],
                **({"info": video_info} if dtype == "video" else {}),
            }
            for k in cameras
        },  # fmt: skip
        **({state: {**vector, "shape": [4]}} if state else {}),
        "action": {**vector, "shape": [2], "names": ["x", "y"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in INDEX_FEATURES[1:]},
    }
    info = {
        "codebase_version": "v2.1",
        "robot_type": "koch",
        "total_episodes": len(episodes),
        "total_frames": sum(len(e["rgb"]) for e in episodes),
        "total_tasks": 1,
        "total_videos": len(episodes) * len(cameras) if dtype == "video" else 0,
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        if dtype == "video"
        else None,
        "features": features,
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "reach"}) + "\n")
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in episode_lines))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(line) + "\n" for line in stats_lines))
