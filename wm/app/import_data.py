"""`wm import FORMAT SRC --out STORE` and `wm export lerobot STORE --out DIR`: other projects' datasets into a new
episode store (with a progress bar over episodes and a summary), and a store out as a LeRobot v3 dataset.

The imported store has the keys rgb `(S, S, 3)` uint8, proprio `(P,)` float32 and action `(A,)` float32 in the
store's alignment; its spec names the env (`<format>:<name>`, or the env id a Minari dataset records), fps (as
`control_dt`), the action bounds (declared by the source, else the range of its actions) and the source's feature
names and format; the `collections` record keeps the provenance (source path, format, version, keys, alignment).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from wm.data.importers import open_source
from wm.data.importers.source import ImportOptions, Source
from wm.data.store import EpisodeStore
from wm.outputs import require_empty_dir

CONTRACT = "action[t] is applied at frame t; the last frame of an episode has action 0"


@dataclass
class ImportConfig:
    """What `wm import` does; saved in the store's `collections` attribute."""

    format: str
    src: str
    out: str
    rgb_key: str | None = None
    proprio_key: str | None = None
    action_key: str | None = None
    image_size: int = 64

    def options(self) -> ImportOptions:
        opts = ImportOptions(self.rgb_key, self.proprio_key, self.action_key, self.image_size)
        opts.validate()
        return opts


def imported_layout(source: Source, image_size: int) -> tuple[dict, dict]:
    """`(keys, spec)` of the store an import of `source` at `image_size` px creates."""
    keys = {
        "rgb": {"shape": [image_size, image_size, 3], "dtype": "uint8"},
        "proprio": {"shape": [source.proprio_dim], "dtype": "float32"},
        "action": {"shape": [source.action_dim], "dtype": "float32"},
    }
    spec = {
        "env": {
            "id": source.env_id,
            "image_size": image_size,
            "episode_steps": source.episode_steps,
            "control_dt": 1.0 / source.fps if source.fps else None,
        },
        "observation": {"rgb": keys["rgb"], "proprio": {**keys["proprio"], "names": source.names.get("proprio")}},
        "action": {
            "shape": [source.action_dim],
            "low": source.action_bounds[0],
            "high": source.action_bounds[1],
            "bounds_from": source.bounds_from,
            "names": source.names.get("action"),
            "alignment": CONTRACT,
        },
        "source": {"format": source.format, "version": source.version, "keys": source.keys, "fps": source.fps},
    }
    return keys, spec


def run_import(cfg: ImportConfig) -> dict:
    """Import `cfg.src` into the new store `cfg.out`; returns the summary that is also printed."""
    opts = cfg.options()
    out = require_empty_dir(cfg.out, "an episode store", "pass a new --out path")
    source = open_source(cfg.format, cfg.src, opts)  # checks the layout before anything is written
    keys, spec = imported_layout(source, opts.image_size)
    started = time.time()
    written = frames = 0
    store = EpisodeStore.create(out, keys, spec)
    try:
        with tqdm(total=source.num_episodes, unit="episode", desc=f"import {cfg.format}") as bar:
            for episode in source.episodes():
                store.append_episode(episode)
                written += 1
                frames += len(episode["rgb"])
                bar.update()
    finally:
        if written:
            store.record_collection(
                {
                    **asdict(cfg),
                    "src": source.path,
                    "importer": source.format,
                    "source_version": source.version,
                    "source_keys": source.keys,
                    "source_alignment": source.alignment,
                    "source_metadata": source.metadata,
                    "first_episode": 0,
                    "episodes_written": written,
                }
            )
        size = store.size_on_disk()
        store.close()
        if not written:  # a store we made and never filled is not worth leaving behind
            shutil.rmtree(out, ignore_errors=True)
    elapsed = time.time() - started
    return {
        "store": str(out),
        "format": source.format,
        "source": source.path,
        "source_version": source.version,
        "source_keys": source.keys,
        "episodes_written": written,
        "frames_written": frames,
        "image_size": opts.image_size,
        "proprio_dim": source.proprio_dim,
        "action_dim": source.action_dim,
        "action_bounds_from": source.bounds_from,
        "fps": source.fps,
        "seconds": round(elapsed, 1),
        "size_on_disk_mb": round(size / 2**20, 2),
    }


def run_export(store_path: str, out: str) -> dict:
    """Write the store at `store_path` as a new LeRobot v3 dataset at `out`; returns the summary."""
    from wm.data.exporters.lerobot import DATASET_FILES, export_lerobot

    started = time.time()
    with EpisodeStore.open(Path(store_path)) as store:
        require_empty_dir(out, DATASET_FILES)  # before the progress bar starts
        with tqdm(total=store.num_episodes, unit="episode", desc="export lerobot") as bar:
            info = export_lerobot(store, out, on_episode=bar.update)
    return {
        "dataset": str(out),
        "format": f"lerobot {info['codebase_version']}",
        "episodes": info["total_episodes"],
        "frames": info["total_frames"],
        "fps": info["fps"],
        "features": sorted(info["features"]),
        "seconds": round(time.time() - started, 1),
    }
