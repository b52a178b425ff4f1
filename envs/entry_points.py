"""Envs from anywhere: `package.module:factory` references and the `wm.envs` entry-point group.

An env reference names a callable that returns a gymnasium env:
- `package.module:factory` (the module is imported; the current directory is searched too, as `python -m` does);
- the name of an entry point in the group `ENTRY_POINT_GROUP` of an installed package, e.g. in its
  pyproject.toml: `[project.entry-points."wm.envs"]` then `"mypkg/Arm-v0" = "mypkg.envs:make_arm"`.
The factory is called as `factory(image_size=S)` when it names an `image_size` parameter, else with no arguments
(a `**kwargs` factory gets none: it may pass them on to `gym.make`). `wm robot serve --robot` loads robot factories
the same way.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import gymnasium as gym

from wm.errors import WMError

ENTRY_POINT_GROUP = "wm.envs"


def registered() -> dict[str, str]:
    """`{name: "module:factory"}` of every installed `wm.envs` entry point (not loaded)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def is_reference(env_id: str) -> bool:
    """Whether `env_id` is a `module:factory` reference or a `wm.envs` entry-point name."""
    return ":" in env_id or env_id in registered()


def load_factory(reference: str, flag: str = "--env", what: str = "env") -> Callable:
    """The callable that `reference` (an entry-point name or `module:factory`) names; `flag` and `what` (env,
    robot) name where it came from in the errors."""
    target = registered().get(reference, reference)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise WMError(f"{flag} {target!r} is not module:factory; pass e.g. mypkg.envs:make_env")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise WMError(f"cannot load the {what} factory {reference}: cannot import {module_name!r} ({e}); install "
                      "it or add it to PYTHONPATH") from None  # fmt: skip
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise WMError(f"{module_name} has no callable {attr!r}; {flag} {reference} must name a factory function")
    return factory


def call_factory(factory: Callable, reference: str, image_size: int, what: str = "env"):
    """`factory(image_size=image_size)` where it names that parameter, else `factory()`; a factory that fails is a
    one-line error naming it and the arguments it was called with."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature: call them plainly
        params = {}
    kwargs = {"image_size": image_size} if "image_size" in params else {}
    try:
        return factory(**kwargs)
    except WMError:
        raise
    except Exception as e:
        called = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise WMError(f"the {what} factory {reference}({called}) failed: {type(e).__name__}: {e}") from e


def make_from_reference(env_id: str, image_size: int) -> gym.Env:
    """Call the factory that `env_id` names (with `image_size=` only where it names that parameter: a factory that
    passes `**kwargs` on to `gym.make` would hand it to the env); it must return a gym.Env. A factory that fails is
    a one-line error naming it and the arguments it was called with."""
    env = call_factory(load_factory(env_id), env_id, image_size)
    if not isinstance(env, gym.Env):
        raise WMError(f"--env {env_id} returned {type(env).__name__}, not a gymnasium Env; return the env itself")
    return env
