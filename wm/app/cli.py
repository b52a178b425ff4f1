"""The `wm` command line. Every user error prints one line (`wm: error: ...`) and exits non-zero;
`--debug` shows the full traceback instead."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import traceback

from wm.errors import WMError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line naming the fix, instead of usage + error."""

    def error(self, message: str):
        raise WMError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _int_at_least(minimum: int):
    """argparse type: a whole number >= minimum, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_seed = _int_at_least(0)


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


def _add_mpc_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `planners.mpc.MPCConfig`: planner, search budget, objective, replanning. Each defaults to None
    (not given), so the checkpoint's planning preset, else the `MPCConfig` default, fills it (`with_preset`)."""
    on_off = argparse.BooleanOptionalAction
    p.add_argument("--planner", choices=("cem", "icem", "mppi", "cmaes", "gradient"), help="default cem")
    p.add_argument("--samples", type=_positive_int, help="candidates per iteration (default 300)")
    p.add_argument("--iterations", type=_positive_int, help="planner iterations per replan (default 10)")
    p.add_argument("--elites", type=_positive_int, help="CEM/iCEM elites, at most --samples (default 30)")
    p.add_argument("--hold-in-block", action=on_off, help="plan one env action per frameskip block (default off)")
    p.add_argument("--horizon", type=_positive_int, help="planning horizon in world-model steps (default 8)")
    p.add_argument("--replan-every", type=_positive_int, help="world-model steps executed per plan (default 1)")
    p.add_argument("--proprio-weight", type=float, help="weight of the proprio term in the objective (default 10)")
    p.add_argument(
        "--objective-mode",
        choices=("last", "all", "weighted"),
        help="goal distance of the last imagined frame, the mean over the horizon, or weighted toward the end "
        "(default weighted)",
    )
    p.add_argument(
        "--proprio-mode",
        choices=("last", "all", "weighted"),
        help="the same choice for the proprio term (default last: be at the goal, at rest, when the horizon ends)",
    )
    p.add_argument("--bf16", action=on_off, help="imagine under bfloat16 autocast (faster on AMX CPUs and GPUs)")


