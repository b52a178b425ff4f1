"""`wm info`: what an episode store holds (episodes, frames, spec, size on disk), optionally verifying every chunk."""

from __future__ import annotations

import json
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
    if "success" in store.keys and store.num_episodes:
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
    if store.repaired_rows:
        summary["repaired"] = f"removed {store.repaired_rows} uncommitted trailing frames from an interrupted write"
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


def print_info(summary: dict) -> None:
    env = summary["env"]
    lines = [
        f"store        {summary['store']}  (schema v{summary['schema_version']})",
        f"env          {env.get('id')}  {env.get('image_size')} px, {env.get('episode_steps')} steps/episode",
        f"episodes     {summary['episodes']}  ({summary['frames']} frames; length "
        f"{summary['episode_length']['min']}..{summary['episode_length']['max']})",
        f"action       {summary['action'].get('shape')} in [{summary['action'].get('low')}, "
        f"{summary['action'].get('high')}]",
    ]
    if "success_at_end" in summary:
        lines.append(
            f"success      {summary['success_at_end']:.1%} at episode end, "
            f"{summary['success_any_time']:.1%} at any time, {summary['goals_reached_per_episode']} goals "
            "reached per episode"
        )
    lines.append(f"size         {summary['size_on_disk_mb']} MB on disk")
    lines.append("keys         " + ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in summary["keys"].items()))
    for c in summary["collections"]:
        lines.append(f"collected    {c['episodes_written']} episodes, policy={c['policy']}, seed={c['seed']}")
    if "repaired" in summary:
        lines.append(f"repaired     {summary['repaired']}")
    if "check" in summary:
        lines.append(f"check        {summary['check']}")
    print("\n".join(lines))


def dump_json(summary: dict) -> None:
    print(json.dumps(summary, indent=2))
