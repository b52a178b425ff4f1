"""GymImageAdapter: the engine's observation contract over stock gymnasium envs and small fake ones."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.adapter import GymImageAdapter
from wm.errors import WMError


class FakeEnv(gym.Env):
    """A 1-D walker that records the actions it receives and renders a 40 x 60 frame with white side bands."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, action_space: gym.Space | None = None, render_mode: str | None = "rgb_array"):
        low = np.array([0.0, -3.0, -np.inf], np.float32)
        high = np.array([10.0, 5.0, np.inf], np.float32)
        self.action_space = action_space or gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.render_mode = render_mode
        self.received: list[np.ndarray] = []
        self.pos = 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = float(self.np_random.uniform(-1.0, 1.0))
        return np.array([self.pos]), {}

    def step(self, action):
        self.received.append(np.array(action))
        self.pos += 0.1
        return np.array([self.pos]), 1.0, self.pos > 1.0, False, {"raw": True}

    def render(self):
        frame = np.zeros((40, 60, 3), np.uint8)
        frame[:, :10] = 255
        frame[:, 50:] = 255
        frame[:, 10:50, 1] = 100
        return frame


def fake_hooks() -> dict:
    """State hooks for FakeEnv: state = `(pos,)` float64."""
    return {
        "get_state": lambda env: np.array([env.unwrapped.pos]),
        "set_state": lambda env, s: setattr(env.unwrapped, "pos", float(s[0])),
    }


def frames_after(adapter: GymImageAdapter, actions: np.ndarray) -> list[np.ndarray]:
    return [adapter.step(a)[0]["rgb"] for a in actions]


def test_check_env_passes_on_stock_mujoco_env():
    adapter = GymImageAdapter("InvertedPendulum-v5", image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite proprio bounds and "no spec" are expected warnings
        check_env(adapter)
    adapter.close()


def test_observations_follow_the_contract():
    adapter = GymImageAdapter("Reacher-v5", image_size=48)
    obs, info = adapter.reset(seed=0)
    assert obs["rgb"].shape == (48, 48, 3) and obs["rgb"].dtype == np.uint8
    assert obs["proprio"].shape == (10,) and obs["proprio"].dtype == np.float32
    assert obs in adapter.observation_space
    assert adapter.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs, reward, terminated, truncated, info = adapter.step(np.zeros(2, np.float32))
    assert obs in adapter.observation_space
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert info["success"] is False and info["state"].dtype == np.float64
    assert "reward_dist" in info  # the wrapped env's info is passed through
    np.testing.assert_array_equal(adapter.render(), obs["rgb"])
    assert obs["rgb"].std() > 0  # a real picture, not a blank EGL buffer
    adapter.close()


def test_actions_map_onto_the_wrapped_bounds():
    fake = FakeEnv()
    adapter = GymImageAdapter(fake)
    adapter.reset(seed=0)
    for action in ([1, 1, 1], [-1, -1, -1], [0, 0, 0.5], [7, -7, -7]):
        adapter.step(np.array(action, np.float32))
    np.testing.assert_array_equal(
        np.stack(fake.received), [[10, 5, 1], [0, -3, -1], [5, 1, 0.5], [10, -3, -1]]
    )  # last row: out-of-range actions are clipped to [-1, 1] first; the infinite dim passes through
    assert fake.received[0].dtype == np.float32


def test_plus_one_drives_a_mujoco_actuator_to_its_high_bound():
    adapter = GymImageAdapter("InvertedPendulum-v5", image_size=32)
    adapter.reset(seed=0)
    adapter.step(np.ones(1, np.float32))
    assert adapter.env.unwrapped.data.ctrl[0] == adapter.env.action_space.high[0] == 3.0
    adapter.close()


def test_invalid_actions_raise():
    adapter = GymImageAdapter(FakeEnv())
    adapter.reset(seed=0)
    with pytest.raises(WMError, match="NaN or inf"):
        adapter.step(np.array([0.0, np.nan, 0.0]))
    with pytest.raises(WMError, match="expected 3"):
        adapter.step(np.zeros(2))


def test_state_round_trip_reproduces_the_next_frames_exactly():
    adapter = GymImageAdapter("Reacher-v5", image_size=32)
    adapter.reset(seed=1)
    rng = np.random.default_rng(0)
    for a in rng.uniform(-1, 1, (5, 2)):
        proprio = adapter.step(a)[0]["proprio"]
    state = adapter.get_state()
    actions = rng.uniform(-1, 1, (3, 2))
    expected = frames_after(adapter, actions)
    end_state = adapter.get_state()

    obs, info = adapter.reset(seed=99, options={"state": state})
    np.testing.assert_array_equal(info["state"], state)
    # read after restoring, not from the seed-99 reset; not bit-equal because mj_step leaves body positions
    # (the fingertip offset in the obs) one substep stale, while set_state's mj_forward refreshes them
    np.testing.assert_allclose(obs["proprio"], proprio, atol=1e-4)
    for got, want in zip(frames_after(adapter, actions), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(adapter.get_state(), end_state)
    adapter.close()


def test_same_seed_gives_the_same_frames():
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 2))
    runs = []
    for seed in (7, 7, 8):
        adapter = GymImageAdapter("Reacher-v5", image_size=32)
        first = adapter.reset(seed=seed)[0]["rgb"]
        runs.append([first, *frames_after(adapter, actions)])
        adapter.close()
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))
    assert not np.array_equal(np.stack(runs[0]), np.stack(runs[2]))  # the target moves with the seed


