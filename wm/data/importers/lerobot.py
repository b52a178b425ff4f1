"""LeRobot datasets, codebase v3.0 and v2.0/v2.1, read with pyarrow (parquet) and PyAV (mp4).

v3.0   meta/info.json, meta/episodes/chunk-XXX/file-XXX.parquet (one row per episode: length, which data file and
       video file hold it, the episode's from/to timestamps in each video), data/chunk-XXX/file-XXX.parquet and
       videos/<camera>/chunk-XXX/file-XXX.mp4 holding many episodes each.
v2.x   meta/info.json, meta/episodes.jsonl, one parquet (data/chunk-XXX/episode_XXXXXX.parquet) and one mp4 per
       camera (videos/chunk-XXX/<camera>/episode_XXXXXX.mp4) per episode, its timestamps starting at 0.

Features: `dtype` "video" (frames in the mp4s, found at `from_timestamp + timestamp`) or "image" (PNG/JPEG bytes in
the parquet) become rgb, a 1-D float feature (`observation.state` by default) proprio, `action` action.

Alignment: LeRobot row t holds the observation at frame t and the action commanded after it, so action[t]
applies at frame t as in the store; the last row's action, which no recorded frame follows, is stored as 0.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wm.data.importers.frames import is_image_shape, to_store_rgb
from wm.data.importers.source import ImportOptions, Source, aligned_actions, data_bounds, pick_key
from wm.data.importers.video import decode_at
from wm.errors import WMError

V3 = "v3.0"
V2 = ("v2.0", "v2.1")
INFO = "meta/info.json"
ALIGNMENT = "row t: observation at frame t and the action commanded after it; the last row's action is stored as 0"


@dataclass(frozen=True)
class _Episode:
    """Where one episode lives: its rows in parquet file `data`, its frames in `video` from `video_from` seconds."""

    index: int
    length: int
    data: Path
    video: Path | None
    video_from: float


BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
"""Columns LeRobot adds to every dataset: never a state or an action (`timestamp` is float32 of shape (1,))."""


def _read_info(root: Path) -> dict:
    path = root / INFO
    if not path.is_file():
        raise WMError(f"{root} is not a LeRobot dataset: {INFO} is missing")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser goes
        raise WMError(f"{path} cannot be read as JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(info, dict):
        raise WMError(f"{path} holds a JSON {type(info).__name__}, not an object; not a LeRobot info.json")
    missing = [k for k in ("codebase_version", "fps", "features", "data_path") if k not in info]
    if missing:
        raise WMError(f"{path} lacks {', '.join(missing)}; not a LeRobot v2/v3 info.json")
    _check_info(path, info)
    if info["codebase_version"] not in (V3, *V2):
        raise WMError(f"{root} is LeRobot {info['codebase_version']}; this importer reads v3.0, v2.1 and v2.0")
    return info


def _check_info(path: Path, info: dict) -> None:
    """A WMError for an info.json whose fields have the wrong types (what LeRobot writes: fps a positive number,
    features an object of `{dtype, shape}` objects, paths format strings)."""
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < 1e6:
        raise WMError(f"{path}: fps must be a positive number of frames per second, got {fps!r}")
    features = info["features"]
    if not isinstance(features, dict) or not all(isinstance(f, dict) for f in features.values()):
        raise WMError(f"{path}: features must be an object of {{dtype, shape}} objects, got {type(features).__name__}")
    for key, feature in features.items():
        shape = feature.get("shape")
        if not isinstance(feature.get("dtype"), str) or not isinstance(shape, list):
            raise WMError(f"{path}: feature {key!r} needs a dtype string and a shape list, got {feature}"[:300])
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise WMError(f"{path}: feature {key!r} has shape {shape}; its sizes must be positive integers")
    for name, allowed in (("data_path", str), ("video_path", str | None)):
        if not isinstance(info.get(name), allowed):
            raise WMError(f"{path}: {name} must be a format string, got {info.get(name)!r}")


def _table(path: Path, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise WMError(f"parquet file {path} is missing; the dataset is incomplete")
    try:
        return pq.read_table(path, columns=list(columns))
    except Exception as e:
        raise WMError(f"{path} cannot be read for columns {list(columns)} ({type(e).__name__}: {e})") from None


def column(table, name: str) -> np.ndarray:
    """Column `name` as `(N,)` or, for list columns, `(N, D)` numpy."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def _episodes_v3(root: Path, info: dict, video_key: str | None) -> list[_Episode]:
    import pyarrow as pa

    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise WMError(f"{root} is LeRobot v3.0 but has no meta/episodes/chunk-*/file-*.parquet")
    wanted = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    if video_key is not None:
        wanted += [f"videos/{video_key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    table = pa.concat_tables([_table(f, tuple(wanted)) for f in files])
    cols = {name: column(table, name) for name in wanted}
    episodes = []
    for row in np.argsort(cols["episode_index"], kind="stable"):
        at = {name: values[row] for name, values in cols.items()}
        data = info["data_path"].format(chunk_index=int(at["data/chunk_index"]), file_index=int(at["data/file_index"]))
        video = None
        if video_key is not None:
            video = root / info["video_path"].format(
                video_key=video_key,
                chunk_index=int(at[f"videos/{video_key}/chunk_index"]),
                file_index=int(at[f"videos/{video_key}/file_index"]),
            )
        start = float(at[f"videos/{video_key}/from_timestamp"]) if video_key else 0.0
        episodes.append(_Episode(int(at["episode_index"]), int(at["length"]), root / data, video, start))
    return episodes


def _episodes_v2(root: Path, info: dict, video_key: str | None) -> list[_Episode]:
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise WMError(f"{root} is LeRobot {info['codebase_version']} but meta/episodes.jsonl is missing")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chunk_size = int(info.get("chunks_size", 1000))
    episodes = []
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        index = int(row["episode_index"])
        where = {"episode_chunk": index // chunk_size, "episode_index": index}
        video = root / info["video_path"].format(video_key=video_key, **where) if video_key else None
        episodes.append(_Episode(index, int(row["length"]), root / info["data_path"].format(**where), video, 0.0))
    return episodes


def _images(table, name: str) -> np.ndarray:
    """`(L, H, W, 3)` from an "image" feature column (structs of encoded `bytes`, as Hugging Face datasets store)."""
    import io

    from PIL import Image

    cells = table.column(name).to_pylist()
    return np.stack([np.asarray(Image.open(io.BytesIO(c["bytes"])).convert("RGB")) for c in cells])


def open_lerobot(src: str, opts: ImportOptions) -> Source:
    """The LeRobot dataset at directory `src`, checked; frames are decoded only when `episodes()` runs."""
    root = Path(src)
    info = _read_info(root)
    features = info["features"]
    shapes = {k: tuple(f.get("shape") or ()) for k, f in features.items()}
    images = {k: s for k, s in shapes.items() if features[k].get("dtype") in ("video", "image") and is_image_shape(s)}
    vectors = {k: s for k, s in shapes.items() if features[k].get("dtype") in ("float32", "float64") and len(s) == 1
               and k not in BOOKKEEPING}  # fmt: skip
    rgb = pick_key("image feature", images, opts.rgb_key, (), "--camera")
    action = pick_key("action feature", vectors, opts.action_key, ("action",), "--action-key")
    vectors.pop(action)
    proprio = pick_key("state feature", vectors, opts.proprio_key, ("observation.state",), "--proprio-key")
    is_video = features[rgb]["dtype"] == "video"
    if is_video and not info.get("video_path"):
        raise WMError(f"{root / INFO} has video feature {rgb!r} but no video_path")
    if is_video:
        import av  # noqa: F401  (decoding needs PyAV: fail here, before a store is created)
    version = info["codebase_version"]
    episodes = (_episodes_v3 if version == V3 else _episodes_v2)(root, info, rgb if is_video else None)
    if not episodes:
        raise WMError(f"{root} holds no episodes")
    fps = float(info["fps"])
    columns = ("episode_index", "timestamp", proprio, action) + (() if is_video else (rgb,))
    data_files = sorted({e.data for e in episodes})
    missing = [p for p in [*data_files, *sorted({e.video for e in episodes if e.video})] if not p.is_file()]
    if missing:
        raise WMError(f"{missing[0]} is missing ({len(missing)} file(s) in all); the dataset is incomplete")

    file_rows = functools.lru_cache(maxsize=2)(_table)  # v3 files hold many consecutive episodes: read each once

    def rows(episode: _Episode):
        table = file_rows(episode.data, columns)
        mine = np.flatnonzero(column(table, "episode_index") == episode.index)
        if len(mine) != episode.length:
            raise WMError(f"{episode.data} has {len(mine)} rows of episode {episode.index}, expected {episode.length}")
        return table.take(mine)

    def read():
        for episode in episodes:
            table = rows(episode)
            if is_video:
                times = episode.video_from + column(table, "timestamp").astype(np.float64)
                rgb_frames = decode_at(episode.video, times, fps, opts.image_size)
            else:
                rgb_frames = to_store_rgb(_images(table, rgb), opts.image_size, rgb)
            yield {
                "rgb": rgb_frames,
                "proprio": column(table, proprio).astype(np.float32),
                "action": aligned_actions(column(table, action), episode.length),
            }

    return Source(
        format="lerobot",
        version=version,
        path=str(root.resolve()),
        env_id=f"lerobot:{info.get('robot_type') or root.resolve().name}",
        fps=fps,
        num_episodes=len(episodes),
        proprio_dim=int(shapes[proprio][0]),
        action_dim=int(shapes[action][0]),
        keys={"rgb": rgb, "proprio": proprio, "action": action},
        action_bounds=data_bounds(np.concatenate([column(_table(f, (action,)), action) for f in data_files])),
        bounds_from="data",
        alignment=ALIGNMENT,
        episodes=read,
        episode_steps=max(e.length for e in episodes) - 1,
        names={"proprio": features[proprio].get("names"), "action": features[action].get("names")},
        metadata={k: info[k] for k in ("robot_type", "total_episodes", "total_frames", "total_tasks") if k in info},
    )
