"""The MuJoCo simulator inside a gymnasium env: found, its state saved and restored, and rendered at a chosen size.

`find_simulator(env)` looks for an `(MjModel, MjData)` pair as `.model`/`.data` on `env.unwrapped` (gymnasium's
`MujocoEnv`), or one attribute further down (`SIM_ATTRIBUTES`: `.sim`, `.env`, `.physics`, ...) for wrapper-style
envs whose `unwrapped` holds the simulator instead of being one.
States are float64 `[qpos, qvel, act, qacc_warmstart]`, `(nq + 2 nv + na,)` (`act` is empty in gymnasium's stock
envs, so the layout matches the built-ins'), then `[mocap_pos, mocap_quat]` `(7 nmocap,)` for models with mocap
bodies (arms driven by a mocap target, common in manipulation suites: without it a restored state drifted 2.2 cm in
10 steps): restoring one reproduces the next frames exactly (without the solver warm start a restored trajectory
drifts by ~1e-16). `restore_drift` checks that on a live env.
`SimRenderer` draws `(S, S, 3)` uint8 frames with `mujoco.Renderer` from the env's own camera (the `mujoco_renderer`
settings of the object holding the simulator), a named/numbered one, or a free camera given as gymnasium's
`default_camera_config` dict (`distance`, `elevation`, `azimuth`, `lookat`), with or without shadows: gymnasium
renders at its own size (480 px) with shadows, which costs ~40x more per frame than 64 px without on the CPU renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.mujoco_import import load_mujoco
from wm.errors import WMError

mujoco = load_mujoco()

SIM_ATTRIBUTES = ("sim", "env", "physics", "_env", "simulator", "_sim")
"""Attributes of `env.unwrapped` searched for a `.model`/`.data` simulator when `unwrapped` is not one itself."""


@dataclass
class Simulator:
    """A model and its data, the object holding them and where it was found (e.g. `env.unwrapped.sim`)."""

    model: mujoco.MjModel
    data: mujoco.MjData
    owner: object
    where: str

    @property
    def state_dim(self) -> int:
        return self.model.nq + 2 * self.model.nv + self.model.na + 7 * self.model.nmocap

    def get_state(self) -> np.ndarray:
        """`(nq + 2 nv + na + 7 nmocap,)` float64: qpos, qvel, act, qacc_warmstart, mocap_pos, mocap_quat."""
        d = self.data
        parts = [d.qpos, d.qvel, d.act, d.qacc_warmstart, d.mocap_pos.reshape(-1), d.mocap_quat.reshape(-1)]
        return np.concatenate(parts).astype(np.float64)

    def set_state(self, state) -> None:
        """Restore a vector from `get_state` (then `mj_forward`, so positions derived from it are current)."""
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (self.state_dim,) or not np.all(np.isfinite(state)):
            raise WMError(
                f"state must be {self.state_dim} finite numbers for the simulator at {self.where}, got {state.size}; "
                "pass a vector from env.get_state()"
            )
        nq, nv, na, nm = self.model.nq, self.model.nv, self.model.na, self.model.nmocap
        d = self.data
        d.qpos[:], d.qvel[:] = state[:nq], state[nq : nq + nv]
        d.act[:], d.qacc_warmstart[:] = state[nq + nv : nq + nv + na], state[nq + nv + na : nq + 2 * nv + na]
        mocap = state[nq + 2 * nv + na :]
        d.mocap_pos[:], d.mocap_quat[:] = mocap[: 3 * nm].reshape(nm, 3), mocap[3 * nm :].reshape(nm, 4)
        mujoco.mj_forward(self.model, d)

    def qpos(self, state) -> np.ndarray:
        """The positions `(nq,)` of a state vector."""
        return np.asarray(state, dtype=np.float64).reshape(-1)[: self.model.nq]


def restore_drift(env, action, steps: int = 2) -> float:
    """How far (max abs over the state) `steps` steps of `action` from a state restored with `env.set_state` end
    from the same steps taken from that state live: 0 when the state holds everything the dynamics read. `env` has
    `get_state`, `set_state` and `step`; it is left in the restored state's future."""
    start = env.get_state()
    for _ in range(steps):
        env.step(action)
    live = env.get_state()
    env.set_state(start)
    for _ in range(steps):
        env.step(action)
    return float(np.max(np.abs(env.get_state() - live)))


