"""Collection: goal chaining keeps expert episodes moving, and columns stay consistent."""

import numpy as np
from conftest import kill_once_committed

from envs.collector import collect, episode_seed


def test_expert_chains_goals_and_labels_stay_consistent():
    episodes = list(collect("wm/PointMaze-v0", 2, 100, policy="expert", seed=5, workers=1))
    for ep in episodes:
        changes = np.flatnonzero(np.abs(np.diff(ep["goal"], axis=0)).sum(1) > 0)
        assert len(changes) >= 1  # the expert reached a goal and was given another
        assert ep["success"][changes].all()  # a goal is only replaced once it has been reached
        moved = np.linalg.norm(np.diff(ep["state"][:, :2], axis=0), axis=1)
        assert (moved[-20:] > 1e-3).any()  # still moving at the end: no long idle tail
        assert ep["action"][-1].tolist() == [0.0, 0.0]


def test_random_policy_keeps_the_reset_goal_and_seeds_differ_per_episode():
    (ep,) = collect("wm/Wall-v0", 1, 30, policy="random", seed=1, workers=1)
    assert (ep["goal"] == ep["goal"][0]).all()
    assert len({episode_seed(1, i) for i in range(100)}) == 100


def test_smooth_policy_is_correlated_in_time_and_travels_farther_than_random():
    def spread(policy):
        episodes = list(collect("wm/PointMaze-v0", 4, 60, policy=policy, seed=3, workers=1))
        actions = np.concatenate([ep["action"][:-1] for ep in episodes])
        assert np.abs(actions).max() <= 1.0
        lag1 = np.mean([np.corrcoef(ep["action"][:-2, 0], ep["action"][1:-1, 0])[0, 1] for ep in episodes])
        xy = np.stack([ep["state"][:, :2] for ep in episodes])  # (E, T, 2)
        travel = np.linalg.norm(xy[:, 10:] - xy[:, :-10], axis=-1).mean()  # distance covered in 10 steps
        return lag1, travel

    smooth_corr, smooth_travel = spread("smooth")
    random_corr, random_travel = spread("random")
    assert smooth_corr > 0.7 and abs(random_corr) < 0.3
    assert smooth_travel > 1.25 * random_travel  # 1.4x here: the maze corridors cut long runs short


def test_a_killed_collect_keeps_the_provenance_of_every_committed_episode(tmp_path):
    """Issue 28 item 20. Before: the provenance record was written in a `finally` that SIGKILL skips, so `wm bc` found
    fewer expert episodes than the store held."""
    import os
    import subprocess
    import sys

    from wm.app.cli import main
    from wm.data.collection import episodes_collected_with
    from wm.data.store import EpisodeStore

    out = tmp_path / "store"
    argv = [sys.executable, "-m", "wm.app.cli", "collect", "--env", "wm/PointMaze-v0", "--episodes", "60", "--steps",
            "30", "--workers", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    kill_once_committed(proc, out)
    with EpisodeStore.open(out) as store:
        committed = store.num_episodes
        assert np.array_equal(episodes_collected_with(store, "expert"), np.arange(committed))
    assert main(["collect", "--env", "wm/PointMaze-v0", "--episodes", "2", "--steps", "30", "--workers", "1",
                 "--policy", "random", "--out", str(out)]) == 0  # fmt: skip
    with EpisodeStore.open(out) as store:  # the next run claims only its own episodes
        assert np.array_equal(episodes_collected_with(store, "expert"), np.arange(committed))
        assert np.array_equal(episodes_collected_with(store, "random"), np.arange(committed, committed + 2))
