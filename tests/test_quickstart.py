"""The README's Python quick start, executed as written (only its sizes are shrunk, by text substitution)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from test_external_envs import TINY

QUICK_START = """\
from wm.app.api import collect, plan, train

env = "envs.robotics_maze:make_point_maze"  # your env: package.module:factory returning a gymnasium env
store = collect(env, "runs/maze/data", episodes=300, workers=2)
checkpoint = train(store, "runs/maze/wm", steps=20000, time_limit_s=600)
results = plan(checkpoint, env, "runs/maze/plan", episodes=50, planner="icem")
print(results["success_rate"], results["success_95ci"])
"""

SMALL = {
    "runs/maze": "{tmp}",
    "episodes=300, workers=2": "episodes=6, steps=60, workers=1",  # the ball must move more than 0.45 m
    "steps=20000, time_limit_s=600": "steps=2, **TINY",
    'episodes=50, planner="icem"': 'episodes=2, planner="icem", budget=2, goal_offset=30, horizon=1, samples=8, '
    'elites=2, iterations=1, device="cpu"',
}


def test_readme_shows_the_quick_start():
    assert QUICK_START in (Path(__file__).parent.parent / "README.md").read_text()


def test_quick_start_runs_as_written(tmp_path, capsys):
    pytest.importorskip("gymnasium_robotics")  # the quick start's env (`pip install -e ".[robotics]"`, in [dev])
    code = QUICK_START
    for big, small in SMALL.items():
        assert big in code
        code = code.replace(big, small.format(tmp=tmp_path))
    scope = {"TINY": TINY}
    exec(compile(code, "README quick start", "exec"), scope)
    assert scope["results"]["episodes"] == 2 and scope["results"]["success_judged"] is True
    assert (tmp_path / "plan" / "results.json").is_file()
