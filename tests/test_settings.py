"""`key=value` settings reach the config dataclasses checked against their fields' types (`wm.settings`), from the
command line and the Python API alike: a wrong type is one line naming the setting and the type, never a string
that passes for true (`compile=False` used to store "False", which compiled the model)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from test_external_envs import TINY, TINY_ARGS

from wm.app import api
from wm.app.cli import main
from wm.app.train import TrainRunConfig, run_settings
from wm.errors import WMError
from wm.settings import route_settings


@dataclass
class Toy:
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    name: str = "a"
    limit: float | None = None
    pair: tuple[int, int] = (1, 5)
    sizes: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def toy(*pairs) -> dict:
    return route_settings(list(pairs), {"toy": Toy})["toy"]


def train_settings(*pairs, kind: str = "jepa"):
    """`(model config, TrainConfig, SplitConfig)` of `wm train --model kind` with these settings."""
    return run_settings(TrainRunConfig(data="store", model=kind, out="run", overrides=list(pairs)))[:3]


def error(match: str, *pairs, kind: str = "jepa") -> str:
    with pytest.raises(WMError, match=match) as caught:
        train_settings(*pairs, kind=kind)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", ["False", "false", "FALSE", "no", "off", "0"])
def test_false_in_any_spelling_is_the_bool_false(text):
    assert train_settings(f"compile={text}")[1].compile is False


@pytest.mark.parametrize("text", ["True", "true", "yes", "On", "1"])
def test_true_in_any_spelling_is_the_bool_true(text):
    assert train_settings(f"compile={text}")[1].compile is True


def test_a_bool_setting_that_is_no_bool_names_the_field_and_the_type():
    assert error("compile", "compile=maybe") == "setting compile=maybe: expected a bool (true/false)"


def test_numbers_are_checked():
    assert error("lr", "lr=abc") == "setting lr=abc: expected a finite number"
    assert error("batch_size", "batch_size=1.5") == "setting batch_size=1.5: expected a whole number"
    error("expected a whole number", "batch_size=true")
    error("expected a finite number", "lr=nan")
    error("expected a finite number", "lr=inf")
    train = train_settings("lr=1", "batch_size=1e2", "grad_clip=0.5")[1]
    assert (train.lr, train.batch_size, train.grad_clip) == (1, 100, 0.5)
    assert type(train.batch_size) is int


def test_an_unknown_key_lists_the_known_settings():
    message = error("unknown setting 'colour'", "colour=red")
    for known in ("batch_size", "compile", "lr", "num_hist", "predictor", "val_fraction", "split_seed"):
        assert known in message
    assert "normalization" not in message and "kind" not in message  # set by the run, not by a setting


def test_a_text_without_equals_is_an_error():
    error("not key=value", "compile")


def test_nested_settings_are_checked_against_their_config():
    model, _, _ = train_settings("predictor.depth=4", "encoder.width=64", "predictor.conditioning=concat")
    assert model.predictor["depth"] == 4 and model.predictor["conditioning"] == "concat"
    assert model.encoder["width"] == 64
    assert error("predictor", "predictor.depth=x") == "setting predictor.depth=x: expected a whole number"
    error("unknown setting 'encoder.colour'; known encoder settings: arch, depth", "encoder.colour=1")
    error("unknown setting 'predictor.latent_dim'", "predictor.latent_dim=8")  # the model derives it
    error("lr has no entries", "lr.x=1")


def test_each_family_checks_its_own_nested_settings():
    dino, _, _ = train_settings("encoder.weights=random", "encoder.pool=none", kind="dino")
    assert dino.encoder == {"image_size": 56, "weights": "random", "pool": None}  # over the family's defaults
    error("expected a bool", "encoder.use_cls=maybe", kind="dino")
    diffusion, _, _ = train_settings("unet.channels=[16,32]", "action_low=none", kind="diffusion")
    assert diffusion.unet["channels"] == [16, 32] and diffusion.action_low is None


def test_optional_fields_take_none():
    train, split = train_settings("time_limit_s=none", "only=null", "encoder_lr=1e-4", "val_fraction=0.2")[1:]
    assert train.time_limit_s is None and train.only is None and train.encoder_lr == 1e-4
    assert split.val_fraction == 0.2
    assert train_settings("time_limit_s=60")[1].time_limit_s == 60
    error("expected a finite number or none", "time_limit_s=soon")


def test_lists_tuples_and_dicts_are_json_checked_item_by_item():
    got = toy("pair=[2,3]", "sizes=[1,2,3]", 'extra={"a": 1}', "limit=2.5", "name=none")
    assert got == {"pair": (2, 3), "sizes": [1, 2, 3], "extra": {"a": 1}, "limit": 2.5, "name": "none"}
    for bad, expected in (("pair=[1]", "a JSON list [whole number, whole number]"),
                          ("pair=[1,1.5]", "a JSON list [whole number, whole number]"),
                          ("sizes=3", "a JSON list [whole number, ...]"),
                          ("extra=[1]", 'a JSON object, e.g. {"depth": 4}')):  # fmt: skip
        with pytest.raises(WMError) as caught:
            toy(bad)
        assert str(caught.value) == f"setting {bad}: expected {expected}"


def test_python_values_pass_the_same_checks():
    assert route_settings({"flag": True, "count": 3, "rate": 2, "pair": [4, 5]}, {"toy": Toy})["toy"] == {
        "flag": True,
        "count": 3,
        "rate": 2,
        "pair": (4, 5),
    }
    for bad in ({"flag": "maybe"}, {"flag": 1}, {"count": 2.5}, {"count": True}, {"name": 3}, {"rate": None}):
        with pytest.raises(WMError, match=f"setting {next(iter(bad))}="):
            route_settings(bad, {"toy": Toy})


def test_a_key_goes_to_the_first_target_with_the_field_and_excluded_keys_are_unknown():
    @dataclass
    class Other:
        count: int = 0
        size: int = 0

    routed = route_settings(["count=2", "size=3"], {"toy": Toy, "other": Other})
    assert routed == {"toy": {"count": 2}, "other": {"size": 3}}
    with pytest.raises(WMError, match="unknown setting 'count'; known settings: extra, flag"):
        route_settings(["count=2"], {"toy": Toy}, exclude=("count",))


@pytest.fixture
def compiled(monkeypatch):
    """What `torch.compile` was asked to compile (it returns its input: nothing is compiled)."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kwargs: calls.append(fn) or fn)
    return calls


