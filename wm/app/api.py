"""The Python API: your env -> episode store -> world model -> planning, one call each (the CLI's commands).

`env` is any `--env` id: a built-in, a `wm.envs` entry point, `package.module:factory` or a gymnasium id.
Each function builds the command's config dataclasses from its arguments, Python values checked against the fields'
types as the CLI's `key=value` settings are (`wm.settings`), runs the command's job and returns what it prints.
"""

from __future__ import annotations

from dataclasses import fields

from planners.mpc import MPCConfig
from wm.app.plan import PlanConfig, run_plan
from wm.app.train import TrainRunConfig, run_train
from wm.data.collection import CollectConfig, run_collect
from wm.settings import route_settings


def collect(env: str, out: str, episodes: int, steps: int | None = None, policy: str = "smooth", **options) -> str:
    """`wm collect`: `episodes` episodes of `steps` env steps into the store `out` (returned); `options` are
    `CollectConfig` fields (seed, workers, image_size, durable)."""
    given = route_settings(options, {"collect": CollectConfig}, exclude=("env", "episodes", "out", "policy", "steps"))
    run_collect(CollectConfig(env=env, episodes=episodes, out=out, policy=policy, steps=steps, **given["collect"]))
    return out


def train(store: str, out: str, steps: int, model: str = "jepa", **overrides) -> str:
    """`wm train`: a world model trained `steps` steps on `store`; returns its final checkpoint. `overrides` are
    `wm train`'s `key=value` settings as Python values (`batch_size=32`, `compile=False`)."""
    return run_train(TrainRunConfig(data=store, model=model, out=out, steps=steps, overrides=overrides))["checkpoint"]


def plan(checkpoint: str, env: str, out: str, episodes: int = 50, **options) -> dict:
    """`wm plan`: MPC toward held-out goal images in `env`; returns `results.json`. `options` are `PlanConfig`
    fields (budget, goal_offset, seed, videos, device) or `MPCConfig` fields (planner, samples, iterations, ...);
    MPC settings not given come from the checkpoint's planning preset, else the defaults."""
    own = ("checkpoint", "env", "out", "episodes", "mpc")
    given = route_settings(options, {"mpc": MPCConfig, "plan": PlanConfig}, exclude=own)
    mpc = MPCConfig(**{**{f.name: None for f in fields(MPCConfig)}, **given["mpc"]})
    return run_plan(PlanConfig(checkpoint=checkpoint, env=env, out=out, episodes=episodes, mpc=mpc, **given["plan"]))
