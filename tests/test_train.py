"""World-model training: JEPA and DINO (random-weight ViT-S) train, checkpoints round-trip exactly, a killed
run resumes at its step count, the feature cache matches live encoding, and DDP runs on CPU with gloo."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from envs.collector import collect
from wm.app.cli import main
from wm.app.train import TrainRunConfig, run_train
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore
from wm.data.windows import WindowConfig, WindowDataset
from wm.errors import WMError
from wm.models.checkpoint import load_checkpoint, read_config

TINY_COMMON = [
    "predictor.dim=32",
    "predictor.depth=1",
    "predictor.heads=2",
    "decoder_width=32",
    "batch_size=4",
    "frameskip=2",
    "num_hist=2",
    "val_every=5",
    "log_every=1",
    "warmup_steps=2",
]
TINY_JEPA = [
    "encoder.width=32",
    "encoder.depth=1",
    "encoder.heads=2",
    "encoder.out_dim=16",
    "ckpt_every=5",
    *TINY_COMMON,
]
TINY_DINO = ["encoder.weights=random", "encoder.image_size=28", *TINY_COMMON]


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "maze"
    keys, spec = store_layout("wm/PointMaze-v0", 32, 16)
    with EpisodeStore.create(path, keys, spec) as store:
        for ep in collect("wm/PointMaze-v0", 8, 16, policy="expert", seed=0, workers=1, image_size=32):
            store.append_episode(ep)
    return path


def window_batch(path, model, n=4):
    store = EpisodeStore.open(path)
    spec = model.spec
    ds = WindowDataset(store, [0, 1], WindowConfig(spec.num_hist, 2, spec.frameskip))
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("rgb", "proprio", "action")}


def test_jepa_trains_and_the_checkpoint_round_trips(maze, tmp_path):
    summary = run_train(TrainRunConfig(str(maze), "jepa", str(tmp_path / "run"), steps=8, overrides=TINY_JEPA))
    assert summary["steps"] == 8 and "val_pred" in summary
    model, config = load_checkpoint(tmp_path / "run" / "model")
    again, _ = load_checkpoint(tmp_path / "run" / "model")
    assert config.step == 8 and config.trained_on.val_episodes
    batch = window_batch(maze, model)
    h = model.spec.num_hist
    z = model.encode(batch)
    out1 = model.rollout(z[:, :h], batch["action"][:, h - 1 :], batch["action"][:, : h - 1])
    out2 = again.rollout(again.encode(batch)[:, :h], batch["action"][:, h - 1 :], batch["action"][:, : h - 1])
    assert torch.equal(out1, out2)
    assert (tmp_path / "run" / "train_log.jsonl").is_file()
    assert not list((tmp_path / "run" / "model").glob("*.pkl"))


def test_killed_training_resumes_at_its_step(maze, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "wm.app.cli", "train", "--data", str(maze), "--model", "jepa", "--out", str(out)]
    cmd += ["--steps", "60", *TINY_JEPA]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("step_0000010")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (out / "checkpoints").glob("step_*") if (p / "config.json").is_file())
    assert done, "no checkpoint was written before the kill"
    killed_at = int(done[-1].split("_")[1])
    assert killed_at < 60
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"resuming {out} from step {killed_at}" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert summary["steps"] == 60 and summary["resumed_from"] == killed_at


def test_dino_random_weights_trains_from_the_feature_cache(maze, tmp_path):
    summary = run_train(TrainRunConfig(str(maze), "dino", str(tmp_path / "run"), steps=4, overrides=TINY_DINO))
    assert summary["steps"] == 4
    model, _ = load_checkpoint(tmp_path / "run" / "model")
    store = EpisodeStore.open(maze)
    cache_keys = [k for k in store._group["features"].array_keys()]
    assert cache_keys == [model.encoder.encoder_id]
    batch = window_batch(maze, model)
    ds = WindowDataset(
        store,
        [0, 1],
        WindowConfig(model.spec.num_hist, 2, model.spec.frameskip),
        keys=("rgb", "proprio", f"features/{cache_keys[0]}"),
        rename={f"features/{cache_keys[0]}": "f"},
    )
    cached = torch.stack([ds[i]["f"] for i in range(4)]).float()
    live = model.encode_visual(batch["rgb"])
    torch.testing.assert_close(cached, live, atol=2e-2, rtol=2e-2)  # fp16 cache
    h = model.spec.num_hist
    a = batch["action"]
    z_live = model.join(live, batch["proprio"])
    z_cached = model.join(cached, batch["proprio"])
    p_live = model.rollout(z_live[:, :h], a[:, h - 1 :], a[:, : h - 1])
    p_cached = model.rollout(z_cached[:, :h], a[:, h - 1 :], a[:, : h - 1])
    torch.testing.assert_close(p_cached, p_live, atol=5e-2, rtol=5e-2)


def test_ddp_on_cpu_with_gloo(maze, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m"]
    cmd += ["wm.app.cli", "train", "--data", str(maze), "--model", "jepa", "--out", str(out), "--steps", "4"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # gloo on the CPU, also on a machine with one GPU (NCCL refuses
    result = subprocess.run([*cmd, *TINY_JEPA], capture_output=True, text=True, timeout=300, env=env)  # 2 ranks on it)
    assert result.returncode == 0, result.stderr[-2000:]
    model, config = load_checkpoint(out / "model")
    assert config.step == 4


def test_bad_train_settings_are_one_line_errors(maze, capsys, tmp_path):
    out = str(tmp_path / "r")
    for argv, match in [
        (["train", "--data", str(maze), "--model", "jepa", "--out", out, "nonsense=1"], "unknown setting"),
        (["train", "--data", str(maze), "--model", "jepa", "--out", out, "lr"], "key=value"),
        (["train", "--data", str(tmp_path / "none"), "--model", "jepa", "--out", out], "no episode store"),
        (["train", "--data", str(maze), "--model", "jepa", "--out", out, "--encoder-weights", "x.pth"], "dino"),
    ]:
        capsys.readouterr()
        assert main(argv) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def test_eval_model_and_imagine(maze, tmp_path, capsys):
    run_train(TrainRunConfig(str(maze), "jepa", str(tmp_path / "run"), steps=4, overrides=TINY_JEPA))
    ckpt = str(tmp_path / "run" / "model")
    capsys.readouterr()
    assert main(["eval-model", "--checkpoint", ckpt, "--data", str(maze), "--horizon", "3", "--windows", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["horizon_steps"] == [1, 2, 3] and result["held_out"].startswith("validation episodes")
    assert len(result["latent_mse"]["model"]) == 3 and len(result["pixel_psnr_db"]["model"]) == 3
    video = tmp_path / "imagined.mp4"
    assert main(["imagine", "--checkpoint", ckpt, "--data", str(maze), "--episode", "1", "--out", str(video)]) == 0
    assert video.stat().st_size > 1000
    size = video.stat().st_size
    capsys.readouterr()
    assert main(["imagine", "--checkpoint", ckpt, "--data", str(maze), "--episode", "1", "--out", str(video)]) != 0
    assert "already exists" in capsys.readouterr().err and video.stat().st_size == size
    assert main(["eval-model", "--checkpoint", str(tmp_path), "--data", str(maze)]) != 0
    assert "not a wm checkpoint" in capsys.readouterr().err


def test_bf16_autocast_switch_trains_on_cpu(maze, tmp_path):
    settings = [*TINY_JEPA, "bf16=true"]
    summary = run_train(TrainRunConfig(str(maze), "jepa", str(tmp_path / "bf16"), steps=3, overrides=settings))
    assert summary["steps"] == 3 and np.isfinite(summary["val_pred"])
    assert read_config(tmp_path / "bf16" / "model")["train"]["bf16"] is True


def test_init_fine_tunes_a_checkpoint_keeping_its_model_and_normalisation(maze, tmp_path):
    run_train(TrainRunConfig(str(maze), "jepa", str(tmp_path / "base"), steps=4, overrides=TINY_JEPA))
    base, base_cfg = load_checkpoint(tmp_path / "base" / "model")

    def fine_tune(name, overrides, kind="jepa", steps=2):
        init = str(tmp_path / "base" / "model")
        run_train(TrainRunConfig(str(maze), kind, str(tmp_path / name), steps=steps, overrides=overrides, init=init))
        return load_checkpoint(tmp_path / name / "model")

    # lr=0: the fine-tuned parameters must be exactly the checkpoint's, not a fresh model's (BatchNorm's running
    # statistics still move)
    tuned, cfg = fine_tune("tuned", ["lr=0", "batch_size=4"])
    assert cfg.model == base_cfg.model and cfg.init["step"] == 4
    params = zip(base.parameters(), tuned.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in params)
    moved, _ = fine_tune("moved", ["batch_size=4"])
    assert not torch.equal(base.predictor.head.weight, moved.predictor.head.weight)
    assert torch.equal(base.action_mean, moved.action_mean)
    with pytest.raises(WMError, match="drop the model setting"):
        fine_tune("x", ["num_hist=3"], steps=1)
    with pytest.raises(WMError, match="pass --model jepa"):
        fine_tune("y", [], kind="dino", steps=1)


class NormedToy(torch.nn.Module):
    """A linear layer and a BatchNorm; its loss draws from torch's random stream, as SIGReg does."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)

    def forward(self, batch):
        out = self.norm(self.linear(batch["x"]))
        return (out * torch.randn_like(out)).mean(), {}


