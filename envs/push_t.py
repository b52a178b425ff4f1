"""PushT: a round pusher pushes a T-shaped block to a goal pose on a table, seen from above.

Geometry (metres): the arena is a 2 x 2 m square inside dark walls. The T is a bar 0.5 x 0.12 and a stem
0.12 x 0.38 in one body whose origin (near the centre of mass) lies on the stem axis, 0.04 m below the bar; the
block (1.06 kg) moves on slide x, slide y and hinge z joints. Table friction is viscous joint damping, 20 N per
m/s and 0.3 N m per rad/s: a released block stops with a time constant of about 0.05 s (it coasts < 5 cm from
full speed). The pusher is a 0.06 m radius cylinder on two slide joints driven by velocity actuators (gain 200
N per m/s, force capped at 40 N, so it pushes the block at ~0.9 of the commanded speed): an action `a (2,)` in
[-1, 1] asks for velocity `a * max_speed` (1 m/s). Zero gravity, implicit-fast integration; one env step is
0.1 s (10 physics steps of 0.01 s). The top-down orthographic camera "top" sees the arena edge to edge.

qpos = (pusher x, pusher y, block x, block y, block angle); state = `[qpos (5), qvel (5), warm start (5)]`
(the hinge angle is not wrapped: it counts whole turns). proprio = pusher `(x, y, vx, vy)`.
Starts and goals: a block pose in the central region (x, y in [-0.45, 0.45], angle in [-pi, pi)) and a pusher
position at least 5 cm clear of it. Goals are states; only the block pose counts:
  success  = block position error < 0.08 m (4% of the arena width, DINO-WM's 20 of 512 px)
             AND wrapped angle error < pi/9 (DINO-WM's threshold);
  distance = position error (m) + 0.25 m/rad * wrapped angle error (rad), so that both success thresholds
             weigh about the same (0.08 m vs 0.25 * pi/9 = 0.087 m). The env reward is -distance.
"""

from __future__ import annotations

import numpy as np

from envs.base import VISUAL_XML, MujocoImageEnv

# T geometry in the block frame: (centre x, centre y, half width, half height) of each box, metres.
T_BOXES = ((0.0, 0.10, 0.25, 0.06), (0.0, -0.15, 0.06, 0.19))
# The same T as its outline `(8, 2)`, counter-clockwise, metres.
T_OUTLINE = np.array(
    [
        (-0.25, 0.16),
        (-0.25, 0.04),
        (-0.06, 0.04),
        (-0.06, -0.34),
        (0.06, -0.34),
        (0.06, 0.04),
        (0.25, 0.04),
        (0.25, 0.16),
    ]
)


