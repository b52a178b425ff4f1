"""The `wm` command line: the table of commands (each one's help, flags and job; the flags are in `wm.app.flags`).
Every user error prints one line (`wm: error: ...`) and exits non-zero; `--debug` shows the full traceback instead."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import NamedTuple

from wm import threads
from wm.app import flags
from wm.errors import WMError


def _config_from_args(cls, args: argparse.Namespace, **overrides):
    """A config dataclass filled from the flags of the same name (argparse turns `--image-size` into
    `image_size`), nested config dataclasses included; fields without a flag keep their defaults."""
    given = {}
    for f in dataclasses.fields(cls):
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            given[f.name] = _config_from_args(type(nested), args)
        elif hasattr(args, f.name):
            given[f.name] = getattr(args, f.name)
    return cls(**{**given, **overrides})


def _print_next(summary: dict, hint: str) -> None:
    print(json.dumps(summary, indent=2))
    print(f"next: {hint}")


def _envs(args: argparse.Namespace) -> None:
    from envs.registry import list_builtin, list_entry_points

    for row in list_builtin():
        print(
            f"{row['id']:<18} action {row['action_dim']}  proprio {row['proprio_dim']}  "
            f"{row['episode_steps']} steps  {row['description']}"
        )
    for row in list_entry_points():
        print(f"{row['id']:<18} entry point (wm.envs) -> {row['factory']}")
    print("also: --env package.module:factory (a callable returning an env, given image_size= if it takes it), "
          "or any installed gymnasium id that renders rgb_array (through the image adapter)")  # fmt: skip


def _collect(args: argparse.Namespace) -> None:
    from wm.data.collection import CollectConfig, run_collect

    summary = run_collect(_config_from_args(CollectConfig, args))
    _print_next(summary, f"wm info {summary['store']}")


def _import(args: argparse.Namespace) -> None:
    from wm.app.import_data import ImportConfig, run_import

    summary = run_import(_config_from_args(ImportConfig, args))
    _print_next(summary, f"wm info {summary['store']}")


def _export(args: argparse.Namespace) -> None:
    from wm.app.import_data import run_export

    print(json.dumps(run_export(args.store, args.out), indent=2))


def _info(args: argparse.Namespace) -> None:
    from wm.app.info import dump_json, print_info, store_info

    summary = store_info(args.path, check=args.check, repair_first=args.repair)
    (dump_json if args.json else print_info)(summary)


def _train(args: argparse.Namespace) -> None:
    from wm.app.train import TrainRunConfig, run_train

    summary = run_train(_config_from_args(TrainRunConfig, args))
    _print_next(summary, f"wm eval-model --checkpoint {summary['checkpoint']} --data {args.data}")


def _eval_model(args: argparse.Namespace) -> None:
    from wm.device import resolve_device
    from wm.evaluation.open_loop import evaluate
    from wm.models.checkpoint import load_checkpoint

    model, config = load_checkpoint(args.checkpoint, resolve_device(args.device))
    print(json.dumps(evaluate(model, config, args.data, args.horizon, args.windows), indent=2))


def _imagine(args: argparse.Namespace) -> None:
    from wm.device import resolve_device
    from wm.evaluation.open_loop import imagine_episode
    from wm.models.checkpoint import load_checkpoint

    model, config = load_checkpoint(args.checkpoint, resolve_device(args.device))
    print(json.dumps(imagine_episode(model, args.data, args.episode, args.out, config.trained_on), indent=2))


def _plan(args: argparse.Namespace) -> None:
    from wm.app.plan import PlanConfig, run_plan

    out = args.out or f"runs/plan/{time.strftime('%Y%m%d-%H%M%S')}"  # run_plan refuses a non-empty folder
    results = run_plan(_config_from_args(PlanConfig, args, out=out))
    keys = ("env", "planner", "episodes", "success_rate", "success_95ci", "zero_action_success")
    print(json.dumps({**{k: results[k] for k in keys}, "replan_ms": results["decision_latency_ms"]}, indent=2))
    print(f"results: {out}/results.json, videos {out}/episode_*.mp4, plot {out}/summary.png")


def _bc(args: argparse.Namespace) -> None:
    from wm.app.bc import BCConfig, run_bc

    summary = run_bc(_config_from_args(BCConfig, args))
    _print_next(summary, f"wm eval-policy --policy {summary['checkpoint']} --env ENV --imagined")


def _eval_policy(args: argparse.Namespace) -> None:
    from wm.app.eval_policy import EvalPolicyConfig, run_eval_policy

    out = args.out or f"runs/eval-policy/{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_eval_policy(_config_from_args(EvalPolicyConfig, args, out=out))
    keys = ("env", "policy_kind", "episodes", "success_rate", "success_95ci", "zero_action_success", "imagined")
    print(json.dumps({k: results[k] for k in keys if k in results}, indent=2))
    print(f"results: {out}/results.json, videos {out}/episode_*.mp4, plot {out}/summary.png")


def _refine(args: argparse.Namespace) -> None:
    from wm.app.refine import RefineRunConfig, run_refine

    summary = run_refine(_config_from_args(RefineRunConfig, args))
    _print_next(summary, f"wm eval-policy --policy {summary['policy']} --env ENV --imagined")


def _improve(args: argparse.Namespace) -> None:
    from wm.app.improve import ImproveConfig, run_improve

    summary = run_improve(
        _config_from_args(ImproveConfig, args, token=args.token or os.environ.get("WM_ROBOT_TOKEN", ""))
    )
    _print_next(summary, f"wm eval-policy --policy {summary['policy']} --env {args.env} --world-model "
                f"{summary['world_model']} --imagined")  # fmt: skip


def _robot(args: argparse.Namespace) -> None:
    from wm.app.robot import ServeConfig, run_keygen, run_serve

    if args.robot_command == "keygen":
        run_keygen(args.out)
    else:
        run_serve(_config_from_args(ServeConfig, args))


def _validate(args: argparse.Namespace) -> None:
    from wm.app.validate import ValidateConfig, print_summary, run_validate

    cfg = _config_from_args(ValidateConfig, args, token=args.token or os.environ.get("WM_ROBOT_TOKEN", ""))
    print_summary(run_validate(cfg))


def _demo(args: argparse.Namespace) -> None:
    from wm.app.demo import DemoConfig, run_demo

    run_demo(_config_from_args(DemoConfig, args))


class Command(NamedTuple):
    """A `wm` command: its one-line help, what adds its flags to its parser, and its job (given the parsed flags)."""

    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS: dict[str, Command] = {
    "envs": Command("list the built-in environments and wm.envs entry points", flags.envs, _envs),
    "collect": Command("collect episodes from an env into an episode store", flags.collect, _collect),
    "import": Command(
        "import a LeRobot, Minari or diffusion_policy zarr dataset into a new store", flags.import_data, _import
    ),
    "export": Command("write an episode store as another project's dataset", flags.export, _export),
    "info": Command("summarise an episode store", flags.info, _info),
    "train": Command("train a world model on an episode store", flags.train, _train),
    "eval-model": Command(
        "open-loop error, PSNR and SSIM vs copy-last on held-out episodes (JSON)",
        flags.eval_model,
        _eval_model,
    ),
    "imagine": Command("video of an episode: real frames | imagined frames", flags.imagine, _imagine),
    "plan": Command("MPC from goal images with a world model; success judged by the env", flags.plan, _plan),
    "bc": Command("goal-conditioned behaviour cloning of a policy on a world model's latents", flags.bc, _bc),
    "eval-policy": Command(
        "a policy toward goal images in the real env (and in imagination)",
        flags.eval_policy,
        _eval_policy,
    ),
    "refine": Command(
        "refine a BC policy inside its frozen world model (PPO or DSRL), no real steps",
        flags.refine,
        _refine,
    ),
    "improve": Command(
        "rounds of real episodes -> fine-tuned world model -> refined policy, on fixed held-out goals",
        flags.improve,
        _improve,
    ),
    "robot": Command("robot executor tools (serve a simulated robot over TCP, make Curve keys)", flags.robot, _robot),
    "validate": Command("run a controller on a robot over TCP and record every episode", flags.validate, _validate),
    "demo": Command("run the main job end to end on a built-in env and report", flags.demo, _demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = flags.Parser(prog="wm", description="wm-engine: world models, planning and imagination from offline data.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=flags.Parser)
    for name, command in COMMANDS.items():
        command.add_flags(sub.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    logging.basicConfig(format="wm: %(message)s", level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("wm").setLevel(logging.INFO)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        threads.configure()  # torch threads fitted to the CPUs free now, re-fitted by the long loops
        COMMANDS[args.command].run(args)
        return 0
    except WMError as e:
        if debug:
            traceback.print_exc()
        print(f"wm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wm: interrupted; everything already committed to disk is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`wm info S | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as e:  # a bug, not bad input (but a full disk): still one line unless --debug
        if debug:
            traceback.print_exc()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            print(f"wm: error: no space left on the disk{where}; free some and re-run (what was committed is kept)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(
            f"wm: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
