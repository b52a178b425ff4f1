"""The README's "Extending" examples, run as the README shows them: a model family, a planner, an env and a robot,
each added from outside the engine's packages (a registry entry set with monkeypatch, a factory in this module)."""

import json
import threading
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.adapter import GymImageAdapter
from envs.controller import Controller
from envs.registry import make_env, meets_contract
from envs.robot.client import RemoteRobot
from envs.robot.guard import GuardConfig, SafetyGuard
from envs.robot.loop import ControlLoop
from envs.robot.protocol import Feature, Robot
from envs.robot.server import RobotServer
from envs.robot.sim import SimRobot
from planners.base import PlannerBase
from planners.mpc import MPCConfig, build_mpc
from planners.registry import PLANNERS, planner_from_budget
from wm.app.api import collect
from wm.app.cli import build_parser, main
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint
from wm.models.registry import FAMILIES, ModelFamily, build_world_model, family

# ------------------------------------------------------------------------------------------------ a model family
SMALL_JEPA = ModelFamily(
    "jepa-small",
    "a JEPA small enough to train in seconds",
    config="wm.models.latent_world_model:LatentWMConfig",
    model="wm.models.latent_world_model:LatentWorldModel",
    encoder="wm.models.pixel_encoder:PixelEncoder",
    defaults={
        "encoder": {"width": 32, "depth": 1, "heads": 2, "out_dim": 16},
        "predictor": {"dim": 32, "depth": 1, "heads": 2},
    },
)


@pytest.fixture
def small_jepa(monkeypatch):
    monkeypatch.setitem(FAMILIES, "jepa-small", SMALL_JEPA)


def test_a_model_family_is_one_registry_entry_that_builds_trains_and_reloads(small_jepa, tmp_path):
    model = build_world_model({"kind": "jepa-small", "image_size": 32})
    assert (model.cfg.encoder["width"], model.cfg.predictor["depth"]) == (32, 1)  # the family's defaults
    deeper = build_world_model({"kind": "jepa-small", "image_size": 32, "predictor": {"depth": 2}})
    assert (deeper.cfg.predictor["depth"], deeper.cfg.predictor["dim"]) == (2, 32)  # settings merge over them
    with pytest.raises(WMError, match="jepa-small"):
        family("jepa-huge")  # the error lists the new family beside the built-in ones

    store = collect("wm/PointMaze-v0", str(tmp_path / "data"), episodes=6, steps=16, policy="expert", workers=1,
                    image_size=32)  # fmt: skip
    settings = ["batch_size=4", "frameskip=2", "num_hist=2", "val_every=3", "val_batches=1", "warmup_steps=1"]
    out = tmp_path / "small"
    assert main(["train", "--data", store, "--model", "jepa-small", "--out", str(out), "--steps", "3", *settings]) == 0
    loaded, config = load_checkpoint(out)  # a run folder: its final checkpoint, out/model
    assert config.kind == "jepa-small" and type(loaded) is type(model)
    assert loaded.cfg.encoder["width"] == 32
    cfg = loaded.cfg
    obs = {"rgb": torch.zeros((1, 2, 32, 32, 3), dtype=torch.uint8), "proprio": torch.zeros((1, 2, cfg.proprio_dim))}
    z = loaded.encode(obs)  # (B, T, N, D): T = num_hist = 2
    block = cfg.frameskip * cfg.action_dim  # one world-model block of env actions
    future = loaded.rollout(z, torch.zeros((1, 3, block)), past_actions=torch.zeros((1, 1, block)))
    assert future.shape == (1, 3, *z.shape[2:])


# ------------------------------------------------------------------------------------------------ a planner
@dataclass(eq=False)
class RandomShooting(PlannerBase):
    """Uniform samples inside the bounds, `samples` per iteration; `PlannerBase.plan` keeps the best ever."""

    samples: int = 300
    iterations: int = 1

    BUDGET: ClassVar[dict[str, str]] = {"samples": "samples", "iterations": "iterations"}

    def begin(self, start, warm):
        return {"problems": start.shape[0]}

    def propose(self, search, iteration):
        shape = (search["problems"], self.samples, self.horizon, self.action_dim)  # (B, S, H, A)
        u = torch.rand(shape, generator=self.generator, device=self.device)
        return self.lower + u * (self.upper - self.lower)

    def update(self, search, iteration, actions, costs):
        pass  # no search distribution to move


