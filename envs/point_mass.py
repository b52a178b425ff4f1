"""A point mass moving in a walled grid arena: the shared body of PointMaze and Wall.

The arena is a character grid (`#` wall, `.` free) of square cells `cell` metres wide, centred on the origin.
The agent is a sphere on two slide joints driven by velocity actuators: an action `a (2,)` in [-1, 1] asks for
velocity `a * max_speed` m/s. proprio = `(x, y, vx, vy)`; state = `[qpos (2), qvel (2), warm start (2)]`.
Goals are states; success = agent within `success_radius` metres of the goal position.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from envs.base import VISUAL_XML, MujocoImageEnv


class PointMassArenaEnv(MujocoImageEnv):
    """Subclasses set `layout` (list of strings), `cell`, `success_radius`, `max_speed`."""

    layout: tuple[str, ...] = ()
    cell: float = 1.0
    success_radius: float = 0.5
    max_speed: float = 2.0
    agent_radius: float = 0.15
    n_substeps = 10  # 10 x 0.01 s = 0.1 s per env step

    def __init__(self, image_size: int = 64, render_mode: str | None = "rgb_array"):
        rows = len(self.layout)
        cols = len(self.layout[0])
        self._rows, self._cols = rows, cols
        self._free = np.array([[ch != "#" for ch in row] for row in self.layout], dtype=bool)
        super().__init__(image_size=image_size, render_mode=render_mode)

    # --------------------------------------------------------------------------------- geometry
    def cell_center(self, r: int, c: int) -> np.ndarray:
        """Centre `(x, y)` of grid cell (row r, column c); row 0 is the top of the image (+y)."""
        x = (c - (self._cols - 1) / 2) * self.cell
        y = ((self._rows - 1) / 2 - r) * self.cell
        return np.array([x, y])

    def cell_of(self, xy) -> tuple[int, int]:
        """Grid cell containing point `xy (2,)` (clamped to the grid)."""
        c = int(np.clip(np.floor(xy[0] / self.cell + self._cols / 2), 0, self._cols - 1))
        r = int(np.clip(np.floor(self._rows / 2 - xy[1] / self.cell), 0, self._rows - 1))
        return r, c

    def free_cells(self) -> list[tuple[int, int]]:
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(self._free), strict=True)]

    def shortest_path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Cells from `start` to `goal` inclusive (4-connected breadth-first search over free cells)."""
        parent = {start: start}
        queue = deque([start])
        while queue:
            cur = queue.popleft()
            if cur == goal:
                break
            r, c = cur
            for nxt in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nxt[0] < self._rows and 0 <= nxt[1] < self._cols and self._free[nxt] and nxt not in parent:
                    parent[nxt] = cur
                    queue.append(nxt)
        if goal not in parent:
            return [start]
        path = [goal]
        while path[-1] != start:
            path.append(parent[path[-1]])
        return path[::-1]

    def _sample_free_xy(self) -> np.ndarray:
        """A uniformly random agent position inside a random free cell, clear of the walls."""
        cells = self.free_cells()
        r, c = cells[self.np_random.integers(len(cells))]
        margin = self.cell / 2 - self.agent_radius - 0.02
        return self.cell_center(r, c) + self.np_random.uniform(-margin, margin, size=2)

    # ------------------------------------------------------------------------------------ task
    def _sample_state(self) -> np.ndarray:
        return self._state_from_qpos(self._sample_free_xy())

    def _sample_goal(self) -> np.ndarray:
        return self._state_from_qpos(self._sample_free_xy())

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * self.max_speed

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]])

    def goal_distance(self, state, goal) -> float:
        return float(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal)[:2]))

    def is_success(self, state, goal) -> bool:
        return self.goal_distance(state, goal) < self.success_radius

    # ------------------------------------------------------------------------------------ scene
    def _xml(self) -> str:
        half_w = self._cols * self.cell / 2
        half_h = self._rows * self.cell / 2
        walls = []
        for r, row in enumerate(self.layout):
            for c, ch in enumerate(row):
                if ch == "#":
                    x, y = self.cell_center(r, c)
                    walls.append(
                        f'<geom type="box" pos="{x} {y} {self.cell / 2}" size="{self.cell / 2} {self.cell / 2} '
                        f'{self.cell / 2}" material="wall"/>'
                    )
        extent = max(half_w, half_h) - 0.75 * self.cell  # crop most of the outer border out of view
        kv = 8.0  # velocity-servo gain: reaches the commanded speed within a few substeps
        return f"""
<mujoco model="{type(self).__name__}">
  <option timestep="0.01" gravity="0 0 0"/>
  {VISUAL_XML}
  <asset>
    <material name="floor" rgba="0.85 0.85 0.8 1"/>
    <material name="wall" rgba="0.25 0.3 0.45 1"/>
    <material name="agent" rgba="0.9 0.2 0.15 1"/>
  </asset>
  <worldbody>
    <camera name="top" pos="0 0 {extent * 4 + 1}" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="{2 * extent}"/>
    <geom name="floor" type="plane" size="{half_w} {half_h} 0.1" material="floor" contype="0" conaffinity="0"/>
    {"".join(walls)}
    <body name="agent" pos="0 0 {self.agent_radius}">
      <joint name="x" type="slide" axis="1 0 0" damping="0.5"/>
      <joint name="y" type="slide" axis="0 1 0" damping="0.5"/>
      <geom name="agent" type="sphere" size="{self.agent_radius}" mass="1" material="agent" friction="0.1 0 0"/>
    </body>
  </worldbody>
  <actuator>
    <velocity joint="x" kv="{kv}" ctrlrange="-{self.max_speed} {self.max_speed}"/>
    <velocity joint="y" kv="{kv}" ctrlrange="-{self.max_speed} {self.max_speed}"/>
  </actuator>
</mujoco>
"""
