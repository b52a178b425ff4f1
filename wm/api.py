"""The Python API: your env -> episode store -> world model -> planning, one call each (the CLI's commands).

`env` is any `--env` id: a built-in, a `wm.envs` entry point, `package.module:factory` or a gymnasium id.
Each function runs the command's library code and returns what the command prints.
"""

from __future__ import annotations

from planners.mpc import MPCConfig
from wm.app.plan import PlanConfig, run_plan
from wm.app.train import run_train
from wm.data.collection import CollectConfig, run_collect


def collect(env: str, out: str, episodes: int, steps: int | None = None, policy: str = "smooth", **options) -> str:
    """`wm collect`: `episodes` episodes of `steps` env steps into the store `out` (returned); `options` are
    `CollectConfig` fields (seed, workers, image_size, durable)."""
    run_collect(CollectConfig(env=env, episodes=episodes, out=out, policy=policy, steps=steps, **options))
    return out


def train(store: str, out: str, steps: int, model: str = "jepa", **overrides) -> str:
    """`wm train`: a world model trained `steps` steps on `store`; returns its final checkpoint. `overrides` are
    the `key=value` settings (`batch_size=32`, `frameskip=5`)."""
    pairs = [f"{key}={value}" for key, value in overrides.items()]
    return run_train(store, model, out, steps=steps, overrides=pairs)["checkpoint"]


def plan(checkpoint: str, env: str, out: str, episodes: int = 50, **options) -> dict:
    """`wm plan`: MPC toward held-out goal images in `env`; returns `results.json`. `options` are `PlanConfig`
    fields (budget, goal_offset, seed, videos, device) or `MPCConfig` fields (planner, samples, iterations, ...);
    MPC settings not given come from the checkpoint's planning preset, else the defaults."""
    mpc_fields = MPCConfig.__dataclass_fields__
    mpc = MPCConfig(**{k: options.get(k) for k in mpc_fields})
    top = {k: v for k, v in options.items() if k not in mpc_fields}
    return run_plan(PlanConfig(checkpoint=checkpoint, env=env, out=out, episodes=episodes, mpc=mpc, **top))
