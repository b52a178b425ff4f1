"""The `wm` CLI end to end: collect, info, envs, and the one-line error paths (nothing on disk is lost)."""

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import kill_once_committed

from wm.app.cli import COMMANDS, build_parser, main
from wm.data.store import EpisodeStore

WM = [sys.executable, "-m", "wm.app.cli"]
MAZE_5x12 = ["collect", "--env", "wm/PointMaze-v0", "--episodes", "5", "--steps", "12"]


def wm(*args, check=True):
    proc = subprocess.run([*WM, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(capsys, argv, match):
    capsys.readouterr()  # forget earlier output
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("wm: error:") and match in err[0], err
    return err[0]


def snapshot(path):
    return {p: p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "maze"
    wm(*MAZE_5x12, "--workers", "2", "--out", str(out))
    return out


def test_collect_then_info(collected):
    group = zarr.open_group(str(collected), mode="r")
    ends = group["meta/episode_ends"][:]
    assert list(ends) == [13, 26, 39, 52, 65]
    for key in group["data"].array_keys():
        assert group[f"data/{key}"].shape[0] == ends[-1]
    info = json.loads(wm("info", str(collected), "--json", "--check").stdout)
    assert info["episodes"] == 5 and info["frames"] == 65
    assert info["env"]["id"] == "wm/PointMaze-v0" and info["check"].startswith("ok")
    assert info["collections"][0]["policy"] == "expert"
    text = wm("info", str(collected)).stdout
    assert "episodes     5" in text and "MB on disk" in text


def test_collection_is_independent_of_worker_count(collected, tmp_path):
    out = tmp_path / "one_worker"
    wm(*MAZE_5x12, "--workers", "1", "--out", str(out))
    a, b = EpisodeStore.open(collected), EpisodeStore.open(out)
    for key in ("rgb", "action", "state"):
        np.testing.assert_array_equal(a.read(key), b.read(key))


def test_appending_continues_with_fresh_episodes(tmp_path):
    out = tmp_path / "wall"
    args = [
        "collect",
        "--env",
        "wm/Wall-v0",
        "--episodes",
        "2",
        "--steps",
        "5",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    wm(*args)
    wm(*args)
    store = EpisodeStore.open(out)
    assert store.num_episodes == 4
    assert not np.array_equal(store.episode(0)["state"], store.episode(2)["state"])
    assert len(store.attrs["collections"]) == 2


def test_envs_lists_the_builtins(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in ("wm/PointMaze-v0", "wm/Wall-v0", "wm/PushT-v0"):
        assert env_id in out


def test_bad_input_gives_one_line_errors(capsys, collected, tmp_path):
    before = snapshot(collected)
    base = ["collect", "--episodes", "2", "--steps", "3", "--workers", "1"]
    one_line_error(capsys, [*base, "--env", "NoSuchEnv-v9", "--out", str(tmp_path / "x")], "unknown environment")
    one_line_error(capsys, [*base, "--env", "wm/Wall-v0", "--out", str(collected)], "another spec")
    one_line_error(capsys, [*base, "--env", "wm/Wall-v0", "--out", str(tmp_path / "y"), "--image-size", "8"], "image")
    one_line_error(capsys, ["collect", "--env", "wm/Wall-v0", "--episodes", "0", "--out", "z"], "at least 1")
    one_line_error(capsys, ["collect", "--env", "wm/Wall-v0", "--episodes", "2"], "--out")
    one_line_error(capsys, ["collect", "--env", "wm/Wall-v0", "--episodes", "2", "--out", "z", "--policy", "x"], "x")
    one_line_error(capsys, ["info", str(tmp_path / "missing")], "no episode store")
    one_line_error(capsys, ["frobnicate"], "invalid choice")
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    one_line_error(capsys, [*base, "--env", "wm/Wall-v0", "--out", str(a_file)], "file")
    assert a_file.read_text() == "keep me"
    assert snapshot(collected) == before
    assert not (tmp_path / "x").exists()


def test_expert_is_refused_where_none_exists(capsys, tmp_path):
    argv = [
        "collect",
        "--env",
        "InvertedPendulum-v5",
        "--episodes",
        "1",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "p"),
    ]
    one_line_error(capsys, argv, "no scripted expert")
    assert main([*argv[:-2], "--policy", "random", "--workers", "1", "--out", str(tmp_path / "p")]) == 0
    assert EpisodeStore.open(tmp_path / "p").num_episodes == 1


def test_damaged_store_is_reported_not_overwritten(capsys, tmp_path):
    out = tmp_path / "s"
    assert (
        main(
            [
                "collect",
                "--env",
                "wm/Wall-v0",
                "--episodes",
                "1",
                "--steps",
                "3",
                "--workers",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (out / "data" / "rgb" / "zarr.json").unlink()
    before = snapshot(out)
    one_line_error(capsys, ["info", str(out)], "missing data/rgb")
    one_line_error(capsys, ["collect", "--env", "wm/Wall-v0", "--episodes", "1", "--out", str(out)], "damaged")
    assert snapshot(out) == before


def test_every_command_has_one_entry_in_the_table():
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert list(commands) == list(COMMANDS)
    for name, command in COMMANDS.items():
        assert commands[name].prog == f"wm {name}" and command.help and callable(command.run)


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from wm.app.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    text = wm("--help").stdout
    assert all(name in text for name in COMMANDS)


def test_choices_come_from_the_registries(capsys):
    from planners.registry import PLANNERS
    from policies.registry import CLONED
    from wm.models.registry import FAMILIES

    one_line_error(capsys, ["train", "--data", "d", "--model", "nope", "--out", "o"], ", ".join(map(repr, FAMILIES)))
    argv = ["plan", "--checkpoint", "c", "--env", "e", "--planner", "nope"]
    one_line_error(capsys, argv, ", ".join(map(repr, PLANNERS)))
    argv = ["bc", "--data", "d", "--world-model", "w", "--out", "o", "--policy", "steered"]
    assert "steered" not in CLONED
    one_line_error(capsys, argv, "invalid choice: 'steered' (choose from " + ", ".join(map(repr, CLONED)) + ")")


def test_a_port_out_of_range_is_a_one_line_error(capsys):
    for port, match in (("70000", "must be at most 65535"), ("-1", "must be at least 0"), ("x", "whole number")):
        one_line_error(capsys, ["robot", "serve", "--env", "wm/Wall-v0", "--port", port], match)


def test_debug_shows_the_traceback(capsys, tmp_path):
    assert main(["--debug", "info", str(tmp_path / "missing")]) != 0
    assert "Traceback" in capsys.readouterr().err


def test_sigkill_during_collect_keeps_committed_episodes(tmp_path):
    out = tmp_path / "killed"
    args = ["collect", "--env", "wm/PointMaze-v0", "--episodes", "400", "--steps", "10", "--workers", "1"]
    proc = subprocess.Popen([*WM, *args, "--out", str(out)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    kill_once_committed(proc, out)
    info = json.loads(wm("info", str(out), "--json", "--check").stdout)
    n = info["episodes"]
    assert 3 <= n < 400 and info["frames"] == 11 * n
    reference = tmp_path / "reference"
    wm(*args[:3], "--episodes", str(n), *args[5:], "--out", str(reference))
    a, b = EpisodeStore.open(out), EpisodeStore.open(reference)
    for key in ("rgb", "action", "state", "proprio"):
        np.testing.assert_array_equal(a.read(key), b.read(key))
    a.close()
    wm("info", str(out), "--repair")  # readers leave the killed episode's rows; the repair drops them
    group = zarr.open_group(str(out), mode="r")
    assert all(group[f"data/{k}"].shape[0] == n * 11 for k in group["data"].array_keys())


def test_unusable_outputs_and_checkpoints_are_one_line_errors(capsys, collected, tmp_path):
    """`--out` at a file or inside a checkpoint, damaged configs, a policy where a world model goes, settings no run
    can use: each a one-line error before anything is written."""
    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    world_model, policy = str(shipped / "jepa-pointmaze"), str(shipped / "bc-pointmaze")
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    copy = tmp_path / "copy"
    shutil.copytree(world_model, copy)
    for name, text in {"null": "null", "list": "[1, 2]"}.items():
        shutil.copytree(world_model, tmp_path / name)
        (tmp_path / name / "config.json").write_text(text)
    train = ["train", "--data", str(collected), "--model", "jepa", "--steps", "1", "--out"]
    bc = ["bc", "--data", str(collected), "--policy", "gaussian", "--steps", "1", "--world-model"]
    for argv, match in [
        ([*train, str(a_file)], "is a file, not a run folder"),
        ([*train, str(copy / "run")], "is inside the checkpoint"),
        ([*train, str(tmp_path / "t"), "predictor.heads=0"], "predictor dim=128 and heads=0 must be at least 1"),
        (
            [
                "imagine",
                "--checkpoint",
                str(shipped / "jepa-wall"),
                "--data",
                str(collected),
                "--out",
                str(tmp_path / "v.mp4"),
            ],
            "holds other data (wm/PointMaze-v0) than the world model was trained on",
        ),
        (["robot", "keygen", "--out", str(a_file)], "is a file, not a folder for the keys"),
        (["eval-model", "--checkpoint", str(tmp_path / "null"), "--data", str(collected)], "holds a JSON null"),
        (["eval-model", "--checkpoint", str(tmp_path / "list"), "--data", str(collected)], "holds a JSON list"),
        (["eval-model", "--checkpoint", policy, "--data", str(collected)], "is a policy checkpoint (`wm bc`)"),
        ([*bc, policy, "--out", str(tmp_path / "bc")], "is a policy checkpoint (`wm bc`)"),
        (["refine", "--policy", policy, "--algo", "ppo", "--out", str(tmp_path / "r"), "num_envs=0"], "num_envs=0"),
        (["refine", "--policy", policy, "--algo", "ppo", "--out", str(tmp_path / "r"), "n_steps=0"], "n_steps=0"),
    ]:
        one_line_error(capsys, argv, match)
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors"]
    assert not any((tmp_path / name).exists() for name in ("bc", "r", "t", "v.mp4"))


def test_a_full_disk_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s" / "data"))

    monkeypatch.setattr(EpisodeStore, "append_episode", no_space)
    capsys.readouterr()
    assert main([*MAZE_5x12, "--workers", "1", "--out", str(tmp_path / "s")]) == 2
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after the progress bar
    assert last == (f"wm: error: no space left on the disk writing {tmp_path / 's' / 'data'}; free some and re-run "
                    "(what was committed is kept)")  # fmt: skip
