"""Wall: two rooms split by a wall with a single door; the only way into the other room is through the door.

The arena is 9 x 9 cells of 0.25 m inside a border; the wall is the middle column with a two-cell door above
the centre. The agent is a 0.08 m sphere commanded in velocity (up to 1 m/s).
Success: agent within 0.15 m of the goal position (about 7% of the arena width, as in DINO-WM's Wall).
"""

from envs.point_mass import PointMassArenaEnv


class WallEnv(PointMassArenaEnv):
    """Point mass in two rooms joined by one door; success within 0.15 m of the goal."""

    layout = (
        "###########",
        "#....#....#",
        "#....#....#",
        "#.........#",
        "#.........#",
        "#....#....#",
        "#....#....#",
        "#....#....#",
        "#....#....#",
        "#....#....#",
        "###########",
    )
    cell = 0.25
    agent_radius = 0.08
    max_speed = 1.0
    success_radius = 0.15