def test_a_planner_is_one_class_and_one_registry_entry(monkeypatch):
    monkeypatch.setitem(PLANNERS, "random", RandomShooting)
    planner = planner_from_budget("random", horizon=3, action_dim=2, seed=0, samples=400, elites=30, iterations=5)
    assert isinstance(planner, RandomShooting) and (planner.samples, planner.iterations) == (400, 5)  # no elites

    target = torch.tensor([[0.5, -0.5]]).expand(3, 2)  # (H, A)
    calls = []

    def cost_fn(actions):  # (B, S, H, A) -> (B, S)
        calls.append(tuple(actions.shape))
        return ((actions - target) ** 2).sum((2, 3))

    plan = planner.plan(cost_fn, batch_size=2)
    assert plan.shape == (2, 3, 2) and bool(((plan >= -1) & (plan <= 1)).all())
    assert calls == [(2, 400, 3, 2)] * 5  # one batched call per iteration
    assert float(planner.last_costs.max()) < float(cost_fn(torch.zeros(2, 1, 3, 2)).min())  # better than doing nothing
    again = planner_from_budget("random", horizon=3, action_dim=2, seed=0, samples=400, iterations=5)
    assert torch.equal(again.plan(cost_fn, batch_size=2), plan)  # seeded

    model = build_world_model({"kind": "jepa", "image_size": 32, "encoder": {"width": 32, "depth": 1, "heads": 2}})
    mpc = build_mpc(model, MPCConfig(planner="random", samples=16, iterations=2, horizon=2))
    assert isinstance(mpc.planner, RandomShooting)  # MPC (`wm plan`, `wm validate`, the Python API) plans with it
    args = build_parser().parse_args(["plan", "--checkpoint", "C", "--env", "E", "--planner", "random"])
    assert args.planner == "random"  # the CLI offers it


