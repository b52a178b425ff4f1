"""Where dataset goals come from (`wm.goals.goal_store`): the store given, the checkpoint's training store (found by
the relative name a shipped config gives it, wherever the copy lives), or, on a machine without it, expert
episodes collected for the run, all held out; `wm plan` and `wm eval-policy` both say which in results.json."""

import json
import logging
import shutil
from pathlib import Path

from wm.app.cli import main
from wm.data.store import EpisodeStore
from wm.goals import goal_store
from wm.models.checkpoint_config import TrainedOn

ROOT = Path(__file__).parent.parent
WALL = ROOT / "checkpoints" / "jepa-wall"


def test_a_relative_training_store_is_found_from_here_or_as_a_copy_elsewhere(tmp_path, monkeypatch):
    trained_on = TrainedOn("data/WallMix3", {})
    monkeypatch.chdir(tmp_path)
    assert trained_on.is_training_store(tmp_path / "data" / "WallMix3")
    assert trained_on.is_training_store(Path("/elsewhere/data/WallMix3"))
    assert not trained_on.is_training_store(tmp_path / "data" / "Fresh9-Wall")
    assert not TrainedOn("", {}).is_training_store(tmp_path)
    assert TrainedOn(str(tmp_path / "s"), {}).is_training_store(tmp_path / "s")


def test_goals_come_from_the_store_given_else_the_training_store_when_it_is_here(tmp_path, monkeypatch):
    trained_on = TrainedOn.from_config(json.loads((WALL / "config.json").read_text())["data"])
    monkeypatch.chdir(tmp_path)
    assert goal_store(trained_on, "elsewhere", tmp_path / "g", 2, 25, 0) == {"store": "elsewhere", "source": "data"}
    (tmp_path / "data" / "WallMix3").mkdir(parents=True)
    assert goal_store(trained_on, None, tmp_path / "g", 2, 25, 0)["source"] == "training store"
    assert not (tmp_path / "g").exists()


def test_wm_plan_without_the_training_store_collects_fresh_held_out_goals(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no data/WallMix3 here, as on a fresh clone
    out = tmp_path / "plan"
    argv = ["plan", "--checkpoint", str(WALL), "--env", "wm/Wall-v0", "--episodes", "2", "--budget", "5",
            "--samples", "10", "--elites", "2", "--iterations", "1", "--horizon", "2", "--out",
            str(out)]  # fmt: skip
    with caplog.at_level(logging.INFO, "wm"):
        assert main(argv) == 0
    assert "collecting 2 fresh expert episodes" in caplog.text
    results = json.loads((out / "results.json").read_text())
    goals = results["goals"]
    assert results["zero_action_success"]["n"] == 2  # the trivial baseline on the same pairs
    assert all("zero_action_distance" in row for row in results["per_episode"])
    assert goals["source"] == "fresh" and goals["store"] == str(out / "goal_store") and goals["episodes"] == 2
    trained_on = TrainedOn.from_config(json.loads((WALL / "config.json").read_text())["data"])
    with EpisodeStore.open(out / "goal_store") as store:
        assert store.num_episodes == 2 and store.spec == trained_on.spec
        assert trained_on.held_out(store)[0].tolist() == [0, 1]  # never trained on: all held out


def test_wm_eval_policy_without_the_training_store_collects_fresh_held_out_goals(tmp_path, monkeypatch):
    world_model = tmp_path / "jepa-wall"
    shutil.copytree(WALL, world_model)  # the same weights (the policy checks their hash), a store not on this machine
    config = json.loads((world_model / "config.json").read_text())
    config["data"]["store"] = str(tmp_path / "missing")
    (world_model / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval"
    argv = ["eval-policy", "--policy", str(ROOT / "checkpoints" / "bc-wall"), "--world-model", str(world_model),
            "--env", "wm/Wall-v0", "--episodes", "2", "--budget", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["goals"]["source"] == "fresh" and results["episodes"] == 2
    assert {p["episode"] for p in results["per_episode"]} <= {0, 1}
