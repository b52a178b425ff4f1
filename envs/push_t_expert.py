"""A scripted, noise-free PushT expert: a greedy push planner over contact points on the T's faces.

Every step it scores each candidate push (a contact point on an outer face of the T, pushed along the face's
inward normal) with a quasi-static model of the damped block: pushing the contact point `lam` metres moves the
block origin by `lam * f / (1 + k tau^2)` and turns it by `lam * k tau / (1 + k tau^2)` radians, where `f` is
the push direction, `tau = c x f` the lever arm about the block origin and `k = translational / rotational
damping`. Pushes that would bring the T near a wall, or whose contact the pusher cannot reach, are dropped. The
score is the reduction of the pose error per metre the pusher must travel (to the contact, then pushing), so the
contact it already holds wins unless another is much better. The pusher then pushes (when it is behind the
chosen contact) or drives to the contact's approach point: straight when the way is clear, otherwise along a
loop around the T (the outline grown by a clearance), in whichever direction is shorter and stays in the arena.
It stops, and steps back from the block, once the pose is within 3/4 of the success thresholds.
Stateless: `act` is a pure function of (state, goal).
"""

from __future__ import annotations

import numpy as np

from envs.push_t import T_OUTLINE, PushTEnv, t_distance, wrap_angle


def _grown_loop(clearance: float, spacing: float) -> np.ndarray:
    """Closed path `(N, 2)` at `clearance` m outside the T outline, points about `spacing` m apart."""
    corners = []
    n = len(T_OUTLINE)
    for i, v in enumerate(T_OUTLINE):
        d_in, d_out = v - T_OUTLINE[i - 1], T_OUTLINE[(i + 1) % n] - v
        n_in = np.array([d_in[1], -d_in[0]]) / np.linalg.norm(d_in)  # outward normals of the two edges
        n_out = np.array([d_out[1], -d_out[0]]) / np.linalg.norm(d_out)
        if d_in[0] * d_out[1] - d_in[1] * d_out[0] > 0:  # convex corner: round it
            a0 = np.arctan2(n_in[1], n_in[0])
            a1 = a0 + wrap_angle(np.arctan2(n_out[1], n_out[0]) - a0)
            corners += [v + clearance * np.array([np.cos(a), np.sin(a)]) for a in np.linspace(a0, a1, 5)]
        else:  # inner corner: the grown edges meet
            corners.append(v + clearance * (n_in + n_out))
    corners = np.array(corners + corners[:1])
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(corners, axis=0), axis=1))])
    s = np.linspace(0.0, length[-1], int(length[-1] / spacing), endpoint=False)
    return np.stack([np.interp(s, length, corners[:, 0]), np.interp(s, length, corners[:, 1])], axis=1)


