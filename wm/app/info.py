"""`wm info`: print the summary of an episode store (`wm.data.summary`) as text or JSON; `--repair` first removes
what an interrupted write left (and cuts a damaged index back to the episodes before the damage)."""

from __future__ import annotations

import json

from wm.data.store import EpisodeStore
from wm.data.summary import summarize


def repair(path) -> str:
    """Open the store at `path` as a writer that also repairs a damaged index; returns what was removed."""
    with EpisodeStore.open(path, mode="a", repair=True) as store:
        rows, dropped = store.repaired_rows, store.dropped_episodes
    done = [f"removed {rows} frame(s) past the last intact episode"] if rows else []
    done += [f"dropped {dropped} episode(s) after a damaged index"] if dropped else []
    return "; ".join(done) or "nothing to repair"


def store_info(path, check: bool = False, repair_first: bool = False) -> dict:
    """The summary of the store at `path` (`wm.data.summary.summarize`), after `repair` if `repair_first`."""
    repaired = repair(path) if repair_first else None
    summary = summarize(path, check=check)
    uncommitted = EpisodeStore.open(path).uncommitted_rows
    if repaired:
        summary["repaired"] = repaired
    elif uncommitted:
        summary["uncommitted"] = (
            f"{uncommitted} trailing frame(s) of an interrupted write, not read; "
            f"`wm info --repair {path}` (or the next writer) removes them"
        )
    return summary


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
    if "success" in summary:
        lines.append(f"success      {summary['success']}")
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
    if "uncommitted" in summary:
        lines.append(f"uncommitted  {summary['uncommitted']}")
    if "check" in summary:
        lines.append(f"check        {summary['check']}")
    print("\n".join(lines))


def dump_json(summary: dict) -> None:
    print(json.dumps(summary, indent=2))
