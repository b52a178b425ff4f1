"""`wm improve`: a tiny end-to-end round (real episodes recorded and appended to a copy, the world model fine-tuned
with its latents frozen, the policy refined again, every round evaluated on the same held-out goals, the
data-matched BC), a SIGKILLed run that resumes and ends where an unbroken run ends, and the split a fine-tune keeps."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from conftest import ROBOT_TOKEN, kill_once_committed

from policies.checkpoint import latents_sha256, load_policy
from wm.app.cli import main
from wm.app.train import SplitConfig, inherited_split
from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.models.checkpoint import read_config
from wm.models.checkpoint_config import TrainedOn

TINY = ["--rounds", "1", "--episodes", "3", "--eval-episodes", "3", "--finetune-steps", "4",
        "--imagined-steps", "64", "train.batch_size=4", "train.val_every=2", "train.ckpt_every=2",
        "refine.num_envs=8", "refine.n_steps=8", "refine.batch_size=32", "refine.n_epochs=2",
        "refine.checkpoint_every=64", "refine.critic_width=32"]  # fmt: skip


def improve_argv(cloned, out) -> list[str]:
    return ["improve", "--policy", str(cloned), "--env", "wm/PointMaze-v0", "--out", str(out), *TINY]


def test_a_round_records_real_episodes_and_improves_on_a_copy(maze, jepa, cloned, tmp_path):
    before = EpisodeStore.open(maze)
    original_episodes = before.num_episodes
    before.close()
    out = tmp_path / "improve"
    assert main(improve_argv(cloned, out)) == 0

    rows = [json.loads(line) for line in (out / "improve_log.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1]
    assert rows[0]["real_env_steps"] == 0 and rows[1]["real_env_steps"] == 3 * 50  # counted: episodes x budget
    assert {"real_success", "imagined_success", "gap", "real_95ci", "zero_action_success"} <= set(rows[1])
    assert (out / "curve.png").is_file() and (out / "round_1" / "eval" / "results.json").is_file()

    with EpisodeStore.open(maze) as store:  # the original store is never touched
        assert store.num_episodes == original_episodes
    with EpisodeStore.open(out / "data" / maze.name) as copy:
        assert copy.num_episodes == original_episodes + 3
        record = copy.attrs["collections"][-1]
        assert record["improve_round"] == 1 and record["policy"] is None and record["episodes_written"] == 3
        real = copy.episode(original_episodes, ["rgb", "action", "state", "success"])
        assert len(real["rgb"]) == 51 and not real["action"][-1].any()  # budget + 1 frames, the last action 0

    tuned = out / "round_1" / "train" / "model"
    config = read_config(tuned)
    held_out = jepa[1].trained_on.val_episodes
    assert set(held_out) <= set(config["data"]["val_episodes"])  # what the model held out stays held out
    assert set(config["data"]["train_episodes"]) & set(range(original_episodes, original_episodes + 3))
    assert latents_sha256(tuned) == latents_sha256(jepa[2])  # the encoder was frozen ...
    assert read_config(tuned)["init"]["checkpoint"] == str(jepa[2].resolve())
    policy, _, model, _ = load_policy(out / "round_1" / "refine" / "policy")  # ... so policies move between them
    assert model.success_mode is not None and policy.cfg.kind == "gaussian"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["real_env_steps_in_refinement"] == 0
    baseline = summary["bc_baseline"]
    bc_config = read_config(out / "baseline" / "bc" / "policy")
    assert bc_config["data"]["demos"] == baseline["demos"] + baseline["real_successes_added"]


def test_a_sigkilled_improve_resumes_and_ends_where_an_unbroken_run_ends(cloned, tmp_path):
    wm = [sys.executable, "-m", "wm.app.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    done = subprocess.run([*wm, *improve_argv(cloned, unbroken), "--no-baseline"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen([*wm, *improve_argv(cloned, broken), "--no-baseline"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while not list((broken / "round_1" / "train" / "checkpoints").glob("step_*/config.json")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid fine-tuning, a round's real episodes already appended
    proc.wait()
    assert not (broken / "summary.json").exists()
    done = subprocess.run([*wm, *improve_argv(cloned, broken), "--no-baseline"], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    def rows(out):
        return [{k: v for k, v in json.loads(line).items() if k not in ("policy", "world_model")}
                for line in (out / "improve_log.jsonl").read_text().splitlines()]  # fmt: skip

    assert rows(unbroken) == rows(broken)
    with EpisodeStore.open(broken / "data" / "maze") as store:
        assert store.num_episodes == 13  # the round's episodes appended once
    a, _, _, _ = load_policy(unbroken / "round_1" / "refine" / "policy")
    b, _, _, _ = load_policy(broken / "round_1" / "refine" / "policy")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_improve_refuses_a_run_folder_with_other_settings(cloned, tmp_path, capsys):
    out = tmp_path / "improve"
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"config": {"rounds": 7}, "done": {}}))
    capsys.readouterr()
    assert main(improve_argv(cloned, out)) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_run_written_before_a_setting_existed_resumes_only_with_its_default(tmp_path):
    from wm.app.improve import State

    (tmp_path / "state.json").write_text(json.dumps({"config": {"rounds": 3}, "done": {"copy": {"episodes": 5}}}))
    assert State(tmp_path, {"rounds": 3, "explore": False}, {"explore": False}).get("copy") == {"episodes": 5}
    try:
        State(tmp_path, {"rounds": 3, "explore": True}, {"explore": False})
    except WMError as e:
        assert "other settings" in str(e)
    else:
        raise AssertionError("a run collected without exploring must not resume as one that explores")


def test_explore_collects_samples_of_the_policy_instead_of_its_mean(cloned, tmp_path):
    actions = {}
    for explore in (False, True):
        out = tmp_path / f"explore_{explore}"
        assert main([*improve_argv(cloned, out), "--no-baseline", *(["--explore"] if explore else [])]) == 0
        first = json.loads((out / "state.json").read_text())["done"]["round_1/collect"]["first_episode"]
        with EpisodeStore.open(out / "data" / "maze") as store:
            actions[explore] = store.episode(first, ["action"])["action"]
    assert actions[False].shape == actions[True].shape
    assert np.abs(actions[True] - actions[False]).max() > 0.1  # the same start and goal, other actions


def test_a_fine_tune_keeps_the_split_of_the_episodes_its_checkpoint_knew():
    trained_on = TrainedOn("data/S", {}, train_episodes=(0, 1, 3, 4), val_episodes=(2,))
    train, val = inherited_split(trained_on, 15, SplitConfig(val_fraction=0.2, split_seed=0))
    assert 2 in val and {0, 1, 3, 4} <= set(train)
    new_val = set(val) - {2}
    assert len(new_val) == 2 and new_val <= set(range(5, 15))  # a fifth of the 10 appended episodes
    assert sorted([*train, *val]) == list(range(15))
    try:
        inherited_split(trained_on, 4, SplitConfig())
    except WMError as e:
        assert "fewer than the 5" in str(e)
    else:
        raise AssertionError("a store that shrank must be refused")
    assert np.array_equal(inherited_split(trained_on, 5, SplitConfig())[1], [2])


def test_rank_correlation_takes_ties_as_average_ranks_and_needs_three_points():
    from wm.evaluation.metrics import correlations, ranks

    assert ranks([0.5, 0.1, 0.5, 0.9]).tolist() == [2.5, 1.0, 2.5, 4.0]
    perfect = correlations([0.1, 0.2, 0.9, 0.4], [0.0, 0.3, 0.8, 0.5])
    assert perfect["spearman"] == 1.0 and 0.9 < perfect["pearson"] < 1.0 and perfect["n"] == 4
    assert correlations([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])["spearman"] == -1.0
    assert correlations([0.1, 0.2], [0.1, 0.2])["spearman"] is None  # two policies rank nothing
    assert correlations([0.1, 0.1, 0.1], [0.1, 0.5, 0.2])["pearson"] is None  # a constant sample


def test_the_ranking_script_scores_policies_real_and_imagined_on_the_same_pairs(cloned, tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "rank_policies.py"
    out = tmp_path / "rank"
    run = subprocess.run([sys.executable, str(script), str(cloned), "--out", str(out), "--episodes", "3"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    row = json.loads((out / "rows.jsonl").read_text())
    assert row["env"] == "wm/PointMaze-v0" and {"real", "imagined", "zero", "real_95ci"} <= set(row)
    report = json.loads((out / "ranking.json").read_text())
    assert report["policies"] == 1 and report["all"]["spearman"] is None and (out / "ranking.png").is_file()
    again = subprocess.run([sys.executable, str(script), str(cloned), "--out", str(out), "--episodes", "3"],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0 and len((out / "rows.jsonl").read_text().splitlines()) == 1  # not run twice


def test_bc_can_start_from_a_policy_and_keeps_its_settings(maze, jepa, cloned, tmp_path, capsys):
    out = tmp_path / "warm"
    argv = ["bc", "--data", str(maze), "--world-model", str(jepa[2]), "--policy", "gaussian", "--init", str(cloned)]
    assert main([*argv, "--out", str(out), "--steps", "1", "batch_size=8", "lr=0", "warmup_steps=0"]) == 0
    start, _, _, _ = load_policy(cloned)
    warm, _, _, _ = load_policy(out / "policy")
    for key, value in start.state_dict().items():  # lr=0: the warm start is the starting policy, bit for bit
        assert torch.equal(value, warm.state_dict()[key]), key
    assert read_config(out / "policy")["init"]["policy"] == str(cloned)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "wider"), "--steps", "1", "width=64"]) == 2
    assert "keeps the policy's settings; drop width" in capsys.readouterr().err
    assert main([*argv[:-4], "--policy", "diffusion", "--init", str(cloned), "--out", str(tmp_path / "d")]) == 2
    assert "is a gaussian policy" in capsys.readouterr().err


def test_a_round_on_a_simulated_robot_resumes_after_sigkill_with_the_goals_left(cloned, server, tmp_path):
    """`--robot`: the round's episodes are validation runs on the robot (judged by its simulator); a run killed once
    the robot recorded an episode keeps it and runs only the goals left, and the store grows by one per goal."""
    from envs.registry import make_env
    from wm.app.improve import ImproveConfig, Improvement

    wm, (_, address), out = [sys.executable, "-m", "wm.app.cli"], server, tmp_path / "robot"
    argv = [*improve_argv(cloned, out), "--no-baseline", "--robot", address, "--hz", "50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WM_ROBOT_TOKEN": ROBOT_TOKEN}
    proc = subprocess.Popen([*wm, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_once_committed(proc, out / "round_1" / "robot" / "attempt_0" / "store", episodes=1, timeout_s=240)
    done = subprocess.run([*wm, *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    attempts = [EpisodeStore.open(out / "round_1" / "robot" / f"attempt_{k}" / "store") for k in (0, 1)]
    first = [s.num_episodes for s in attempts]
    assert first[0] >= 1 and first[0] + first[1] in (3, 4)  # 4: the killed attempt's last episode was cut short
    recorded = [s.episode(i) for s in attempts for i in range(s.num_episodes) if s.episode(i)["complete"][-1]]
    assert len(recorded) == 3
    results = json.loads((out / "round_1" / "robot" / "attempt_1" / "results.json").read_text())
    assert results["judge"]["kind"] == "sim" and results["controller"] == "policy"
    assert ROBOT_TOKEN not in (out / "state.json").read_text() + json.dumps(results)

    config = ImproveConfig(str(cloned), "wm/PointMaze-v0", str(out), robot=address, token=ROBOT_TOKEN, rounds=1,
                           episodes=3, eval_episodes=3, finetune_steps=4, imagined_steps=64, baseline=False, hz=50.0,
                           overrides=TINY[10:])  # fmt: skip
    improvement = Improvement(config)  # the same run (it checks the robot answers and fits)
    pairs = improvement.training_problems(1, improvement.start_world_model).pairs
    sim = make_env("wm/PointMaze-v0").unwrapped
    with EpisodeStore.open(out / "data" / "maze") as copy:
        assert copy.num_episodes == 13 and copy.attrs["collections"][-1]["source"] == "robot"
        for pair, ran, i in zip(pairs, recorded, range(10, 13), strict=True):  # each goal once, in order
            ep = copy.episode(i)
            np.testing.assert_allclose(ep["state"][0], pair["start"], atol=1e-5)
            np.testing.assert_allclose(ep["goal"][0], pair["goal"])
            np.testing.assert_array_equal(ep["rgb"], ran["rgb"])
            expected = [-sim.goal_distance(s, pair["goal"]) for s in ep["state"][1:]]
            np.testing.assert_allclose(ep["reward"][:-1], expected, rtol=1e-5)  # the env's own reward
            assert ep["success"][-1] == ran["judged_success"][-1]
    for store in attempts:
        store.close()


def test_robot_settings_are_checked_before_anything_runs(cloned, tmp_path, capsys):
    from wm.app.improve_robot import require_recordable

    argv = improve_argv(cloned, tmp_path / "a")
    for extra, message in ((["--judge", "sim"], "go with --robot"), (["--robot", "tcp://x:1", "--hz", "0"], "--hz")):
        capsys.readouterr()
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "a").exists()
    keys = {k: {"shape": [2]} for k in ("rgb", "proprio", "action", "success", "reward", "state")}
    require_recordable(keys, {**keys, "goal": {"shape": [2]}}, "sim:wm/PointMaze-v0")  # reward from the states
    for recording, message in (({k: keys[k] for k in ("rgb", "proprio", "action", "success")}, "['reward', 'state']"),
                               ({**keys, "proprio": {"shape": [3]}}, "proprio of shape [3]")):  # fmt: skip
        try:
            require_recordable(keys, recording, "remote:arm")
        except WMError as e:
            assert message in str(e) and "remote:arm" in str(e), e
        else:
            raise AssertionError(f"expected an error with {message}")


def test_a_run_is_the_same_wherever_its_robot_answers_and_never_records_the_token():
    from wm.app.improve import run_identity

    here = run_identity({"robot": "tcp://10.0.0.5:5555", "token": "s3cret", "server_key": "a.key", "out": "runs/a"})
    there = run_identity({"robot": "tcp://10.0.0.9:6000", "token": "other", "server_key": "b.key", "out": "runs/b"})
    assert here == there == {"robot": True, "out": None}
    assert run_identity({"robot": None}) != here  # but a run on a robot is not one in the env
