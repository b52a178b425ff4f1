"""What an episode store holds, as JSON: episodes, frames, spec, success statistics, size on disk; optionally a
check that every committed chunk decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from wm.data.layout import goals_reached_in
from wm.data.store import EpisodeStore


def summarize(path, check: bool = False) -> dict:
    """A JSON-ready summary of the store at `path`; `check=True` also decodes every committed chunk."""
    store = EpisodeStore.open(Path(path), mode="r")
    lengths = store.episode_lengths()
    summary = {
        "store": str(store.root),
        "schema_version": store.attrs["schema_version"],
        "env": store.spec.get("env", {}),
        "episodes": store.num_episodes,
        "frames": store.num_frames,
        "episode_length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "keys": {k: {**info, "chunks": list(store.array(k).chunks)[:1]} for k, info in store.keys.items()},
        "action": {k: v for k, v in store.spec.get("action", {}).items() if k != "alignment"},
        "size_on_disk_mb": round(store.size_on_disk() / 2**20, 2),
        "collections": [
            {k: c.get(k) for k in ("policy", "seed", "episodes_written", "workers", "steps")}
            for c in store.attrs.get("collections", [])
        ],
    }
    judged = [c["success_judged"] for c in store.attrs.get("collections", []) if "success_judged" in c]
    if judged and not any(judged):
        summary["success"] = "not judged: the env has no success test"
    elif "success" in store.keys and store.num_episodes:
        success = store.read("success")
        ends = store.episode_ends
        summary["success_at_end"] = round(float(success[ends - 1].mean()), 3)
        starts = np.r_[0, ends[:-1]]
        summary["success_any_time"] = round(
            float(np.mean([success[s:e].any() for s, e in zip(starts, ends, strict=True)])), 3
        )
        summary["goals_reached_per_episode"] = round(
            float(np.mean([goals_reached_in(success[s:e]) for s, e in zip(starts, ends, strict=True)])), 2
        )
    if check:
        summary["check"] = verify(store)
    return summary


def verify(store: EpisodeStore) -> str:
    """Decode every committed row chunk by chunk; raises WMError naming the first unreadable chunk."""
    for key in tqdm(store.keys, desc="check", unit="key"):
        rows = store.array(key).chunks[0]
        for start in range(0, store.num_frames, rows):
            store.read(key, start, start + rows)
    return f"ok: every chunk of {len(store.keys)} keys decoded"
