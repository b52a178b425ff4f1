"""Checkpoint paths: `--checkpoint`, `--world-model` and `--policy` take a checkpoint folder or the run folder that
`wm train --out` (`model/`) or `wm bc` / `wm refine --out` (`policy/`) wrote; anything else is a one-line error
that says what was expected."""

import shutil
from pathlib import Path

import pytest

from policies.checkpoint import load_policy, world_model_record
from wm.app.cli import main
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint, resolve_checkpoint

SHIPPED = Path(__file__).parent.parent / "checkpoints"


@pytest.fixture
def runs(tmp_path):
    """`(world model run, policy run)`: the shipped Wall model and BC policy as the run folders that wrote them."""
    wm_run, bc_run = tmp_path / "wm-run", tmp_path / "bc-run"
    shutil.copytree(SHIPPED / "jepa-wall", wm_run / "model")
    shutil.copytree(SHIPPED / "bc-wall", bc_run / "policy")
    (wm_run / "checkpoints").mkdir()
    return wm_run, bc_run


def test_a_checkpoint_is_itself_and_a_run_folder_is_its_final_checkpoint(runs):
    wm_run, bc_run = runs
    assert resolve_checkpoint(wm_run / "model") == wm_run / "model"
    assert resolve_checkpoint(wm_run) == wm_run / "model"
    assert resolve_checkpoint(bc_run, "policy") == bc_run / "policy"


@pytest.mark.parametrize(
    "make, part, message",
    [
        (lambda tmp: tmp / "nowhere", "model", r"nowhere does not exist; pass a world model checkpoint"),
        (lambda tmp: tmp, "model", r"is not a wm checkpoint \(no config.json, no model/\); pass a world model"),
        (lambda tmp: tmp / "wm-run", "policy", r"no policy/; its model/ holds a world model\); pass a policy"),
    ],
)
def test_anything_else_is_a_one_line_error_naming_what_was_expected(runs, tmp_path, make, part, message):
    with pytest.raises(WMError, match=message) as e:
        resolve_checkpoint(make(tmp_path), part)
    assert "\n" not in str(e.value)


def test_an_unfinished_run_says_so(tmp_path):
    (tmp_path / "run" / "checkpoints" / "step_0000005").mkdir(parents=True)
    with pytest.raises(WMError, match=r"no model/; the run has not finished\)"):
        resolve_checkpoint(tmp_path / "run")


def test_loaders_take_run_folders(runs):
    wm_run, bc_run = runs
    _, config = load_checkpoint(wm_run)
    assert config.trained_on.env_id == "wm/Wall-v0"
    policy, _, _, _ = load_policy(bc_run, world_model=wm_run)  # the hash check passes through the run folder
    assert policy.cfg.kind == "gaussian"
    assert world_model_record(wm_run)["checkpoint"] == str(wm_run / "model")  # what a new policy records


def test_eval_model_cli_takes_the_train_out_folder(runs, tmp_path, capsys):
    wm_run, _ = runs
    assert main(["eval-model", "--checkpoint", str(wm_run), "--data", str(tmp_path / "no-store")]) == 2
    assert "no-store" in capsys.readouterr().err  # got past the checkpoint to the store


def test_a_shipped_policy_finds_its_world_model_from_any_working_directory(tmp_path, monkeypatch):
    shipped = SHIPPED.resolve() / "bc-pointmaze"
    monkeypatch.chdir(tmp_path)  # its config records `checkpoints/jepa-pointmaze`, relative to the repository
    _, config, _, model_config = load_policy(shipped)
    assert config.world_model["checkpoint"] == "checkpoints/jepa-pointmaze"
    assert model_config.path == shipped.parent / "jepa-pointmaze"
    (tmp_path / "lone").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "lone" / name).write_bytes((shipped / name).read_bytes())
    with pytest.raises(WMError, match="world model checkpoints/jepa-pointmaze is not there; pass --world-model"):
        load_policy(tmp_path / "lone")  # copied away from its world model
