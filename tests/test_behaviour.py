"""Behaviour policies of your own (`wm collect --policy package.module:factory`, `envs.behaviour`) and the arm's
goal-reaching data policy (`envs.reacher:reaching_policy`)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from envs.behaviour import is_goal_directed
from wm.app.cli import main
from wm.data.collection import episodes_collected_with, goal_policy
from wm.data.store import EpisodeStore
from wm.errors import WMError

POLICY_MODULE = """
import numpy as np

class Toward:
    def __init__(self, action_space, rng):
        self.rng, self.seen = rng, []

    def act(self, obs, info):
        assert obs["rgb"].shape == (64, 64, 3) and obs["proprio"].shape == (4,)
        goal, state = info["goal"], info["state"]
        return 3.0 * (goal[:2] - state[:2])  # overshoots the bounds: the collector clips

def toward_goal(action_space, rng):
    return Toward(action_space, rng)

def wrong_shape(action_space, rng):
    class P:
        def act(self, obs, info):
            return np.zeros(3)
    return P()

def not_a_policy(action_space, rng):
    return 42
"""


@pytest.fixture
def user_policies(tmp_path, monkeypatch):
    (tmp_path / "my_policies.py").write_text(textwrap.dedent(POLICY_MODULE))
    monkeypatch.chdir(tmp_path)  # the current directory is searched, as for --env references
    return tmp_path


def test_a_policy_of_your_own_collects_goal_directed_episodes(user_policies):
    out = user_policies / "store"
    argv = ["collect", "--env", "wm/PointMaze-v0", "--episodes", "2", "--steps", "20", "--workers", "1", "--out"]
    assert main([*argv, str(out), "--policy", "my_policies:toward_goal"]) == 0
    assert main([*argv, str(out), "--policy", "random", "--seed", "1"]) == 0
    with EpisodeStore.open(out) as store:
        ep = store.episode(0)
        expected = np.clip(3.0 * (ep["goal"][:-1, :2] - ep["state"][:-1, :2]), -1, 1)
        assert np.allclose(ep["action"][:-1], expected, atol=1e-6)  # what the policy saw is what was recorded
        assert episodes_collected_with(store, is_goal_directed).tolist() == [0, 1]  # `wm bc` clones these
        assert goal_policy(store) == "my_policies:toward_goal"  # fresh goals for its models are collected with it


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("my_policies:wrong_shape", "returned an action of shape (3,)"),
        ("my_policies:not_a_policy", "has no act(obs, info)"),
        ("my_policies:missing", "has no callable 'missing'"),
        ("nowhere.module:make", "cannot import 'nowhere.module'"),
        ("greedy", "unknown policy 'greedy'"),
    ],
)
def test_a_bad_policy_is_a_one_line_error_and_leaves_no_store(user_policies, policy, message, capsys):
    out = user_policies / "bad"
    argv = ["collect", "--env", "wm/PointMaze-v0", "--episodes", "1", "--steps", "5", "--workers", "1"]
    assert main([*argv, "--out", str(out), "--policy", policy]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_the_reaching_policy_stops_at_its_targets():
    """Random actions saturate Reacher's motors (a median 23 rad/s at the base joint); the reaching policy's
    episodes hold stops and controlled speeds."""
    from envs.collector import collect

    episodes = list(collect("envs.reacher:make_reacher", 4, 50, policy="envs.reacher:reaching_policy", seed=0))
    speed = np.abs(np.concatenate([ep["proprio"][:, 4:6] for ep in episodes]))
    assert np.median(speed) < 5.0
    assert np.mean(speed.max(1) < 0.5) > 0.03  # at rest now and then (held targets)
    with pytest.raises(WMError, match="unknown policy"):
        list(collect("envs.reacher:make_reacher", 1, 5, policy="reach"))
