"""PointMaze: a point mass in a U-shaped maze, seen from above (the D4RL U-maze layout DINO-WM plans in).

Cells are 1 m; the agent is a 0.15 m sphere commanded in velocity (action (2,) in [-1, 1] -> up to 1.5 m/s).
Success: agent within 0.5 m of the goal position (the D4RL / DINO-WM threshold).
"""

from envs.point_mass import PointMassArenaEnv


class PointMazeEnv(PointMassArenaEnv):
    """Point mass in a U-maze; success within 0.5 m of the goal."""

    layout = (
        "#####",
        "#...#",
        "###.#",
        "#...#",
        "#####",
    )
    cell = 1.0
    agent_radius = 0.15
    max_speed = 1.5
    success_radius = 0.5