class PushTExpert:
    """Scripted pusher for `PushTEnv`. `act(state (15,), goal (15,)) -> action (2,) float32 in [-1, 1]`."""

    gap = 0.03  # m between pusher and face at the approach point
    clearance = 0.04  # m between pusher and T on the loop around it
    max_push = 0.08  # m of pushing considered per decision
    wall_margin = 0.15  # m of free table the expert tries to keep between the T and the walls
    angle_weight = 0.3  # m per rad in the expert's own pose error
    done_pos, done_angle = 0.06, 0.25  # m, rad: close enough (3/4 of the success thresholds), stop pushing

    def __init__(self, env: PushTEnv):
        self.radius = env.pusher_radius
        self.step_len = env.max_speed * env.control_dt  # m the pusher moves in one step at |action| = 1
        self.half_arena = env.half_arena
        self.limit = env.half_arena - env.pusher_radius - 0.01  # pusher centre stays within +-limit
        damping = env.model.dof_damping[2:]  # block x, y, angle joints
        self.k = damping[0] / damping[2]  # 1/m^2
        points, normals = [], []
        for i, start in enumerate(T_OUTLINE):
            edge = T_OUTLINE[(i + 1) % len(T_OUTLINE)] - start
            length = np.linalg.norm(edge)
            for t in np.arange(0.02, length - 0.019, 0.03):
                points.append(start + edge * t / length)
                normals.append(np.array([-edge[1], edge[0]]) / length)  # inward normal
        points, normals = np.array(points), np.array(normals)
        # keep contacts whose approach point leaves room for the pusher (not wedged into the T's inner corners)
        approach = points - normals * (self.radius + self.gap)
        free = t_distance(approach, (0.0, 0.0, 0.0)) > self.radius + self.gap - 1e-6
        self.points, self.normals = points[free], normals[free]  # (K, 2) block frame
        self.spacing = 0.02
        self.loop = _grown_loop(self.radius + self.clearance, self.spacing)  # (N, 2) block frame

    def act(self, state, goal) -> np.ndarray:
        state, goal = np.asarray(state, np.float64), np.asarray(goal, np.float64)
        pusher, pose = state[:2], state[2:5]
        d = goal[2:4] - pose[:2]
        e = float(wrap_angle(goal[4] - pose[2]))
        if np.linalg.norm(d) < self.done_pos and abs(e) < self.done_angle:
            return self._retreat(pusher, pose)
        rot = _rotation(pose[2])
        c, f = self.points @ rot.T, self.normals @ rot.T  # (K, 2) contacts (from the block origin), directions
        tau = c[:, 0] * f[:, 1] - c[:, 1] * f[:, 0]
        gain = 1.0 / (1.0 + self.k * tau**2)
        effect = np.concatenate([f * gain[:, None], (self.angle_weight * self.k * tau * gain)[:, None]], axis=1)
        contact = pose[:2] + c
        approach = contact - f * (self.radius + self.gap)
        # where the pusher sits relative to each contact: along the push line (behind = positive) and across it
        rel = contact - pusher
        behind = np.sum(rel * f, axis=1)
        across = np.abs(rel[:, 0] * f[:, 1] - rel[:, 1] * f[:, 0])
        holding = (across < 0.03) & (behind > self.radius - 0.02) & (behind < self.radius + self.gap + 0.05)
        travel, moves = self._route(pusher, approach, pose)
        travel = np.where(holding, 0.0, travel)
        score, lam = self._score(np.array([d[0], d[1], self.angle_weight * e]), effect, travel, pose)
        if not np.isfinite(score.max()):  # stuck (e.g. against a wall): bring the T back toward the middle
            score, lam = self._score(np.array([-pose[0], -pose[1], 0.0]), effect, travel, pose, slide=True)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            return self._retreat(pusher, pose)
        if holding[best]:
            speed = np.clip(lam[best] / (1.5 * self.step_len), 0.1, 1.0)
            side = rel[best] - f[best] * behind[best]  # sideways offset of the contact from the pusher
            velocity = f[best] * speed + side / self.step_len
        else:
            velocity = moves[best] / self.step_len
        return _unit_box(velocity)

    def _score(
        self, error: np.ndarray, effect: np.ndarray, travel: np.ndarray, pose, slide: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Error reduction per metre of pusher motion `(K,)` (-inf if infeasible) and push lengths `(K,)` m.

        `error (3,)` = (dx, dy, angle_weight * dtheta) still to go; `effect (K, 3)` = its change per metre pushed.
        The T should keep `wall_margin` m from the walls (room for the pusher to get behind it): pushes that
        would bring its corners closer to a wall than they are are dropped. With `slide`, motion toward a wall
        the T is already near is taken as blocked (it slides along or pivots on it) and the overlap is not checked.
        """
        band = self.half_arena - self.wall_margin
        corners = _corners(pose[None])[0]  # (8, 2)
        if slide:
            effect = effect.copy()
            effect[:, :2] = np.where(corners.min(axis=0) < -band, np.maximum(effect[:, :2], 0.0), effect[:, :2])
            effect[:, :2] = np.where(corners.max(axis=0) > band, np.minimum(effect[:, :2], 0.0), effect[:, :2])
        lam = np.clip(effect @ error / np.maximum(np.sum(effect**2, axis=1), 1e-9), 0.0, self.max_push)
        reduction = 2 * lam * (effect @ error) - lam**2 * np.sum(effect**2, axis=1)
        moved = pose + lam[:, None] * effect * np.array([1.0, 1.0, 1.0 / self.angle_weight])  # (K, 3)
        overlap_now = max(np.abs(corners).max() - band, 0.0)
        inside = slide | (np.abs(_corners(moved)).max(axis=(1, 2)) - band <= overlap_now + 1e-3)
        ok = (reduction > 0) & np.isfinite(travel) & inside
        return np.where(ok, reduction / (travel + lam + 0.05), -np.inf), lam

    # -------------------------------------------------------------------------------- navigation
    def _route(self, pusher: np.ndarray, targets: np.ndarray, pose) -> tuple[np.ndarray, np.ndarray]:
        """Path length (m, inf if unreachable) `(K,)` to each of `targets (K, 2)` and the first move `(K, 2)`.

        Straight when the segment keeps clear of the T; otherwise along the loop around it, in the shorter of
        the two directions that stays inside the arena (the first 0.15 m may leave it: the pusher is already there).
        """
        segment = pusher + np.linspace(0.0, 1.0, 12)[:, None, None] * (targets - pusher)  # (12, K, 2)
        clear = np.all(t_distance(segment.reshape(-1, 2), pose).reshape(12, -1) > self.radius + 0.005, axis=0)
        straight = np.linalg.norm(targets - pusher, axis=1)
        loop = pose[:2] + self.loop @ _rotation(pose[2]).T  # (N, 2)
        n = len(loop)
        start = int(np.argmin(np.linalg.norm(loop - pusher, axis=1)))
        ends = np.argmin(np.linalg.norm(loop[None] - targets[:, None], axis=2), axis=1)  # (K,)
        outside = np.any(np.abs(loop) > self.limit, axis=1)
        skip = int(0.15 / self.spacing)
        best_len, best_move = np.full(len(targets), np.inf), np.zeros_like(targets)
        for direction in (1, -1):
            steps = (direction * (ends - start)) % n  # (K,) loop points to walk
            order = outside[(start + direction * np.arange(n)) % n]  # outside flags in walking order
            blocked_before = np.cumsum(order & (np.arange(n) >= skip))  # (N,) blocked points up to each step
            length = (
                np.linalg.norm(loop[start] - pusher)
                + steps * self.spacing
                + np.linalg.norm(targets - loop[ends], axis=1)
            )
            length = np.where(blocked_before[steps] > 0, np.inf, length)
            ahead = loop[(start + direction * np.minimum(steps, 5)) % n]
            better = length < best_len
            best_move = np.where(better[:, None], ahead - pusher, best_move)
            best_len = np.where(better, length, best_len)
        best_len = np.where(clear, straight, best_len)
        best_move = np.where(clear[:, None], targets - pusher, best_move)
        return best_len, best_move

    def _retreat(self, pusher: np.ndarray, pose) -> np.ndarray:
        """Keep at least 0.12 m of table between pusher and T (so noise cannot bump the block); else stand still."""
        if t_distance(pusher, pose)[0] > self.radius + 0.12:
            return np.zeros(2, np.float32)
        probes = pusher + np.array([[1e-3, 0.0], [-1e-3, 0.0], [0.0, 1e-3], [0.0, -1e-3]])
        dist = t_distance(probes, pose)
        away = np.array([dist[0] - dist[1], dist[2] - dist[3]])  # gradient of the distance to the T
        inward = np.abs(pusher) > self.limit - 0.05  # near a wall: do not back into it
        away[inward & (away * pusher > 0)] = 0.0
        return _unit_box(0.5 * away / max(np.linalg.norm(away), 1e-9))


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _corners(poses: np.ndarray) -> np.ndarray:
    """World coordinates `(K, 8, 2)` (m) of the T's outline corners at block `poses (K, 3)`."""
    cos, sin = np.cos(poses[:, 2:3]), np.sin(poses[:, 2:3])  # (K, 1)
    x = poses[:, :1] + cos * T_OUTLINE[:, 0] - sin * T_OUTLINE[:, 1]  # (K, 8)
    y = poses[:, 1:2] + sin * T_OUTLINE[:, 0] + cos * T_OUTLINE[:, 1]
    return np.stack([x, y], axis=2)


def _unit_box(velocity: np.ndarray) -> np.ndarray:
    """Scale a desired velocity (in max-speed units) into the action box, keeping its direction."""
    return np.clip(velocity / max(1.0, np.linalg.norm(velocity)), -1.0, 1.0).astype(np.float32)