def _add_device_flag(p: argparse.ArgumentParser) -> None:
    """`--device`: where the models run (`wm.device.resolve_device` checks it)."""
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:K")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wm", description="wm-engine: world models, planning and imagination from offline data.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("envs", help="list the built-in environments and wm.envs entry points")

    p = sub.add_parser("collect", help="collect episodes from an env into an episode store")
    p.add_argument("--env", required=True, help="env id (`wm envs`), pkg.module:factory or a gymnasium id")
    p.add_argument("--episodes", required=True, type=_positive_int, help="number of episodes to add")
    p.add_argument("--out", required=True, help="store path (created, or appended to if it has the same spec)")
    p.add_argument(
        "--policy",
        choices=("random", "smooth", "expert"),
        default="expert",
        help="behaviour policy: noisy scripted expert, i.i.d. uniform random, or time-correlated random",
    )
    p.add_argument("--seed", type=_seed, default=0, help="base seed (episode i uses a seed derived from it)")
    p.add_argument("--workers", type=_positive_int, default=min(2, os.cpu_count() or 1), help="parallel envs")
    p.add_argument("--steps", type=_positive_int, default=None, help="steps per episode (default: the env's)")
    p.add_argument("--image-size", type=_positive_int, default=64, help="square image size in pixels")
    p.add_argument(
        "--durable", action="store_true", help="fsync every episode before committing it (survives power loss)"
    )

    p = sub.add_parser("import", help="import a LeRobot, Minari or diffusion_policy zarr dataset into a new store")
    p.add_argument("format", choices=("lerobot", "minari", "zarr"), help="source format")
    p.add_argument("src", help="dataset directory (zarr: also a .zarr.zip; minari: also a local dataset id)")
    p.add_argument("--out", required=True, help="new store path (never overwritten)")
    p.add_argument("--camera", "--rgb-key", dest="rgb_key", help="image feature / key (default: auto-detect)")
    p.add_argument("--proprio-key", help="state feature / key (default: auto-detect)")
    p.add_argument("--action-key", help="action feature / key (default: action)")
    p.add_argument("--image-size", type=_positive_int, default=64, help="square image size in pixels")

    p = sub.add_parser("export", help="write an episode store as another project's dataset")
    p.add_argument("format", choices=("lerobot",), help="target format (LeRobot v3.0)")
    p.add_argument("store", help="episode store path")
    p.add_argument("--out", required=True, help="new dataset directory (never overwritten)")

    p = sub.add_parser("info", help="summarise an episode store")
    p.add_argument("path", help="store path")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--check", action="store_true", help="decode every chunk to verify the data")
    p.add_argument(
        "--repair",
        action="store_true",
        help="first remove what an interrupted write left (a damaged index: keep the episodes before the damage)",
    )

    p = sub.add_parser("train", help="train a world model on an episode store")
    p.add_argument("--data", required=True, help="episode store path")
    p.add_argument("--model", required=True, choices=("jepa", "dino", "diffusion"), help="model family")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, help="optimisation steps")
    length.add_argument("--epochs", type=_positive_int, help="passes over the training windows")
    p.add_argument("--encoder-weights", help="DINOv2 weights file (Meta .pth, HF model.safetensors or timm)")
    p.add_argument("--init", help="fine-tune this checkpoint (its model and normalisation) instead of a new model")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. lr=1e-3 predictor.depth=4")

    p = sub.add_parser("eval-model", help="open-loop error, PSNR and SSIM vs copy-last on held-out episodes (JSON)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--data", required=True, help="episode store of the same env")
    p.add_argument("--horizon", type=_positive_int, default=5, help="imagined steps (each frameskip env steps)")
    p.add_argument("--windows", type=_positive_int, default=512, help="held-out windows to evaluate")
    _add_device_flag(p)

    p = sub.add_parser("imagine", help="video of an episode: real frames | imagined frames")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--data", required=True, help="episode store")
    p.add_argument("--episode", type=_seed, default=0, help="episode index")
    p.add_argument("--out", required=True, help="output .mp4 file (must not exist)")
    _add_device_flag(p)

    p = sub.add_parser("plan", help="MPC from goal images with a world model; success judged by the env")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--env", required=True, help="env id the checkpoint was trained on")
    p.add_argument("--episodes", type=_positive_int, default=50, help="goals to reach (planned in one batch)")
    p.add_argument("--goal-source", default="dataset", choices=("dataset", "random"))
    p.add_argument("--budget", type=_positive_int, default=50, help="env steps per episode")
    p.add_argument("--goal-offset", type=_positive_int, default=25, help="env steps from start to goal (dataset)")
    p.add_argument("--data", help="store with held-out episodes for dataset goals (default: the training store)")
    p.add_argument("--out", default=None, help="results directory (default runs/plan/<timestamp>)")
    _add_mpc_flags(p)
    p.add_argument(
        "--goal-velocity",
        default="rest",
        choices=("rest", "observed"),
        help="zero the goal's proprio velocities (arrive and stay) or keep the goal frame's",
    )
    p.add_argument("--seed", type=_seed, default=0)
    _add_device_flag(p)

    p = sub.add_parser("bc", help="goal-conditioned behaviour cloning of a policy on a world model's latents")
    p.add_argument("--data", required=True, help="store with expert episodes (`wm collect --policy expert`)")
    p.add_argument("--world-model", required=True, help="world model (checkpoint or `wm train --out` folder) to read")
    p.add_argument("--policy", required=True, choices=("gaussian", "diffusion"), help="policy kind")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    p.add_argument("--demos", type=_positive_int, default=None, help="keep only this many expert episodes")
    p.add_argument("--steps", type=_positive_int, default=4000, help="optimisation steps")
    p.add_argument("--goal-blocks", type=_positive_int, default=3, help="hindsight goals 1..K blocks ahead")
    p.add_argument("--seed", type=_seed, default=0)
    _add_device_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. width=512 lr=3e-4")

    p = sub.add_parser("eval-policy", help="a policy toward goal images in the real env (and in imagination)")
    p.add_argument("--policy", required=True, help="policy checkpoint or `wm bc`/`wm refine` --out folder")
    p.add_argument("--env", required=True, help="env id the policy's world model was trained on")
    p.add_argument("--episodes", type=_positive_int, default=100, help="goals to reach (run in one batch)")
    p.add_argument("--budget", type=_positive_int, default=50, help="env steps per episode")
    p.add_argument("--goal-offset", type=_positive_int, default=25, help="env steps from start to goal")
    p.add_argument("--data", help="store with held-out episodes for goals (default: the world model's store)")
    p.add_argument("--world-model", help="the policy's world model, if it moved (checked by hash)")
    p.add_argument("--imagined", action="store_true", help="also run the same start/goal pairs in the world model")
    p.add_argument("--stochastic", action="store_true", help="sample a Gaussian policy instead of its mean")
    p.add_argument(
        "--goal-velocity", default="rest", choices=("rest", "observed"), help="zero the goal's proprio velocities"
    )
    p.add_argument("--out", default=None, help="results directory (default runs/eval-policy/<timestamp>)")
    p.add_argument("--seed", type=_seed, default=0)
    _add_device_flag(p)

    p = sub.add_parser("refine", help="refine a BC policy inside its frozen world model (PPO or DSRL), no real steps")
    p.add_argument(
        "--policy", required=True, help="BC policy checkpoint (`wm bc`): Gaussian for ppo, diffusion for dsrl"
    )
    p.add_argument("--algo", required=True, choices=("ppo", "dsrl"))
    p.add_argument("--imagined-steps", type=_positive_int, default=500_000, help="world-model blocks to imagine")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    p.add_argument("--world-model", help="the policy's world model, if it moved (checked by hash)")
    p.add_argument("--data", help="store to start imagination from (default: the world model's training store)")
    p.add_argument("--eval-env", help="then evaluate BC and refined on held-out goals in this real env")
    p.add_argument("--eval-data", help="store whose held-out episodes give those goals (default: the training store)")
    p.add_argument("--eval-episodes", type=_positive_int, default=100)
    p.add_argument("--seed", type=_seed, default=0)
    _add_device_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. num_envs=128 anchor=0.1")

    p = sub.add_parser("robot", help="robot executor tools (serve a simulated robot over TCP, make Curve keys)")
    robot_sub = p.add_subparsers(dest="robot_command", metavar="ACTION", parser_class=_Parser, required=True)
    p = robot_sub.add_parser("serve", help="serve an env (with state hooks) as a robot behind the safety guard")
    p.add_argument("--env", required=True, help="env id with state hooks (`wm envs`; or pkg.module:factory)")
    p.add_argument("--port", type=_seed, default=5555, help="TCP port (0: any free port, printed at start)")
    p.add_argument("--token", default="", help="shared secret requests are signed with (or set WM_ROBOT_TOKEN)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--curve-key", default=None, help="encrypt with CurveZMQ: DIR/secret.key from `wm robot keygen`")
    p.add_argument("--insecure", action="store_true", help="allow a --host beyond loopback without --curve-key")
    p.add_argument("--image-size", type=_positive_int, default=64, help="square image size in pixels")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--watchdog", type=float, default=1.0, help="seconds without a new action before holding")
    p.add_argument("--max-delta", type=float, default=None, help="max change of an action dim per step")
    p.add_argument("--max-rate", type=float, default=None, help="max actions per second")
    p.add_argument("--workspace-low", default=None, help="comma-separated lower bounds on proprio[:k]")
    p.add_argument("--workspace-high", default=None, help="comma-separated upper bounds on proprio[:k]")
    p.add_argument("--stop-file", default=None, help="e-stop when this file appears")
    p.add_argument("--estop-key", action="store_true", help="e-stop on `s` + Enter on stdin")
    p = robot_sub.add_parser("keygen", help="make a CurveZMQ key pair for `wm robot serve --curve-key`")
    p.add_argument("--out", required=True, help="directory for public.key and secret.key (never overwritten)")

    p = sub.add_parser("validate", help="run a controller on a robot over TCP and record every episode")
    p.add_argument("--robot", required=True, help="robot server address tcp://HOST:PORT")
    p.add_argument("--token", default="", help="the server's shared secret (or set WM_ROBOT_TOKEN)")
    p.add_argument("--server-key", default=None, help="the server's Curve public key file, if it encrypts")
    p.add_argument("--controller", required=True, choices=("mpc", "policy", "random"))
    p.add_argument("--checkpoint", help="world model checkpoint (mpc, the latent judge; policy: its own by default)")
    p.add_argument("--policy", help="policy checkpoint for --controller policy (made by `wm bc`)")
    p.add_argument("--episodes", required=True, type=_positive_int)
    p.add_argument("--out", required=True, help="new directory for the store, results.json and the plot")
    p.add_argument("--budget", type=_positive_int, default=None, help="control steps per episode")
    p.add_argument("--goals", help=".npz of goal rgb (G, H, W, 3), proprio (G, P) [, start, goal states]")
    p.add_argument("--goal-store", help="store whose held-out episodes give the goals (default: the checkpoint's)")
    p.add_argument("--goal-offset", type=_positive_int, default=25, help="steps from start to goal (goal store)")
    p.add_argument(
        "--judge",
        choices=("latent", "sim", "operator"),
        help="default: latent with a checkpoint, else sim on a simulated robot, else operator",
    )
    p.add_argument("--threshold", type=float, default=1.0, help="latent judge: success below this distance")
    p.add_argument("--hz", type=float, default=None, help="control rate (default: the robot's)")
    p.add_argument("--async-plan", action="store_true", help="plan the next chunk while the current one runs")
    p.add_argument("--chunk", type=_positive_int, default=5, help="random controller: actions per chunk")
    _add_mpc_flags(p)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per robot request before retrying")
    p.add_argument("--seed", type=_seed, default=0)
    _add_device_flag(p)

    p = sub.add_parser("demo", help="run the main job end to end on a built-in env and report")
    p.add_argument("--env", default="wm/PointMaze-v0", help="built-in env id")
    p.add_argument("--out", default="runs/demo", help="parent directory for the run (a new subfolder is made)")
    p.add_argument("--episodes", type=_positive_int, default=100, help="noisy-expert episodes to collect")
    p.add_argument("--random-episodes", type=_int_at_least(0), default=50, help="random-action episodes to collect")
    p.add_argument("--train-minutes", type=float, default=4.0, help="time box for training the world model")
    p.add_argument("--refine", action="store_true", help="then clone a policy and refine it in imagination (~+4 min)")
    p.add_argument("--seed", type=_seed, default=0)
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "envs":
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
    elif args.command == "collect":
        from wm.data.collection import CollectConfig, run_collect

        summary = run_collect(_config_from_args(CollectConfig, args))
        print(json.dumps(summary, indent=2))
        print(f"next: wm info {summary['store']}")
    elif args.command == "import":
        from wm.app.import_data import ImportConfig, run_import

        summary = run_import(_config_from_args(ImportConfig, args))
        print(json.dumps(summary, indent=2))
        print(f"next: wm info {summary['store']}")
    elif args.command == "export":
        from wm.app.import_data import run_export

        print(json.dumps(run_export(args.store, args.out), indent=2))
    elif args.command == "info":
        from wm.app.info import dump_json, print_info, store_info

        summary = store_info(args.path, check=args.check, repair_first=args.repair)
        (dump_json if args.json else print_info)(summary)
    elif args.command == "train":
        from wm.app.train import run_train

        summary = run_train(
            args.data, args.model, args.out, args.steps, args.epochs, args.overrides, args.encoder_weights, args.init
        )
        print(json.dumps(summary, indent=2))
        print(f"next: wm eval-model --checkpoint {summary['checkpoint']} --data {args.data}")
    elif args.command == "eval-model":
        from wm.evaluation.open_loop import evaluate

        report = evaluate(args.checkpoint, args.data, args.horizon, args.windows, device=args.device)
        print(json.dumps(report, indent=2))
    elif args.command == "imagine":
        from wm.evaluation.open_loop import imagine_episode

        report = imagine_episode(args.checkpoint, args.data, args.episode, args.out, device=args.device)
        print(json.dumps(report, indent=2))
    elif args.command == "plan":
        from wm.app.plan import PlanConfig, run_plan

        out = args.out or f"runs/plan/{time.strftime('%Y%m%d-%H%M%S')}"  # run_plan refuses a non-empty folder
        cfg = _config_from_args(PlanConfig, args, out=out)
        results = run_plan(cfg)
        summary = {
            k: results[k] for k in ("env", "planner", "episodes", "success_rate", "success_95ci", "zero_action_success")
        }
        print(json.dumps({**summary, "replan_latency_s": results["replan_latency_s"]}, indent=2))
        print(f"results: {out}/results.json, videos {out}/episode_*.mp4, plot {out}/summary.png")
    elif args.command == "bc":
        from wm.app.bc import BCConfig, run_bc

        summary = run_bc(_config_from_args(BCConfig, args))
        print(json.dumps(summary, indent=2))
        print(f"next: wm eval-policy --policy {summary['checkpoint']} --env ENV --imagined")
    elif args.command == "eval-policy":
        from wm.app.eval_policy import EvalPolicyConfig, run_eval_policy

        out = args.out or f"runs/eval-policy/{time.strftime('%Y%m%d-%H%M%S')}"
        results = run_eval_policy(_config_from_args(EvalPolicyConfig, args, out=out))
        keys = ("env", "policy_kind", "episodes", "success_rate", "success_95ci", "zero_action_success", "imagined")
        print(json.dumps({k: results[k] for k in keys if k in results}, indent=2))
        print(f"results: {out}/results.json, videos {out}/episode_*.mp4, plot {out}/summary.png")
    elif args.command == "refine":
        from wm.app.refine import RefineRunConfig, run_refine

        summary = run_refine(_config_from_args(RefineRunConfig, args))
        print(json.dumps(summary, indent=2))
        print(f"next: wm eval-policy --policy {summary['policy']} --env ENV --imagined")
    elif args.command == "robot" and args.robot_command == "keygen":
        from wm.app.robot import run_keygen

        run_keygen(args.out)
    elif args.command == "robot":
        from wm.app.robot import ServeConfig, run_serve

        run_serve(_config_from_args(ServeConfig, args))
    elif args.command == "validate":
        from wm.app.validate import ValidateConfig, print_summary, run_validate

        cfg = _config_from_args(ValidateConfig, args, token=args.token or os.environ.get("WM_ROBOT_TOKEN", ""))
        print_summary(run_validate(cfg))
    elif args.command == "demo":
        from wm.app.demo import run_demo

        if not 0 < args.train_minutes <= 600:
            raise WMError(f"--train-minutes must be in (0, 600], got {args.train_minutes}")
        run_demo(args.env, args.out, args.episodes, args.random_episodes, args.seed, args.train_minutes,
                 refine=args.refine)  # fmt: skip


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
        _run(args)
        return 0
    except WMError as e:
        if debug:
            traceback.print_exc()
        print(f"wm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wm: interrupted; everything already committed to disk is kept", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(
            f"wm: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