def _pair(obj) -> tuple[mujoco.MjModel, mujoco.MjData, object] | None:
    model, data = getattr(obj, "model", None), getattr(obj, "data", None)
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data, obj
    return None


def find_simulator(env: gym.Env) -> Simulator | None:
    """The MuJoCo simulator of `env` (on `env.unwrapped`, or one of its `SIM_ATTRIBUTES`), or None."""
    raw = env.unwrapped
    found = _pair(raw)
    if found is not None:
        return Simulator(*found, where="env.unwrapped")
    for name in SIM_ATTRIBUTES:
        found = _pair(getattr(raw, name, None))
        if found is not None:
            return Simulator(*found, where=f"env.unwrapped.{name}")
    return None


def _camera(sim: Simulator, camera: str | int | dict | None) -> mujoco.MjvCamera:
    """`camera` (a name or id in the model) as a fixed camera; a dict: a free camera with those settings over
    gymnasium's framing of the scene; None: the env's own camera (its `mujoco_renderer.camera_id` and
    `default_cam_config`)."""
    cam = mujoco.MjvCamera()
    if camera is None or isinstance(camera, dict):
        cam.lookat[:] = np.median(sim.data.geom_xpos, axis=0)  # framed as gymnasium's viewer frames it
        cam.distance = sim.model.stat.extent
        own = getattr(sim.owner, "mujoco_renderer", None) if camera is None else None
        settings = camera if camera is not None else getattr(own, "default_cam_config", None) or {}
        for key, value in settings.items():
            if not hasattr(cam, key):
                raise WMError(f"camera setting {key!r} is not a free-camera setting; use distance, elevation, "
                              "azimuth or lookat")  # fmt: skip
            if key == "lookat":
                cam.lookat[:] = value
            else:
                setattr(cam, key, value)
        camera_id = getattr(own, "camera_id", -1)
        camera_id = -1 if camera_id is None else camera_id
    elif isinstance(camera, str):
        camera_id = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    else:
        camera_id = int(camera)
    if isinstance(camera, str | int) and not 0 <= camera_id < sim.model.ncam:
        names = [sim.model.camera(i).name for i in range(sim.model.ncam)]
        raise WMError(f"camera {camera!r} is not in the model (cameras: {names or 'none'}); pass one of them or None")
    if camera_id >= 0:
        cam.type, cam.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, camera_id
    return cam


SMALL_FRAME = 128
"""Frames up to this size are drawn without multisample anti-aliasing and reflections unless asked for: at 64 px
they cost an arm suite's frame 27 ms against 6.4 ms without, and the pixels a model sees barely change."""


class SimRenderer:
    """Square frames `(size, size, 3)` uint8 of a simulator from one camera, shadows on or off; `antialias` (the
    model's `vis.quality.offsamples`, shared with any other renderer of the model) and `reflections` default to on
    above `SMALL_FRAME` px only."""

    def __init__(self, sim: Simulator, size: int, camera: str | int | dict | None = None, shadows: bool = False,
                 antialias: bool | None = None, reflections: bool | None = None):  # fmt: skip
        self.sim = sim
        self.camera = _camera(sim, camera)
        large = size > SMALL_FRAME
        vis = sim.model.vis
        vis.global_.offwidth, vis.global_.offheight = max(vis.global_.offwidth, size), max(vis.global_.offheight, size)
        if not (large if antialias is None else antialias):
            vis.quality.offsamples = 0
        self.renderer = mujoco.Renderer(sim.model, size, size)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = large if reflections is None else reflections

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.sim.data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()
