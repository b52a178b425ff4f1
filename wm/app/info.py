"""`wm info`: print the summary of an episode store (`wm.data.summary`) as text or JSON."""

from __future__ import annotations

import json


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