def test_batchnorm_statistics_are_re_estimated_under_the_current_weights(tmp_path):
    """Running statistics become the average over `bn_batches` training batches (not the lagging exponential
    average), the momentum is restored, and training's random stream is left as it was."""
    from wm.train import TrainConfig, Trainer

    data = [{"x": torch.randn(3) * 5 + 2} for _ in range(40)]
    trainer = Trainer(NormedToy(), data, None, TrainConfig(batch_size=4, bn_batches=3), tmp_path, {}, device="cpu")
    norm = trainer.model.norm
    norm.running_mean.fill_(100.0)
    state = torch.get_rng_state()
    trainer.recalibrate_batchnorm()
    assert torch.equal(torch.get_rng_state(), state) and norm.momentum == 0.1 and int(norm.num_batches_tracked) == 3
    with torch.no_grad():
        hidden = [trainer.model.linear(b["x"]) for b in trainer._loader(data, 3, 0, seed=1)]
    torch.testing.assert_close(norm.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([h.var(0) for h in hidden]).mean(0))


def test_checkpoints_carry_re_estimated_batchnorm_statistics(maze, tmp_path):
    tracked = {}
    for batches in (0, 3):
        settings = [*TINY_JEPA, f"bn_batches={batches}"]
        run_train(TrainRunConfig(str(maze), "jepa", str(tmp_path / f"bn{batches}"), steps=5, overrides=settings))
        model, _ = load_checkpoint(tmp_path / f"bn{batches}" / "model")
        tracked[batches] = int(model.encoder.projector[1].num_batches_tracked)  # BatchNorm calls counted
    assert tracked[3] * 5 == tracked[0] * 3  # the statistics of 3 batches after 5 steps, not those of the 5 steps


