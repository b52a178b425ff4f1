"""Collecting episodes from an env into an episode store (`wm collect`), with a progress bar and a summary: appends
to a store of the same spec, creates a new one otherwise, and never touches anything else on disk."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wm.data.layout import goals_reached_in, honours_reset_seeds, judges_success, store_layout
from wm.data.store import EpisodeStore
from wm.errors import WMError

log = logging.getLogger("wm.data")


@dataclass
class CollectConfig:
    """What `wm collect` does; saved in the store's `collections` attribute."""

    env: str
    episodes: int
    out: str
    policy: str = "expert"
    seed: int = 0
    workers: int = 2
    steps: int | None = None  # None: the env's registered episode length
    image_size: int = 64
    durable: bool = False  # fsync each episode before its commit marker (robots, where a crash is a power loss)

    def validate(self) -> None:
        if self.episodes < 1:
            raise WMError(f"--episodes must be at least 1, got {self.episodes}")
        if self.workers < 1:
            raise WMError(f"--workers must be at least 1, got {self.workers}")
        if self.steps is not None and self.steps < 1:
            raise WMError(f"--steps must be at least 1, got {self.steps}")
        if not 16 <= self.image_size <= 1024:
            raise WMError(f"--image-size must be in [16, 1024], got {self.image_size}")
        if self.seed < 0:
            raise WMError(f"--seed must be non-negative, got {self.seed}")


def open_or_create(out: Path, keys: dict, spec: dict, durable: bool = False) -> EpisodeStore:
    """Append to the store at `out` if it has the same spec, create it if absent; never touch anything else."""
    if out.exists() and out.is_dir() and any(out.iterdir()):
        store = EpisodeStore.open(out, mode="a", durable=durable)
        if not store.same_spec(spec, keys):
            held = store.spec.get("env", {})
            store.close()
            raise WMError(
                f"{out} holds {held.get('id')} episodes ({held.get('image_size')} px, "
                f"{held.get('episode_steps')} steps) with another spec; collect into a new --out"
            )
        return store
    if out.exists() and not out.is_dir():
        raise WMError(f"{out} exists and is a file; choose a new --out directory")
    return EpisodeStore.create(out, keys, spec, durable=durable)


def run_collect(cfg: CollectConfig) -> dict:
    """Collect `cfg.episodes` episodes into `cfg.out`; returns the summary that is also printed."""
    from envs.collector import check_policy, collect
    from envs.registry import DEFAULT_EPISODE_STEPS, episode_limit, is_builtin

    cfg.validate()
    limit = episode_limit(cfg.env)  # also rejects unknown env ids
    if cfg.steps is None and limit is None:
        log.warning("%s sets no episode limit: collecting %d steps per episode; pass --steps N for another length",
                    cfg.env, DEFAULT_EPISODE_STEPS)  # fmt: skip
    steps = cfg.steps or limit or DEFAULT_EPISODE_STEPS
    check_policy(cfg.env, cfg.policy)
    keys, spec = store_layout(cfg.env, cfg.image_size, steps)
    judged = judges_success(cfg.env, cfg.image_size)
    if not is_builtin(cfg.env) and not honours_reset_seeds(cfg.env, cfg.image_size):
        log.warning("%s ignores reset(seed=...): two resets with one seed start differently, so --seed does not make "
                    "this collection reproducible", cfg.env)  # fmt: skip
    out = Path(cfg.out)
    created = not out.exists()
    store = open_or_create(out, keys, spec, durable=cfg.durable)
    first = store.num_episodes
    settle_killed_record(store)
    started = time.time()
    written, goals_reached, frames = 0, 0, 0

    def record(episodes: int) -> None:  # the provenance of this run, rewritten as it grows
        store.record_collection({**asdict(cfg), "steps": steps, "first_episode": first, "episodes_written": episodes,
                                 "success_judged": judged}, replace_last=episodes > 1)  # fmt: skip

    try:
        with tqdm(total=cfg.episodes * steps, unit="step", desc=f"collect {cfg.env}", smoothing=0.1) as bar:
            for episode in collect(
                cfg.env,
                cfg.episodes,
                steps,
                policy=cfg.policy,
                seed=cfg.seed,
                workers=cfg.workers,
                image_size=cfg.image_size,
                first_index=first,
                on_step=bar.update,
            ):
                if "state" not in keys:
                    episode.pop("state", None)
                record(written + 1)  # before the commit: a kill in between can only over-count, never lose one
                store.append_episode(episode)
                written += 1
                frames += len(episode["rgb"])
                goals_reached += goals_reached_in(episode["success"])
                goals = {"goals_per_episode": f"{goals_reached / written:.1f}"} if judged else {}
                bar.set_postfix(episodes=written, **goals)
            bar.update(bar.total - bar.n)  # episodes that ended early leave the bar short
    finally:
        if written:
            record(written)  # exact again (an episode that failed to append is not counted)
        size = store.size_on_disk()
        store.close()
        if created and not written:  # a store we made and never filled is not worth leaving behind
            shutil.rmtree(out, ignore_errors=True)
    elapsed = time.time() - started
    summary = {
        "store": str(out),
        "env": cfg.env,
        "episodes_written": written,
        "episodes_total": first + written,
        "frames_written": frames,
        "goals_reached_per_episode": round(goals_reached / max(written, 1), 2) if judged else None,
        **({} if judged else {"success": f"not judged: {cfg.env} has no success test"}),
        "seconds": round(elapsed, 1),
        "frames_per_second": round(frames / max(elapsed, 1e-9), 1),
        "size_on_disk_mb": round(size / 2**20, 2),
    }
    return summary


def settle_killed_record(store: EpisodeStore) -> None:
    """A run killed between its provenance record and its commit counted one episode too many: count what was
    committed, before another run appends (so no episode is claimed by two runs)."""
    records = store.attrs.get("collections", [])
    last = records[-1] if records else {}
    if "first_episode" in last and last["first_episode"] + last["episodes_written"] > store.num_episodes:
        store.record_collection({**last, "episodes_written": store.num_episodes - last["first_episode"]},
                                replace_last=True)  # fmt: skip


def episodes_collected_with(store: EpisodeStore, policy: str | Callable[[str], bool]) -> np.ndarray:
    """Indices of the store's episodes that `wm collect --policy <policy>` wrote (`policy` a name, or a test of
    names such as `envs.behaviour.is_goal_directed`), from its `collections` record (a record of a killed run may
    count one episode that never committed: only committed episodes are returned)."""
    wanted = policy if callable(policy) else policy.__eq__
    found = [
        np.arange(c["first_episode"], min(c["first_episode"] + c["episodes_written"], store.num_episodes))
        for c in store.attrs.get("collections", [])
        if "first_episode" in c and wanted(c.get("policy"))
    ]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


def goal_policy(store: EpisodeStore) -> str | None:
    """The goal-directed policy (`envs.behaviour.is_goal_directed`) that collected most of the store's episodes, or
    None: what fresh goals for a model trained on it are collected with (`wm.goals.goal_store`)."""
    from envs.behaviour import is_goal_directed

    counts: dict[str, int] = {}
    for c in store.attrs.get("collections", []):
        if is_goal_directed(c.get("policy")) and "episodes_written" in c:
            counts[c["policy"]] = counts.get(c["policy"], 0) + c["episodes_written"]
    return max(counts, key=counts.get) if counts else None
