"""Sweep: bad input to every `wm` verb must be a one-line `wm: error: ...` (exit 2), never an internal error or a run.

Each case is a command line that no run can use (a missing or wrong path, an output over a file or inside a
checkpoint, a number out of range or not a number, a damaged checkpoint config, a checkpoint of another env, a
policy where a world model goes, a setting of the wrong type), run in this process through `wm.app.cli.main` with
a time limit. Outcomes: `error` (exit 2, the last stderr line starts `wm: error:`: what is wanted), `internal`
(`wm: internal error`), `accepted` (exit 0, or still running at the time limit). Fixtures (a small PointMaze and
Wall store, damaged copies of a shipped checkpoint, files where folders go) are made in a temporary folder first.
Prints one JSON line per case that is not `error`, then a summary; exit 1 if any case is not `error`.

    python scripts/bad_inputs.py [--only VERB ...] [--limit-s 60]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import envs  # noqa: F401  (first: the GL/LLVM load order)
from envs.collector import collect
from wm.app.cli import main
from wm.data.layout import store_layout
from wm.data.store import EpisodeStore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints"
MAZE, WALL = "wm/PointMaze-v0", "wm/Wall-v0"
COUNTS = ["0", "-3", "abc", "1.5", ""]  # for a flag that takes a whole number >= 1
REALS = ["nan", "abc", "-1", "inf"]  # for a flag that takes a positive real number


class TimeLimit(BaseException):
    """Raised by the alarm: the command was still running (BaseException: `main` must not catch it)."""


def fixtures(tmp: Path) -> dict[str, str]:
    """The paths the cases use, made under `tmp`."""
    paths = {}
    for name, env, steps in (("maze", MAZE, 12), ("wall", WALL, 12), ("maze100", MAZE, None)):
        keys, spec = store_layout(env, 64, steps or 100)
        with EpisodeStore.create(tmp / name, keys, spec) as store:
            for ep in collect(env, 2, steps or 100, policy="expert", seed=0, workers=1, image_size=64):
                store.append_episode(ep)
        paths[name] = str(tmp / name)
    (tmp / "file.txt").write_text("keep me")
    (tmp / "empty").mkdir()
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("mine")
    damaged = {"null": "null", "list": "[1]", "text": "not json", "nomodel": "{}", "noweights": None}
    for name, text in damaged.items():
        shutil.copytree(SHIPPED / "jepa-pointmaze", tmp / f"ck_{name}")
        if text is None:
            (tmp / f"ck_{name}" / "model.safetensors").unlink()
        else:
            (tmp / f"ck_{name}" / "config.json").write_text(text)
        paths[f"ck_{name}"] = str(tmp / f"ck_{name}")
    config = json.loads((SHIPPED / "jepa-pointmaze" / "config.json").read_text())
    for name, change in {
        "str_size": lambda m: m.update(image_size="64"),
        "wide": lambda m: m["encoder"].update(width=100_000),
        "kind": lambda m: m.update(kind="vae"),
    }.items():
        shutil.copytree(SHIPPED / "jepa-pointmaze", tmp / f"ck_{name}")
        bad = json.loads(json.dumps(config))
        change(bad["model"])
        (tmp / f"ck_{name}" / "config.json").write_text(json.dumps(bad))
        paths[f"ck_{name}"] = str(tmp / f"ck_{name}")
    (tmp / "not.mp4").write_text("x")
    (tmp / "goals.npz").write_text("not an npz")
    paths.update(file=str(tmp / "file.txt"), empty=str(tmp / "empty"), full=str(tmp / "full"),
                 missing=str(tmp / "missing"), mp4=str(tmp / "not.mp4"), npz=str(tmp / "goals.npz"))  # fmt: skip
    return paths


def cases(p: dict[str, str], tmp: Path) -> list[tuple[str, list[str]]]:
    """`(verb, argv)` of every case; each `--out` that should stay unmade is a new path under `tmp`."""
    n = iter(range(10_000))

    def new() -> str:
        return str(tmp / f"out{next(n)}")

    wm, pol, wall_wm = str(SHIPPED / "jepa-pointmaze"), str(SHIPPED / "bc-pointmaze"), str(SHIPPED / "jepa-wall")
    dsrl = str(SHIPPED / "dsrl-pointmaze")
    bad_checkpoints = [p["missing"], p["file"], p["empty"], p["maze"], pol, *(p[k] for k in p if k.startswith("ck_"))]
    c: list[tuple[str, list[str]]] = [("wm", ["frobnicate"]), ("envs", ["envs", "--bogus"])]

    col = ["collect", "--episodes", "1", "--steps", "3", "--workers", "1"]
    c += [
        ("collect", [*col, "--env", env, "--out", new()])
        for env in ("NoSuchEnv-v9", "nomodule:factory", "os:getcwd", "os.path:join", "wm/PointMaze-v0:x", "")
    ]
    c += [
        ("collect", [*col, "--env", MAZE, "--policy", policy, "--out", new()])
        for policy in ("x", "nomodule:f", "os:getcwd", "envs.reacher:reaching_policy", "")
    ]
    for flag in ("--episodes", "--steps", "--workers", "--image-size"):
        c += [("collect", [*_set(col, flag, v), "--env", MAZE, "--out", new()]) for v in COUNTS]
    c += [("collect", [*col, "--env", MAZE, "--image-size", v, "--out", new()]) for v in ("8", "100000")]
    c += [("collect", [*col, "--env", MAZE, "--seed", v, "--out", new()]) for v in ("-1", "x")]
    c += [("collect", [*col, "--env", env, "--out", out]) for env, out in
          ((MAZE, p["file"]), (WALL, p["maze"]), (MAZE, p["full"]), (MAZE, p["ck_null"]))]  # fmt: skip

    c += [("import", ["import", fmt, src, "--out", new()]) for fmt in ("lerobot", "minari", "zarr")
          for src in (p["missing"], p["file"], p["empty"], p["maze"]) if (fmt, src) != ("zarr", p["maze"])]  # fmt: skip
    c += [("import", ["import", "hdf5", p["maze"], "--out", new()])]
    c += [("import", ["import", "zarr", p["maze"], "--out", out]) for out in (p["file"], p["full"])]
    c += [("import", ["import", "zarr", p["maze"], "--out", new(), "--image-size", v]) for v in COUNTS]

    c += [("export", ["export", "lerobot", src, "--out", new()]) for src in (p["missing"], p["file"], p["empty"], wm)]
    c += [("export", ["export", "lerobot", p["maze"], "--out", out]) for out in (p["file"], p["full"])]
    c += [("export", ["export", "parquet", p["maze"], "--out", new()])]

    c += [("info", ["info", path]) for path in (p["missing"], p["file"], p["empty"], wm, p["full"])]

    train = ["train", "--data", p["maze100"], "--model", "jepa", "--steps", "1"]
    c += [("train", ["train", "--data", data, "--model", "jepa", "--steps", "1", "--out", new()])
          for data in (p["missing"], p["file"], p["empty"], wm)]  # fmt: skip
    c += [("train", ["train", "--data", p["maze100"], "--model", m, "--out", new()]) for m in ("vae", "")]
    c += [("train", [*train, "--out", out]) for out in (p["file"], str(Path(wm) / "run"), wm)]
    c += [("train", ["train", "--data", p["maze100"], "--model", "jepa", "--out", new(), flag, v])
          for flag in ("--steps", "--epochs") for v in COUNTS]  # fmt: skip
    c += [("train", [*train, "--out", new(), "--encoder-weights", p["file"]]),
          ("train", ["train", "--data", p["maze100"], "--model", "dino", "--out", new(), "--steps", "1"]),
          ("train", ["train", "--data", p["maze100"], "--model", "dino", "--out", new(), "--encoder-weights",
                     p["file"]]),
          ("train", ["train", "--data", p["maze100"], "--model", "dino", "--out", new(), "--encoder-weights",
                     p["missing"]])]  # fmt: skip
    c += [("train", [*train, "--out", new(), "--init", init]) for init in (p["missing"], pol, wall_wm, p["ck_null"])]
    c += [("train", [*train, "--out", new(), "--init", wm, "encoder.width=32"])]
    c += [("train", ["train", "--data", p["maze100"], "--model", "diffusion", "--steps", "1", "--out", new(), "--init",
                     wm])]  # fmt: skip
    overrides = ["nosuch=1", "lr=abc", "lr=nan", "lr=-1", "batch_size=0", "batch_size=-1", "batch_size=1e9",
                 "batch_size=abc", "encoder.width=0", "encoder.width=100000", "bf16=maybe", "image_size=100000",
                 "steps=-3", "time_limit_s=0", "predictor.depth=0", "encoder.patch_size=7", "encoder.tokens=3",
                 "noequals", "=1", "encoder=3", "encoder.nosuch=1", "val_fraction=2", "val_fraction=-0.1",
                 "weight_decay=-1", "grad_clip=-1", "keep=0", "num_hist=0", "frameskip=0", "frameskip=1000",
                 "sigreg_weight=abc", "predictor.heads=0", "predictor.dim=130", "compile=3"]  # fmt: skip
    c += [("train", [*train, "--out", new(), o]) for o in overrides]
    c += [("train", ["train", "--data", p["wall"], "--model", "jepa", "--steps", "1", "--out", new(), "--init", wm])]

    for checkpoint in bad_checkpoints:
        c += [("eval-model", ["eval-model", "--checkpoint", checkpoint, "--data", p["maze100"]])]
    c += [("eval-model", ["eval-model", "--checkpoint", wm, "--data", data])
          for data in (p["missing"], p["file"], p["wall"], wm)]  # fmt: skip
    c += [("eval-model", ["eval-model", "--checkpoint", wm, "--data", p["maze100"], flag, v])
          for flag in ("--horizon", "--windows") for v in COUNTS]  # fmt: skip
    c += [("eval-model", ["eval-model", "--checkpoint", wm, "--data", p["maze100"], "--device", d])
          for d in ("tpu", "cuda:99", "")]  # fmt: skip

    c += [("imagine", ["imagine", "--checkpoint", ck, "--data", p["maze100"], "--out", new() + ".mp4"])
          for ck in (p["missing"], pol, p["ck_null"])]  # fmt: skip
    c += [("imagine", ["imagine", "--checkpoint", wall_wm, "--data", p["maze100"], "--out", new() + ".mp4"]),
          ("imagine", ["imagine", "--checkpoint", wm, "--data", p["maze100"], "--out", new()]),
          ("imagine", ["imagine", "--checkpoint", wm, "--data", p["maze100"], "--out", p["mp4"]]),
          ("imagine", ["imagine", "--checkpoint", wm, "--data", p["maze100"], "--episode", "999", "--out",
                       new() + ".mp4"]),
          ("imagine", ["imagine", "--checkpoint", wm, "--data", p["maze100"], "--episode", "-1", "--out",
                       new() + ".mp4"])]  # fmt: skip

    plan = ["plan", "--checkpoint", wm, "--env", MAZE, "--data", p["maze100"], "--episodes", "2"]
    c += [("plan", ["plan", "--checkpoint", ck, "--env", MAZE, "--out", new()]) for ck in bad_checkpoints]
    c += [("plan", ["plan", "--checkpoint", wm, "--env", env, "--out", new()])
          for env in (WALL, "NoSuchEnv-v9", "os:getcwd")]  # fmt: skip
    for flag in ("--episodes", "--budget", "--goal-offset", "--samples", "--iterations", "--elites", "--horizon",
                 "--replan-every", "--guide-samples"):  # fmt: skip
        c += [("plan", [*_set(plan, flag, v), "--out", new()]) for v in COUNTS]
    c += [("plan", [*plan, "--out", new(), *extra]) for extra in (
        ["--goal-offset", "100000"], ["--samples", "10", "--elites", "20"], ["--planner", "sgd"],
        ["--proprio-weight", "nan"], ["--proprio-weight", "abc"], ["--proprio-weight", "-1"],
        ["--objective-mode", "best"], ["--guide", p["missing"]], ["--guide", wm], ["--guide", str(SHIPPED / "bc-wall")],
        ["--data", p["missing"]], ["--data", p["wall"]], ["--seed", "-1"], ["--device", "tpu"],
        ["--goal-source", "nowhere"], ["--goal-velocity", "fast"])]  # fmt: skip
    c += [("plan", [*plan, "--out", out]) for out in (p["file"], p["full"])]

    bc = ["bc", "--data", p["maze100"], "--world-model", wm, "--policy", "gaussian", "--steps", "1"]
    c += [("bc", ["bc", "--data", data, "--world-model", wm, "--policy", "gaussian", "--out", new()])
          for data in (p["missing"], p["file"], p["wall"])]  # fmt: skip
    c += [("bc", ["bc", "--data", p["maze100"], "--world-model", ck, "--policy", "gaussian", "--out", new()])
          for ck in (p["missing"], pol, p["ck_null"], wall_wm)]  # fmt: skip
    c += [("bc", [*_set(bc, "--policy", kind), "--out", new()]) for kind in ("ppo", "")]
    c += [("bc", [*bc, "--out", out]) for out in (p["file"], str(Path(wm) / "bc"))]
    c += [("bc", [*_set(bc, flag, v), "--out", new()]) for flag in ("--demos", "--steps", "--goal-blocks")
          for v in COUNTS]  # fmt: skip
    c += [
        ("bc", [*bc, "--out", new(), *extra])
        for extra in (
            ["--goal-blocks", "1000"],
            ["width=0"],
            ["lr=abc"],
            ["nosuch=1"],
            ["--seed", "-1"],
            ["--device", "tpu"],
        )
    ]

    ev = ["eval-policy", "--policy", pol, "--env", MAZE, "--data", p["maze100"], "--episodes", "2"]
    c += [("eval-policy", ["eval-policy", "--policy", policy, "--env", MAZE, "--out", new()])
          for policy in (p["missing"], p["file"], wm, p["ck_null"])]  # fmt: skip
    c += [("eval-policy", [*_set(ev, flag, v), "--out", new()]) for flag in ("--episodes", "--budget", "--goal-offset")
          for v in COUNTS]  # fmt: skip
    c += [("eval-policy", [*ev, "--out", new(), *extra]) for extra in (
        ["--world-model", wall_wm], ["--world-model", p["missing"]], ["--env", WALL], ["--env", "NoSuchEnv-v9"],
        ["--data", p["wall"]], ["--data", p["missing"]])]  # fmt: skip
    c += [("eval-policy", [*ev, "--out", out]) for out in (p["file"], p["full"])]

    refine = ["refine", "--policy", pol, "--algo", "ppo", "--imagined-steps", "64", "--data", p["maze100"]]
    c += [("refine", ["refine", "--policy", policy, "--algo", "ppo", "--out", new()])
          for policy in (p["missing"], p["file"], wm)]  # fmt: skip
    c += [("refine", [*_set(refine, "--algo", algo), "--out", new()]) for algo in ("sac", "dsrl", "")]
    c += [("refine", ["refine", "--policy", dsrl, "--algo", "ppo", "--out", new()])]
    c += [("refine", [*_set(refine, "--imagined-steps", v), "--out", new()]) for v in COUNTS]
    c += [("refine", [*refine, "--out", new(), o]) for o in (
        "num_envs=0", "n_steps=0", "lr=0", "lr=nan", "gamma=2", "gae_lambda=-1", "clip_range=0", "nosuch=1",
        "anchor=-1", "checkpoint_every=7", "batch_size=0", "n_epochs=0", "horizon=0", "reward=money",
        "goal_blocks=[5,1]", "goal_blocks=abc", "critic_width=0")]  # fmt: skip
    c += [("refine", [*refine, "--out", new(), *extra]) for extra in (
        ["--eval-env", "NoSuchEnv-v9"], ["--eval-env", WALL], ["--data", p["wall"]], ["--world-model", wall_wm],
        ["--eval-episodes", "0"], ["--device", "tpu"])]  # fmt: skip
    c += [("refine", [*refine, "--out", out]) for out in (p["file"], str(Path(wm) / "r"))]

    improve = ["improve", "--policy", pol, "--env", MAZE, "--data", p["maze100"], "--rounds", "1", "--episodes", "2"]
    c += [("improve", [*_set(improve, "--policy", policy), "--out", new()]) for policy in (p["missing"], p["file"], wm,
                                                                                             dsrl)]  # fmt: skip
    c += [("improve", [*_set(improve, flag, v), "--out", new()]) for flag in ("--rounds", "--episodes", "--budget")
          for v in COUNTS]  # fmt: skip
    c += [("improve", [*improve, "--out", new(), *extra]) for extra in (
        ["--eval-episodes", "0"], ["--finetune-steps", "-1"], ["--imagined-steps", "abc"], ["--env", WALL],
        ["--data", p["wall"]], ["--data", p["missing"]], ["--world-model", wall_wm], ["--device", "tpu"],
        ["--eval-data", p["maze100"]], ["train.lr=abc"], ["train.steps=5"], ["train.only=encoder"],
        ["refine.num_envs=0"], ["refine.algo=dsrl"], ["refine.anchor=-1"], ["nosuch=1"], ["lr=1e-3"],
        ["--judge", "sim"], ["--hz", "5"], ["--robot", "tcp://127.0.0.1:1"], ["--robot", "not-an-address"],
        ["--robot", "tcp://127.0.0.1:1", "--hz", "0"], ["--robot", "tcp://127.0.0.1:1", "--judge", "nope"],
        ["--robot", "tcp://127.0.0.1:1", "--server-key", p["missing"]])]  # fmt: skip
    c += [("improve", [*improve, "--out", out]) for out in (p["file"], str(Path(wm) / "r"))]

    serve = ["robot", "serve", "--env", MAZE, "--port", "0"]
    c += [("robot", ["robot", "serve", "--env", env]) for env in ("NoSuchEnv-v9", "os:getcwd")]
    c += [("robot", ["robot", "serve", "--robot", r]) for r in ("nomodule:f", "os:getcwd")]
    c += [("robot", [*_set(serve, "--port", v)]) for v in ("-1", "70000", "abc")]
    c += [("robot", [*serve, *extra]) for extra in (
        ["--host", "0.0.0.0"], ["--curve-key", p["missing"]], ["--curve-key", p["file"]], ["--watchdog", "nan"],
        ["--watchdog", "-1"], ["--watchdog", "0"], ["--low", "abc"], ["--low", "1", "--high", "0"],
        ["--low", "0,0,0"], ["--max-delta", "-1"], ["--max-rate", "0"], ["--max-rate", "nan"],
        ["--workspace-low", "a,b"], ["--workspace-low", "1,1", "--workspace-high", "0,0"], ["--image-size", "0"],
        ["--seed", "-1"])]  # fmt: skip
    c += [("robot", ["robot", "keygen", "--out", p["file"]]), ("robot", ["robot"]), ("robot", ["robot", "dance"])]

    validate = ["validate", "--robot", "tcp://127.0.0.1:9", "--episodes", "1", "--timeout", "0.2"]
    c += [("validate", [*validate, "--controller", "random", "--out", new(), *extra]) for extra in (
        ["--robot", "nothing"], ["--robot", "tcp://127.0.0.1:99999"], ["--episodes", "0"], ["--goals", p["missing"]],
        ["--goals", p["npz"]], ["--threshold", "nan"], ["--hz", "0"], ["--hz", "-1"], ["--timeout", "0"],
        ["--timeout", "-1"], ["--chunk", "0"], ["--budget", "0"], ["--server-key", p["missing"]])]  # fmt: skip
    c += [("validate", [*validate, "--controller", ctl, "--out", new(), *extra]) for ctl, extra in (
        ("mpc", []), ("policy", []), ("mpc", ["--checkpoint", pol]), ("policy", ["--policy", wm]),
        ("mpc", ["--checkpoint", p["missing"]]), ("dance", []))]  # fmt: skip
    c += [("validate", [*validate, "--controller", "random", "--out", out]) for out in (p["file"], p["full"])]

    c += [("demo", ["demo", *extra]) for extra in (
        ["--env", "NoSuchEnv-v9"], ["--env", "envs.reacher:make_reacher"], ["--episodes", "0"],
        ["--random-episodes", "-1"], ["--train-minutes", "0"], ["--train-minutes", "nan"], ["--train-minutes", "-1"],
        ["--out", p["file"]], ["--seed", "-1"])]  # fmt: skip
    return c


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with the value after `flag` replaced (or the flag appended with it)."""
    if flag not in argv:
        return [*argv, flag, value]
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def run_case(argv: list[str], limit_s: int) -> tuple[str, str]:
    """`(outcome, last stderr line)` of `wm argv` in this process."""
    err = io.StringIO()

    def alarm(*_):
        raise TimeLimit

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except TimeLimit:
        return "accepted", f"still running after {limit_s} s"
    except SystemExit as e:  # argparse's --help and the like
        code = e.code
    finally:
        signal.alarm(0)
    lines = [line for line in err.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if code == 2 and last.startswith("wm: error:"):
        return "error", last
    if "internal error" in last:
        return "internal", last
    return ("accepted" if code == 0 else f"exit {code}"), last


def preload() -> None:
    """Import what the commands import, before any alarm can interrupt an import halfway (which would leave a
    module half-made for every later case)."""
    import importlib

    for name in ("torch", "timm", "diffusers", "stable_baselines3", "wm.app.train", "wm.app.plan", "wm.app.bc",
                 "wm.app.refine", "wm.app.eval_policy", "wm.app.validate", "wm.app.robot", "wm.app.import_data",
                 "wm.app.demo", "wm.app.improve", "wm.evaluation.open_loop", "policies.refine",
                 "envs.registry"):  # fmt: skip
        importlib.import_module(name)


def main_sweep() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="verbs to sweep (default: all)")
    parser.add_argument("--limit-s", type=int, default=60, help="seconds a case may run before it counts as accepted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        preload()
        paths = fixtures(tmp)
        all_cases = [(v, a) for v, a in cases(paths, tmp) if not args.only or v in args.only]
        outcomes: Counter = Counter()
        per_verb: dict[str, Counter] = {}
        started = time.time()
        for verb, argv in all_cases:
            outcome, line = run_case(argv, args.limit_s)
            outcomes[outcome] += 1
            per_verb.setdefault(verb, Counter())[outcome] += 1
            if outcome != "error":
                print(json.dumps({"verb": verb, "argv": argv, "outcome": outcome, "stderr": line[:300]}), flush=True)
        kept = (tmp / "file.txt").read_text() == "keep me" and (tmp / "full" / "keep.txt").read_text() == "mine"
    summary = {"cases": len(all_cases), "outcomes": dict(outcomes), "per_verb": {v: dict(c) for v, c in
               per_verb.items()}, "existing_files_kept": kept, "seconds": round(time.time() - started, 1)}  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0 if outcomes["error"] == len(all_cases) and kept else 1


if __name__ == "__main__":
    sys.exit(main_sweep())