def test_a_resumed_run_leaves_no_temporary_folders_and_logs_each_step_once(maze, tmp_path):
    """Issue 28 item 21. Before: `.step_N.tmp-PID` folders a kill left were never cleaned, and the log got the rows
    between the last checkpoint and the kill twice."""
    out = tmp_path / "run"
    settings = [*TINY_JEPA, "log_every=1", "ckpt_every=2", "keep=5"]
    run_train(TrainRunConfig(str(maze), "jepa", str(out), steps=4, overrides=settings))
    shutil.rmtree(out / "checkpoints" / "step_0000004")  # as if killed after logging steps 3 and 4
    stale = out / "checkpoints" / ".step_0000004.tmp-999999999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    run_train(TrainRunConfig(str(maze), "jepa", str(out), steps=4, overrides=settings))
    assert not stale.exists()
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "grad_norm" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4 and sum("summary" in r for r in rows) == 1


def test_a_resumed_run_ends_with_the_weights_of_an_unbroken_one(maze, tmp_path):
    """Issue 28 item 19. Before: after a kill, the losses matched up to the last checkpoint and differed from the
    first step after it (the resumed data loader drew its seed from the restored random stream)."""
    from safetensors.torch import load_file

    settings = [*TINY_JEPA, "log_every=1", "ckpt_every=3", "val_every=3", "keep=5"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    for out in (unbroken, broken):
        run_train(TrainRunConfig(str(maze), "jepa", str(out), steps=6, overrides=settings))
    shutil.rmtree(broken / "checkpoints" / "step_0000006")  # as if killed between steps 3 and 6
    shutil.rmtree(broken / "model")
    run_train(TrainRunConfig(str(maze), "jepa", str(broken), steps=6, overrides=settings))
    losses = [
        [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines() if "grad_norm" in line]
        for out in (unbroken, broken)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    a, b = (load_file(out / "model" / "model.safetensors") for out in (unbroken, broken))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=0", "batch_size=0 must be at least 1"),
        ("batch_size=-1", "batch_size=-1 must be at least 1"),
        ("batch_size=1000000000", "batch_size=1000000000 is above 65536"),
        ("steps=-3", "steps=-3 must be at least 1"),
        ("lr=-0.1", "must not be negative"),
        ("encoder.width=0", "width=0 must be a positive integer"),
        ("encoder.width=100000", "at most 4096"),
        ("image_size=100000", "image_size=100000 must be an integer in [16, 1024]"),
    ],
)
def test_unusable_training_settings_are_one_line_errors(maze, tmp_path, capsys, override, message):
    """Issue 28 item 22: these failed deep in torch (`wm: internal error`), tried to allocate for minutes, or were
    silently ignored (`steps=-3`)."""
    from wm.app.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(maze), "--model", "jepa", "--out", str(out), override]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("wm: error:") and message in last
    assert not out.exists()
