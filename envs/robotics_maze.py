"""gymnasium-robotics' PointMaze (the D4RL maze2d port) as a goal-image env: a wrapper-style external env.

`make_point_maze(maze)` is a `--env` factory (`--env envs.robotics_maze:make_point_maze`); it needs the optional
`gymnasium-robotics` package (`pip install -e ".[robotics]"`). The env is wrapper-style: its MuJoCo simulator is
`env.unwrapped.point_env`, which `env.unwrapped.model`/`.data` pass on, so states are the adapter's MuJoCo default
`(6,)` = `[x, y, vx, vy, qacc_warmstart (2)]`. Proprio `(4,)` = `[x, y, vx, vy]` read from the live simulator (velocity
dims 2 and 3). A goal is a state; success is the env's own test, the ball within `SUCCESS_RADIUS` of the goal
state's position. Frames are drawn top-down over the maze's free cells at `image_size` px without shadows, and the
env's own target marker is hidden: the goal is an image here, and the marker (a new random place at each reset)
would put a difference between every start and goal frame that no action can remove.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from envs.adapter import GymImageAdapter
from wm.errors import WMError

SUCCESS_RADIUS = 0.45
"""The env's own success distance (m; `PointMazeEnv` counts `<= 0.45` as reached); its cells are 1 m wide."""
EPISODE_STEPS = 100
"""Steps per episode (the env registers 300 for UMaze): 1 s of sim time, room for goals 25 steps ahead."""
MAZES = ("UMaze", "Open", "Medium", "Large")


def reached(state, goal) -> bool:
    """Success: the ball within `SUCCESS_RADIUS` of the goal's position; never without a goal."""
    if goal is None:
        return False
    return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal)[:2])) <= SUCCESS_RADIUS


def ball_distance(state, goal) -> float:
    return float(np.linalg.norm(np.asarray(state, np.float64)[:2] - np.asarray(goal, np.float64)[:2]))


def ball_proprio(env, raw_obs) -> np.ndarray:
    """`(4,)` from the live simulator: the ball's position and velocity."""
    data = env.unwrapped.point_env.data
    return np.concatenate([data.qpos[:2], data.qvel[:2]])


def make_point_maze(maze: str = "UMaze", image_size: int = 64) -> GymImageAdapter:
    """`PointMaze_<maze>-v3` (0.01 s per step) with the engine's contract and goal hooks, seen from above."""
    if maze not in MAZES:
        raise WMError(f"unknown maze {maze!r}; use one of {', '.join(MAZES)}")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice about the Adroit envs
            import gymnasium_robotics
    except ImportError:
        raise WMError('gymnasium-robotics is not installed; pip install -e ".[robotics]"') from None
    import gymnasium as gym

    gym.register_envs(gymnasium_robotics)
    env = gym.make(f"PointMaze_{maze}-v3", render_mode="rgb_array", max_episode_steps=EPISODE_STEPS)
    inner = env.unwrapped
    inner.point_env.model.site_rgba[inner.target_site_id, 3] = 0.0  # hide the env's own goal marker
    inner.dt = inner.point_env.dt  # the maze has no `dt` of its own; without it, 1 / render_fps (0.02 s) is taken
    free_cells = max(len(inner.maze.maze_map), len(inner.maze.maze_map[0])) - 2  # the outer ring is wall
    # fovy 45: a distance of 1.3x the free width frames the free cells with a margin of a tenth of a cell
    top_down = {"distance": 1.3 * free_cells, "elevation": -90.0, "azimuth": 90.0, "lookat": np.zeros(3)}
    return GymImageAdapter(
        env,
        image_size,
        proprio_fn=ball_proprio,
        is_success=reached,
        goal_distance=ball_distance,
        proprio_velocity_dims=(2, 3),
        render_size=image_size,
        camera=top_down,
    )