def saved_train_config(run) -> dict:
    return json.loads((run / "model" / "config.json").read_text())["train"]


def test_api_train_with_compile_false_does_not_compile(maze, tmp_path, compiled):
    checkpoint = api.train(str(maze), str(tmp_path / "run"), steps=2, compile=False, **TINY)
    assert checkpoint == str(tmp_path / "run" / "model")
    assert saved_train_config(tmp_path / "run")["compile"] is False and compiled == []
    api.train(str(maze), str(tmp_path / "on"), steps=2, compile=True, **TINY)  # the switch itself still works
    assert saved_train_config(tmp_path / "on")["compile"] is True and len(compiled) == 1


def test_cli_train_with_compile_false_does_not_compile(maze, tmp_path, compiled, capsys):
    argv = ["train", "--data", str(maze), "--model", "jepa", "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "run"), *TINY_ARGS, "compile=False"]) == 0
    assert saved_train_config(tmp_path / "run")["compile"] is False and compiled == []
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "bad"), *TINY_ARGS, "compile=maybe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["wm: error: setting compile=maybe: expected a bool (true/false)"]
    assert not (tmp_path / "bad").exists()


def test_api_settings_of_the_wrong_type_are_refused_before_anything_runs(maze, tmp_path):
    with pytest.raises(WMError, match="setting compile=no way: expected a bool"):
        api.train(str(maze), str(tmp_path / "run"), steps=2, compile="no way", **TINY)
    with pytest.raises(WMError, match="unknown setting 'colour'"):
        api.collect("wm/PointMaze-v0", str(tmp_path / "data"), episodes=1, colour="red")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