# ------------------------------------------------------------------------------------------------ an env
class Dot(gym.Env):
    """A dot in the unit square, moved by velocity actions and drawn on black: a gymnasium env without MuJoCo."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self):
        self.render_mode = "rgb_array"
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float64)
        self.action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self.pos = np.full(2, 0.5)

    def _get_obs(self):  # the adapter reads the observation again with it after `set_state`
        return self.pos.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0.1, 0.9, 2)
        return self._get_obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + action, 0.0, 1.0)
        return self._get_obs(), 0.0, False, False, {}

    def render(self):
        frame = np.zeros((32, 32, 3), np.uint8)
        x, y = (self.pos * 28).astype(int)
        frame[y : y + 4, x : x + 4] = 255
        return frame


def get_pos(env):
    return env.unwrapped.pos.copy()


def set_pos(env, state):
    env.unwrapped.pos = np.array(state, np.float64)


def near_goal(state, goal):
    return goal is not None and float(np.linalg.norm(state - goal)) < 0.05


def make_dot(image_size: int = 64) -> gym.Env:
    """`--env test_extending:make_dot`: the Dot behind the adapter, with state hooks and a success test."""
    return GymImageAdapter(Dot(), image_size, get_state=get_pos, set_state=set_pos, is_success=near_goal)


def test_an_env_is_a_factory_with_state_hooks(tmp_path, capsys):
    env = make_env("test_extending:make_dot", 32)
    assert meets_contract(env) and env.unwrapped.has_state and env.unwrapped.has_success
    obs, info = env.reset(seed=0, options={"state": [0.2, 0.2], "goal": [0.21, 0.2]})
    assert obs["rgb"].shape == (32, 32, 3) and np.allclose(obs["proprio"], [0.2, 0.2]) and info["success"]
    first = [env.step(np.ones(2, np.float32))[0]["rgb"] for _ in range(3)]
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert not info["success"] and info["distance"] > 0.2  # moved away from the goal
    env.reset(options={"state": [0.2, 0.2]})
    assert all(np.array_equal(env.step(np.ones(2, np.float32))[0]["rgb"], f) for f in first)  # exact restore

    store = collect("test_extending:make_dot", str(tmp_path / "dots"), episodes=2, steps=10, policy="random",
                    workers=1, image_size=32)  # fmt: skip
    assert main(["info", store, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 2 and summary["frames"] == 2 * 11 and summary["keys"]["state"]["shape"] == [2]

    robot = SimRobot("test_extending:make_dot", image_size=32)  # state hooks make it a simulated robot too
    robot.connect()
    try:
        robot.reset({"state": [0.5, 0.5], "goal": [0.6, 0.5]})
        for _ in range(2):
            robot.send_action(np.array([0.5, 0.0], np.float32))  # +0.05 a step: [-1, 1] maps onto Dot's [-0.1, 0.1]
        assert bool(robot.get_observation()["sim_success"])
    finally:
        robot.disconnect()


# ------------------------------------------------------------------------------------------------ a robot
class Slider:
    """A one-joint robot: proprio is its position, an action is a velocity command in [-1, 1]."""

    name = "slider"

    def __init__(self):
        self.position = None  # None: not connected
        self.sent = []

    @property
    def is_connected(self):
        return self.position is not None

    @property
    def observation_features(self):
        return {"rgb": Feature((16, 16, 3), "uint8"), "proprio": Feature((1,), "float32")}

    @property
    def action_features(self):
        return Feature((1,), "float32", (-1.0,), (1.0,))

    def connect(self):
        self.position = np.zeros(1, np.float32)

    def disconnect(self):
        self.position = None

    def get_observation(self):
        return {"rgb": np.zeros((16, 16, 3), np.uint8), "proprio": self.position.copy()}

    def send_action(self, action):
        sent = np.clip(np.asarray(action, np.float32).reshape(1), -1.0, 1.0)
        self.position = self.position + 0.1 * sent
        self.sent.append(float(sent[0]))
        return sent


class FullSpeed:
    """A controller (`envs.controller.Controller`): full speed ahead, a chunk of 3 actions at a time."""

    def __init__(self):
        self.sent = []

    def reset(self, goal_obs):
        self.batch = len(goal_obs["rgb"])

    def act(self, obs):  # what a controller may see: {"rgb": (B, H, W, 3), "proprio": (B, P), "step"}
        assert set(obs) == {"rgb", "proprio", "step"}
        return np.ones((self.batch, 3, 1), np.float32)  # (B, K, A)

    def executed(self, step, obs, sent):  # the actions (B, A) the robot really sent
        self.sent.append(float(sent[0, 0]))

    @property
    def latencies(self):
        return []


def test_a_robot_meets_the_protocol_and_is_driven_through_the_guard_and_the_bridge():
    slider = Slider()
    assert isinstance(slider, Robot)
    guard = SafetyGuard(slider, GuardConfig(max_delta=0.25))  # and the default 1 s watchdog
    controller = FullSpeed()
    assert isinstance(controller, Controller)
    guard.connect()
    controller.reset({"rgb": np.zeros((1, 16, 16, 3), np.uint8), "proprio": np.ones((1, 1), np.float32)})  # B = 1
    stats = ControlLoop(guard, controller, hz=500).run(5)
    guard.disconnect()
    assert stats.steps == 5 and stats.plans == 2
    assert slider.sent == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # the guard ramps the step change
    assert controller.sent == slider.sent  # the controller hears what was sent, not what it asked for

    served = Slider()
    server = RobotServer(SafetyGuard(served, GuardConfig(watchdog_s=1.0)), "s3cret")
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    remote = RemoteRobot(server.bind(), "s3cret", timeout_s=5.0)
    thread.start()
    try:
        remote.connect()
        assert isinstance(remote, Robot) and remote.action_features.shape == (1,)
        ControlLoop(remote, controller, hz=200).run(3)
        remote.disconnect()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert served.sent.count(1.0) == 3  # every action arrived (the robot holds, 0.0, once the client leaves)
