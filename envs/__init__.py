"""Built-in MuJoCo image environments and the adapter for any other gymnasium env.

Importing this package registers `wm/PointMaze-v0`, `wm/Wall-v0` and `wm/PushT-v0` with gymnasium (lazily:
MuJoCo loads on first `gym.make`). Use `envs.registry.make_env` to get any env, built-in or foreign, with the
engine's observation contract.
"""

import os

# MuJoCo picks its GL backend when it is first imported: render on the CPU through EGL unless the user chose one.
# Every module that imports mujoco is inside this package, so this line runs first.
os.environ.setdefault("MUJOCO_GL", "egl")

from envs import triton_preload  # noqa: E402  (before anything imports mujoco: see its docstring)

triton_preload.install()

import gymnasium as gym  # noqa: E402

BUILTIN = {
    "wm/PointMaze-v0": ("envs.point_maze:PointMazeEnv", 100),
    "wm/Wall-v0": ("envs.wall:WallEnv", 100),
    "wm/PushT-v0": ("envs.push_t:PushTEnv", 200),
}

for _env_id, (_entry_point, _steps) in BUILTIN.items():
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry_point, max_episode_steps=_steps)
