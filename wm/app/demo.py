"""`wm demo`: the main job end to end on a built-in env, offline, on a CPU, ending with where the results are.

Today the pipeline is: collect expert episodes -> summarise the store -> write a video of real episodes. Each
stage prints what it did; the run folder carries the config (`demo.json`) next to every artefact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wm.app.collect import CollectConfig, run_collect
from wm.app.info import print_info, summarize
from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.video import tile, upscale, write_mp4


def new_run_dir(parent) -> Path:
    """A fresh folder `parent/<timestamp>[-k]`: a demo never overwrites an earlier run."""
    parent = Path(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(100):
        run = parent / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            run.mkdir(parents=True, exist_ok=False)
            return run
        except FileExistsError:
            continue
        except OSError as e:
            raise WMError(f"cannot create {run}: {e.strerror}; pass a writable --out") from e
    raise WMError(f"too many runs started this second in {parent}; try again")


def run_demo(env_id: str = "wm/PointMaze-v0", out="runs/demo", episodes: int = 60, seed: int = 0) -> Path:
    from envs.registry import is_builtin

    if not is_builtin(env_id):
        raise WMError(f"`wm demo` runs on the built-in envs; {env_id!r} is not one (see `wm envs`)")
    started = time.time()
    run = new_run_dir(out)
    cfg = CollectConfig(env=env_id, episodes=episodes, out=str(run / "data"), seed=seed)
    (run / "demo.json").write_text(json.dumps({"collect": cfg.__dict__}, indent=2))
    print(f"[1/3] collecting {episodes} noisy-expert episodes of {env_id}")
    collected = run_collect(cfg)
    print("[2/3] the episode store")
    print_info(summarize(run / "data"))
    print("[3/3] video of the first episodes")
    with EpisodeStore.open(run / "data") as store:
        clips = [store.episode(i, ["rgb"])["rgb"] for i in range(min(4, store.num_episodes))]
    length = min(len(c) for c in clips)
    video = write_mp4(run / "episodes.mp4", upscale(tile([c[:length] for c in clips], cols=2), 3))
    report = {
        "env": env_id,
        "collect": collected,
        "video": str(video),
        "seconds": round(time.time() - started, 1),
    }
    (run / "report.json").write_text(json.dumps(report, indent=2))
    print(f"done in {report['seconds']} s: report {run / 'report.json'}, video {video}, data {run / 'data'}")
    return run