def wrap_angle(a) -> np.ndarray:
    """Angle(s) in radians wrapped into [-pi, pi); any shape."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def block_pose(state) -> tuple[float, float, float]:
    """Block `(x, y, theta)` (metres, metres, radians wrapped into [-pi, pi)) of a PushT state `(15,)`."""
    state = np.asarray(state)
    return float(state[2]), float(state[3]), float(wrap_angle(state[4]))


def pose_error(state, goal) -> tuple[float, float]:
    """`(position error in metres, |wrapped angle error| in radians)` of the block between two states `(15,)`."""
    x, y, th = block_pose(state)
    gx, gy, gth = block_pose(goal)
    return float(np.hypot(gx - x, gy - y)), float(abs(wrap_angle(gth - th)))


def t_distance(points, pose) -> np.ndarray:
    """Distance (m) from world `points (N, 2)` to the T at block `pose (x, y, theta)`; 0 inside it."""
    x, y, th = pose
    c, s = np.cos(th), np.sin(th)
    rel = np.atleast_2d(points) - (x, y)
    local = np.stack([rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c], axis=1)
    dists = []
    for cx, cy, hx, hy in T_BOXES:
        out = np.maximum(np.abs(local - (cx, cy)) - (hx, hy), 0.0)
        dists.append(np.hypot(out[:, 0], out[:, 1]))
    return np.min(dists, axis=0)


class PushTEnv(MujocoImageEnv):
    """Push the T to the goal pose. Observations `{"rgb": (H, W, 3) uint8, "proprio": (4,) float32}`."""

    action_dim = 2
    proprio_dim = 4
    n_substeps = 10  # 10 x 0.01 s = 0.1 s per env step
    half_arena = 1.0  # inner half width of the walled arena, m
    pusher_radius = 0.06
    max_speed = 1.0  # pusher speed at |action| = 1, m/s
    block_region = 0.45  # sampled block positions lie in [-0.45, 0.45]^2
    block_reach = 0.35  # radius (m) of the circle around the block origin that contains the whole T
    success_pos = 0.08  # m
    success_angle = np.pi / 9  # rad
    angle_weight = 0.25  # m per rad in goal_distance

    # ------------------------------------------------------------------------------------ task
    def _sample_block_pose(self) -> np.ndarray:
        xy = self.np_random.uniform(-self.block_region, self.block_region, size=2)
        return np.array([xy[0], xy[1], self.np_random.uniform(-np.pi, np.pi)])

    def _sample_pusher(self, pose: np.ndarray) -> np.ndarray:
        """A pusher position inside the arena at least 0.05 m clear of the T at `pose`."""
        lim = self.half_arena - self.pusher_radius - 0.02
        while True:
            xy = self.np_random.uniform(-lim, lim, size=2)
            if t_distance(xy, pose)[0] > self.pusher_radius + 0.05:
                return xy

    def _sample_state(self) -> np.ndarray:
        pose = self._sample_block_pose()
        return self._state_from_qpos(np.concatenate([self._sample_pusher(pose), pose]))

    def _sample_goal(self) -> np.ndarray:
        return self._sample_state()  # drawn like a start; the goal's pusher position is not judged

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * self.max_speed

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]])

    def goal_distance(self, state, goal) -> float:
        pos_err, ang_err = pose_error(state, goal)
        return pos_err + self.angle_weight * ang_err

    def is_success(self, state, goal) -> bool:
        pos_err, ang_err = pose_error(state, goal)
        return pos_err < self.success_pos and ang_err < self.success_angle

    # ------------------------------------------------------------------------------------ scene
    def _xml(self) -> str:
        h, t = self.half_arena, 0.1  # arena half width, wall thickness
        walls = "".join(
            f'<geom type="box" pos="{x} {y} 0.05" size="{sx} {sy} 0.05" material="wall"/>'
            for x, y, sx, sy in (
                (h + t, 0, t, h + 2 * t),
                (-h - t, 0, t, h + 2 * t),
                (0, h + t, h, t),
                (0, -h - t, h, t),
            )
        )
        boxes = "".join(  # 10 kg/m^2 of T: 0.6 kg bar, 0.46 kg stem
            f'<geom type="box" pos="{cx} {cy} 0.05" size="{hx} {hy} 0.05" mass="{hx * hy * 40:.4f}" material="block"/>'
            for cx, cy, hx, hy in T_BOXES
        )
        r, kv, fmax = self.pusher_radius, 200.0, 40.0  # servo gain N/(m/s), force cap N
        return f"""
<mujoco model="PushT">
  <option timestep="0.01" gravity="0 0 0" integrator="implicitfast"/>
  {VISUAL_XML}
  <default><geom friction="0.5 0 0" condim="3"/></default>
  <asset>
    <material name="table" rgba="0.9 0.9 0.85 1"/>
    <material name="wall" rgba="0.2 0.2 0.25 1"/>
    <material name="block" rgba="0.35 0.45 0.75 1"/>
    <material name="pusher" rgba="0.9 0.15 0.1 1"/>
  </asset>
  <worldbody>
    <camera name="top" pos="0 0 5" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="{2 * h + 0.08}"/>
    <geom name="table" type="plane" size="{h + 2 * t} {h + 2 * t} 0.1" material="table" contype="0" conaffinity="0"/>
    {walls}
    <body name="pusher" pos="0 0 0">
      <joint name="pusher_x" type="slide" axis="1 0 0"/>
      <joint name="pusher_y" type="slide" axis="0 1 0"/>
      <geom name="pusher" type="cylinder" pos="0 0 0.06" size="{r} 0.06" mass="1" material="pusher"/>
    </body>
    <body name="block" pos="0 0 0">
      <joint name="block_x" type="slide" axis="1 0 0" damping="20"/>
      <joint name="block_y" type="slide" axis="0 1 0" damping="20"/>
      <joint name="block_angle" type="hinge" axis="0 0 1" damping="0.3"/>
      {boxes}
    </body>
  </worldbody>
  <actuator>
    <velocity joint="pusher_x" kv="{kv}" ctrlrange="-{self.max_speed} {self.max_speed}" forcerange="-{fmax} {fmax}"/>
    <velocity joint="pusher_y" kv="{kv}" ctrlrange="-{self.max_speed} {self.max_speed}" forcerange="-{fmax} {fmax}"/>
  </actuator>
</mujoco>
"""
