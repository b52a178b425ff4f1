"""Start/goal pairs for goal-reaching evaluation, and the goal observations a controller is given.

A pair is `{"start": state | None, "goal": state | None, "goal_obs": {"rgb": (H, W, 3) uint8, "proprio": (P,)},
"source": {...}}`: simulator states where they exist (the env resets to `start` and judges success against
`goal`), and the observation at the goal, which is all a controller ever sees of it. Sources:
- `dataset_goals`: held-out episodes of a store; start at time t, goal the observation at t + offset (the
  stable-worldmodel protocol: goal 25 env steps ahead); `goal_store` says which store (the one given, the
  checkpoint's training store, or, where that is not on this machine, expert episodes collected for the run);
- `random_goals`: an env reset and a goal state drawn by the env;
- `file_goals`: an .npz of goal observations (and optional states) recorded on a robot.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.models.checkpoint_config import TrainedOn

log = logging.getLogger("wm.goals")
FRESH_GOAL_STREAM = 0x60A15  # mixed into --seed: fresh goal episodes never replay a `wm collect --seed N` episode
COLLECT_FRAMES_PER_S = 350  # a noisy expert with rendering on 2 CPU cores (PushT: 402,000 frames in 1,069 s)


def goal_store(trained_on: TrainedOn, data, scratch, episodes: int, goal_offset: int, seed: int,
               min_start: int = 0) -> dict:  # fmt: skip
    """Where the dataset goals of a run come from, as its report says: `{"store": path, "source": ...}`.

    `data` when given (`"source": "data"`); else the checkpoint's training store (`trained_on`) when it is on this
    machine (`"training store"`: its validation episodes are the held-out ones); else, as for a shipped checkpoint
    on a fresh clone, `episodes` episodes of the checkpoint's env, image size and episode length, collected now by
    its noisy expert (built-in envs) or the goal-directed policy that collected the training store (`goal_policy`),
    into the new store `scratch` (`"fresh"`), seeded from `seed` apart from any `wm collect` seed: never trained on,
    so every one of them is held out."""
    named = trained_on.store
    if data is not None or trained_on.store_is_here:
        return {"store": str(data if data is not None else named), "source": "data" if data is not None else
                "training store"}  # fmt: skip
    from envs.registry import is_builtin
    from wm.data.collection import CollectConfig, run_collect

    env = trained_on.env
    policy = "expert" if is_builtin(env["id"]) else trained_on.goal_policy
    if policy is None:
        raise WMError(f"the checkpoint's store {named} is not here and {env['id']} has no scripted expert to "
                      f"collect goals with; pass --data STORE of {env['id']}")  # fmt: skip
    if env["episode_steps"] <= goal_offset + min_start:
        raise WMError(f"{env['id']} episodes last {env['episode_steps']} steps, too few for goals {goal_offset} "
                      f"steps ahead (+ {min_start}); lower --goal-offset")  # fmt: skip
    fresh_seed = int(np.random.SeedSequence([seed, FRESH_GOAL_STREAM]).generate_state(1)[0])
    frames = episodes * (env["episode_steps"] + 1)
    log.warning("goals: the checkpoint's training store %s is not here; collecting %d fresh %s episodes (%d "
                "frames, about %d s at the ~%d frames/s of 2 CPU cores) into %s before planning (never trained on: all "
                "held out; pass --data STORE to use a store you have)", named, episodes, policy, frames,
                max(1, frames // COLLECT_FRAMES_PER_S), COLLECT_FRAMES_PER_S, scratch)  # fmt: skip
    run_collect(CollectConfig(env["id"], episodes, str(scratch), policy=policy, seed=fresh_seed,
                              workers=min(2, os.cpu_count() or 1), steps=env["episode_steps"],
                              image_size=env["image_size"]))  # fmt: skip
    return {"store": str(scratch), "source": "fresh", "episodes": episodes, "policy": policy, "seed": fresh_seed,
            "held_out": "all: collected for this run, never trained on", "missing_store": named}  # fmt: skip


def dataset_goals(
    store_path,
    trained_on: TrainedOn,
    count: int,
    goal_offset: int,
    rng: np.random.Generator,
    min_start: int = 0,
    solved=None,
    tries: int = 50,
    episodes=None,
) -> list[dict]:
    """`count` pairs from the episodes of `store_path` that the checkpoint (`trained_on`) held out, each goal
    `goal_offset` env steps after its start, which is at least `min_start` steps into its episode (room for a
    history of real frames before it). Start and goal are the store's states (the env is reset to the start and
    judges the end against the goal); the goal image is the frame the store recorded at the goal state. With
    `solved(start_state, goal_state) -> bool` (the env's `is_success`), pairs already solved at the start are
    redrawn (up to `tries` starts per episode, then another episode). `episodes` draws from these episodes instead of
    the held-out ones (`wm improve` runs its policy on training goals)."""
    path = Path(store_path)
    if not path.is_dir():
        raise WMError(f"goal store {path} not found; pass a store of {trained_on.env_id} (--data) or use random goals")
    with EpisodeStore.open(path) as store:
        if "state" not in store.keys:
            raise WMError(f"{path} has no simulator states; dataset goals need a store of an env with state hooks")
        episodes = trained_on.held_out(store)[0] if episodes is None else np.asarray(episodes, np.int64)
        lengths = store.episode_lengths()[episodes]
        usable = episodes[lengths > goal_offset + min_start]
        if len(usable) == 0:
            raise WMError(f"no held-out episode is longer than the goal offset {goal_offset} (+ {min_start}); lower it")
        pairs, picks, refills = [], list(rng.choice(usable, size=count, replace=len(usable) < count)), 0
        while len(pairs) < count:
            if not picks:  # every try in some episodes was solved at the start: draw more episodes
                refills += 1
                if refills > 10:
                    raise WMError(f"almost every start/goal pair of {path} is solved at its start; pass a store of "
                                  "longer moves or a longer --goal-offset")  # fmt: skip
                picks = list(rng.choice(usable, size=count - len(pairs)))
            e = picks.pop(0)
            ep = store.episode(int(e), ["state", "rgb", "proprio"])
            for _ in range(tries):
                t = int(rng.integers(min_start, len(ep["state"]) - goal_offset))
                g = t + goal_offset
                if solved is None or not solved(ep["state"][t], ep["state"][g]):
                    break
            else:
                continue
            pairs.append(
                {
                    "start": ep["state"][t],
                    "goal": ep["state"][g],
                    "goal_obs": {"rgb": ep["rgb"][g], "proprio": ep["proprio"][g]},
                    "source": {"episode": int(e), "t": t},
                }
            )
    return pairs


def random_goals(env, count: int, rng: np.random.Generator) -> list[dict]:
    """`count` pairs of a random start (an env reset) and a random goal state drawn by the (built-in) env."""
    pairs = []
    for i in range(count):
        _, info = env.reset(seed=int(rng.integers(2**31)))
        goal = env.sample_goal(rng)
        pairs.append({"start": info["state"], "goal": goal, "goal_obs": env.observe_state(goal), "source": {"i": i}})
    return pairs


def file_goals(path: Path) -> list[dict]:
    """Pairs from an .npz holding `rgb (G, H, W, 3)`, `proprio (G, P)` and optionally `start`/`goal` states."""
    path = Path(path)
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise WMError(
            f"cannot read goals from {path} ({e}); pass an .npz with rgb (G, H, W, 3) and proprio (G, P)"
        ) from None
    if "rgb" not in arrays or "proprio" not in arrays:
        raise WMError(f"{path} holds {sorted(arrays)}; goal files need rgb (G, H, W, 3) and proprio (G, P)")
    n = len(arrays["rgb"])
    if arrays["rgb"].ndim != 4 or arrays["proprio"].ndim != 2 or len(arrays["proprio"]) != n or n == 0:
        raise WMError(f"{path}: rgb must be (G, H, W, 3) and proprio (G, P) with the same G > 0")
    return [
        {
            "goal_obs": {"rgb": arrays["rgb"][i].astype(np.uint8), "proprio": arrays["proprio"][i].astype(np.float32)},
            "start": arrays["start"][i] if "start" in arrays else None,
            "goal": arrays["goal"][i] if "goal" in arrays else None,
            "source": {"file": str(path), "index": i},
        }
        for i in range(n)
    ]


def goal_batch(pairs: list[dict], goal_velocity: str, velocity_dims: tuple[int, ...]) -> dict:
    """The controller's goal observations `{"rgb": (B, H, W, 3), "proprio": (B, P)}` of start/goal `pairs`.

    A goal image shows where to be, not how fast to move: with `goal_velocity="rest"` the proprio entries
    `velocity_dims` are zero (arrive and stay); `"observed"` keeps the goal frame's velocities (DINO-WM's goals).
    `pairs` is left as it is."""
    if goal_velocity not in ("rest", "observed"):
        raise WMError(f"goal velocity must be rest or observed, got {goal_velocity!r}")
    proprio = np.stack([p["goal_obs"]["proprio"] for p in pairs])
    if goal_velocity == "rest":
        proprio[:, list(velocity_dims)] = 0.0
    return {"rgb": np.stack([p["goal_obs"]["rgb"] for p in pairs]), "proprio": proprio}
