"""Real episodes on a robot for `wm improve --robot`: a round's training goals run through `wm validate`'s session,
and the recordings turned into episodes of the store the round grows.

A round's episodes are validation runs (`wm.validation.session`) in `round_<r>/robot/attempt_<k>/`, each a whole
record: store, results.json, safety_events.jsonl, summary.png. A run stopped mid-round (the robot failed, the
operator interrupted, SIGKILL) keeps every complete episode it recorded; the next `wm improve` starts a new attempt
with the goals those did not reach, so no robot time is spent twice. The round's episodes are the complete episodes
of its attempts in order, one per goal.

An episode enters the grown store in that store's keys: rgb, proprio, action (what the robot sent), success (the
simulator's ground truth where the robot reports it, else the judge's verdict on the final frame), state and goal
(simulated robots), reward (the env's, `-goal_distance(next state, goal)`, from those states). A store recording
anything else, or states a robot does not report, cannot grow from it: a one-line error before the robot moves.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from wm.errors import WMError

ROBOT_KEYS = ("rgb", "proprio", "action", "success", "state", "goal")  # a store's keys a validation run records


def robot_episodes(link, root: Path, actor, model, pairs: list[dict], env_id: str, env, store_keys: dict, seed: int,
                   stochastic: bool) -> tuple[list[dict], np.ndarray]:  # fmt: skip
    """Run the start/goal `pairs` (`wm.goals`) that the attempts under `root` have not recorded on the robot
    `link` names (a `wm.app.validate.ValidateConfig`: address, token, judge, rate; `budget` steps an episode), with
    `actor` on `model`'s latents (`stochastic`: its Gaussian sampled). `env` is an instance of `env_id`, the env the
    pairs come from and a simulated robot must simulate, unwrapped (its goal distance and velocity dims). Returns
    the episodes in `store_keys` and whether each reached its goal `(len(pairs),)` by the judge."""
    done = len(recorded(root, ["complete"]))  # only the flags: the frames are read once, below
    if done < len(pairs):
        attempt = root / f"attempt_{len(list(root.glob('attempt_*')))}"
        run_attempt(replace(link, out=str(attempt), episodes=len(pairs) - done), actor, model, pairs[done:], env_id,
                    env, store_keys, seed + done, stochastic)  # fmt: skip
    episodes = recorded(root, [*ROBOT_KEYS, "judged_success"])[: len(pairs)]
    success = np.array([bool(ep["judged_success"][-1]) for ep in episodes])
    return [training_episode(ep, store_keys, env) for ep in episodes], success


def recorded(root: Path, keys: list[str]) -> list[dict]:
    """`keys` (those a store has) of the complete episodes of the attempts under `root`, in the order they ran."""
    from wm.data.store import EpisodeStore

    attempts = sorted(root.glob("attempt_*/store"), key=lambda p: int(p.parent.name.removeprefix("attempt_")))
    episodes = []
    for path in attempts:
        with EpisodeStore.open(path) as store:
            read = [k for k in dict.fromkeys([*keys, "complete"]) if store.has(k)]
            episodes += [ep for ep in (store.episode(i, read) for i in range(store.num_episodes)) if ep["complete"][-1]]
    return episodes


def run_attempt(link, actor, model, pairs: list[dict], env_id: str, env, store_keys: dict, seed: int,
                stochastic: bool) -> None:  # fmt: skip
    """One validation run of `pairs` into `link.out`; a robot failure is a one-line error that says how to go on."""
    from policies.controller import PolicyController
    from wm.app.validate import make_judge, resolve_judge
    from wm.goals import goal_batch
    from wm.validation.session import ValidationSession

    link.validate()
    with connected(link) as robot:
        controller = PolicyController(actor, model, seed=seed, stochastic=stochastic)
        keys = check_robot(robot, model, store_keys, env_id, controller.chunk)
        simulated = "sim_success" in robot.observation_features
        link.judge = resolve_judge(replace(link, judge=link.judge or ("sim" if simulated else "operator")), robot)
        dims = tuple(env.proprio_velocity_dims)  # goals at rest, as the env's episodes have them
        goals = [{**p, "goal_obs": {k: v[0] for k, v in goal_batch([p], "rest", dims).items()}} for p in pairs]
        hz = link.hz or robot.control_hz or 10.0
        session = ValidationSession(robot, controller, make_judge(link, model), link.out, link.budget, hz, keys,
                                    link.to_json(), chunk=controller.chunk, model=model)  # fmt: skip
        try:
            session.run(goals, len(goals))
        except WMError as e:
            raise WMError(f"{e}; run the same `wm improve` again to go on with the goals left") from None


@contextmanager
def connected(link):
    """The robot `link` names (`ValidateConfig`: address, token, server key, timeout), connected."""
    from envs.robot.client import RemoteRobot
    from envs.robot.keys import load_public_key

    server_key = load_public_key(link.server_key) if link.server_key else None
    robot = RemoteRobot(link.robot, link.token, timeout_s=link.timeout, server_key=server_key)
    robot.connect()
    try:
        yield robot
    finally:
        robot.disconnect()


def check_robot(robot, model, store_keys: dict, env_id: str, chunk: int) -> dict:
    """One line unless the connected `robot` takes `model`'s images and actions, simulates `env_id` if it simulates
    anything, and records every key of the store to grow; returns the keys a validation run of it records (`chunk`
    actions per plan)."""
    from wm.app.validate import check_model_fits
    from wm.validation.recorder import store_keys as recording_keys

    check_model_fits(model.spec, robot)
    name = robot.info["name"]
    if name.startswith("sim:") and name != f"sim:{env_id}":
        raise WMError(f"the robot simulates {name.removeprefix('sim:')}, but the goals and the world model are of "
                      f"{env_id}; serve {env_id} (`wm robot serve --env {env_id}`) or pass its --env")  # fmt: skip
    keys = recording_keys(robot, chunk, True, True)
    require_recordable(store_keys, keys, name)
    return keys


def require_recordable(store_keys: dict, recording: dict, robot: str) -> None:
    """One line unless every key of the store to grow comes from the robot's recordings (reward from states)."""
    given = {k for k in ROBOT_KEYS if k in recording}
    if {"state", "goal"} <= given:
        given.add("reward")
    for key in sorted(given & set(store_keys) & set(recording)):
        if list(store_keys[key]["shape"]) != list(recording[key]["shape"]):
            raise WMError(f"{robot} records {key} of shape {recording[key]['shape']}, the store `wm improve` grows "
                          f"{store_keys[key]['shape']}; serve the robot the world model was trained for")  # fmt: skip
    missing = sorted(set(store_keys) - given)
    if missing:
        raise WMError(f"the store `wm improve` grows records {missing}, which episodes on {robot} do not have; "
                      "grow a store of the robot's keys (rgb, proprio, action, success) as it records")  # fmt: skip


def training_episode(ep: dict, store_keys: dict, env) -> dict:
    """A recorded validation episode in the keys of the store it joins (see the module docstring)."""
    out = {k: ep[k] for k in store_keys if k != "reward"}
    if "reward" in store_keys:
        goal, reward = ep["goal"][0], np.zeros(len(ep["state"]), np.float32)
        reward[:-1] = [-env.goal_distance(state, goal) for state in ep["state"][1:]]  # reward[t] for action[t]
        out["reward"] = reward
    return out