def test_frames_are_centre_cropped_to_a_square():
    adapter = GymImageAdapter(FakeEnv(), image_size=40)
    obs, _ = adapter.reset(seed=0)
    assert obs["rgb"].shape == (40, 40, 3)
    assert (obs["rgb"][..., 1] == 100).all()  # the white 10-pixel side bands of the 40 x 60 frame are cut off
    small = GymImageAdapter(FakeEnv(), image_size=20).reset(seed=0)[0]["rgb"]
    assert small.shape == (20, 20, 3) and (small[..., 1] == 100).all()


def test_custom_proprio_and_success_hooks_are_used():
    seen = []

    def is_success(state, goal):
        seen.append(goal)
        return state[0] > goal

    proprio_fn = lambda env, o: [o[0], 2 * o[0]]  # noqa: E731
    adapter = GymImageAdapter(FakeEnv(), proprio_fn=proprio_fn, is_success=is_success, **fake_hooks())
    assert adapter.observation_space["proprio"].shape == (2,) and adapter.has_success
    obs, info = adapter.reset(seed=0, options={"state": [0.5], "goal": 0.55})
    assert adapter.env.unwrapped.pos == 0.5 and adapter.goal == 0.55
    assert info["success"] is False and info["state"].tolist() == [0.5]
    obs, _, _, _, info = adapter.step(np.zeros(3))
    np.testing.assert_allclose(obs["proprio"], [0.6, 1.2], rtol=1e-6)
    assert info["success"] is True and info["raw"] is True
    assert seen == [0.55, 0.55]
    assert adapter.is_success(np.array([0.0]), 0.55) is False


def test_missing_hooks_are_explained():
    adapter = GymImageAdapter(FakeEnv())
    assert not adapter.has_success and not adapter.has_state
    _, info = adapter.reset(seed=0)
    assert info["success"] is False and "state" not in info
    with pytest.raises(WMError, match="get_state="):
        adapter.get_state()
    with pytest.raises(WMError, match="set_state="):
        adapter.reset(seed=0, options={"state": [0.0]})
    with pytest.raises(WMError, match="is_success="):
        adapter.is_success(None, None)
    with pytest.raises(WMError, match="get_state="):
        GymImageAdapter(FakeEnv(), is_success=lambda s, g: True)


def test_mujoco_state_of_the_wrong_size_raises():
    adapter = GymImageAdapter("InvertedPendulum-v5", image_size=32)
    adapter.reset(seed=0)
    with pytest.raises(WMError, match="env.get_state"):
        adapter.set_state(np.zeros(3))
    adapter.close()


def test_unsupported_envs_raise_helpful_errors():
    with pytest.raises(WMError, match='render_mode="rgb_array"'):
        GymImageAdapter(FakeEnv(render_mode=None))
    with pytest.raises(WMError, match="only continuous"):
        GymImageAdapter(FakeEnv(action_space=gym.spaces.Discrete(3)))
    with pytest.raises(WMError, match="'NoSuchEnv-v0'.*wm envs"):
        GymImageAdapter("NoSuchEnv-v0")
    with pytest.raises(WMError, match="env_kwargs only applies"):
        GymImageAdapter(FakeEnv(), env_kwargs={"width": 64})


MOCAP_ARM = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body name="target" mocap="true" pos="0.1 0 0.2"><geom size="0.01" contype="0" conaffinity="0"/></body>
    <body name="hand" pos="0 0 0.2"><freejoint/><geom type="box" size="0.02 0.02 0.02" mass="0.1"/></body>
  </worldbody>
  <equality><weld body1="target" body2="hand" solref="0.02 1"/></equality>
</mujoco>
"""


def test_mocap_targets_are_part_of_a_restored_state():
    """Issue 28 item 8: an arm driven by a mocap body was restored without its mocap position and orientation, and
    a restored state drifted 2.2 cm in 10 zero-action steps."""
    import mujoco

    from envs.mujoco_sim import Simulator, restore_drift

    model = mujoco.MjModel.from_xml_string(MOCAP_ARM)
    sim = Simulator(model, mujoco.MjData(model), owner=None, where="test")
    assert sim.state_dim == model.nq + 2 * model.nv + 7
    sim.data.mocap_pos[0] = [0.3, 0.1, 0.25]  # the target moved: the hand follows it

    class Env:  # the smallest env with state hooks: one physics step per step
        get_state, set_state = sim.get_state, sim.set_state

        def step(self, action):
            mujoco.mj_step(model, sim.data)

    env = Env()
    for _ in range(5):
        env.step(None)
    assert restore_drift(env, None, steps=10) == 0.0
    start = sim.get_state()
    sim.data.mocap_pos[0] = [0.0, 0.0, 0.0]
    sim.set_state(start)
    assert np.allclose(sim.data.mocap_pos[0], [0.3, 0.1, 0.25])
