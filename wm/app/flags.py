"""The flags of every `wm` command: one function per command adds them to its parser (`wm.app.cli` holds the
table of commands), and the argparse types that check them, each failing with a one-line message."""

from __future__ import annotations

import argparse
import importlib
import os

from wm.errors import WMError


class Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line naming the fix, instead of usage + error."""

    def error(self, message: str):
        raise WMError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def int_at_least(minimum: int, maximum: int | None = None):
    """argparse type: a whole number in [minimum, maximum], with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
seed = int_at_least(0)  # seeds and indices
port = int_at_least(0, 65535)  # TCP ports (0: any free one)


class RegistryKeys:
    """argparse choices: the keys of a registry (`module.NAME`), read when a value is checked or help is printed,
    never when the parser is built (the registries import torch; `wm --help` need not)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def _keys(self) -> list[str]:
        return list(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self):
        return iter(self._keys())

    def __contains__(self, value) -> bool:
        return value in self._keys()


def add_mpc_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `planners.mpc.MPCConfig`: planner, search budget, objective, replanning. Each defaults to None
    (not given), so the checkpoint's planning preset, else the `MPCConfig` default, fills it (`with_preset`)."""
    on_off = argparse.BooleanOptionalAction
    planners = RegistryKeys("planners.registry", "PLANNERS")
    p.add_argument("--planner", choices=planners, metavar="PLANNER", help="%(choices)s (default cem)")
    p.add_argument("--samples", type=positive_int, help="candidates per iteration (default 300)")
    p.add_argument("--iterations", type=positive_int, help="planner iterations per replan (default 10)")
    p.add_argument("--elites", type=positive_int, help="CEM/iCEM elites, at most --samples (default: a tenth of them)")
    p.add_argument("--hold-in-block", action=on_off, help="plan one env action per frameskip block (default off)")
    p.add_argument("--horizon", type=positive_int, help="planning horizon in world-model steps (default 8)")
    p.add_argument("--replan-every", type=positive_int, help="world-model steps executed per plan (default 1)")
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
    p.add_argument("--compile", action=on_off, help="compile the world model's rollout steps (torch.compile: seconds "
                   "of compiling first; pays with --bf16 and on GPUs)")  # fmt: skip
    p.add_argument("--guide", help="policy checkpoint (`wm bc`) whose rollouts in the model guide the search; none: "
                   "not even the checkpoint's preset's")  # fmt: skip
    p.add_argument("--guide-samples", type=positive_int, help="policy rollouts per plan with a guide (default 16)")
    p.add_argument("--success-weight", type=float, help="weight of -log p(success) of the model's success head in "
                   "the objective (default 0: off)")  # fmt: skip


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """`--device`: where the models run (`wm.device.resolve_device` checks it)."""
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:K")


def add_goal_flags(p: argparse.ArgumentParser, episodes: int, command: str) -> None:
    """The flags of a goal-reaching evaluation (`wm.evaluation.goal_reaching`): problems, budget, goal store and
    goal velocity, results folder, seed, device."""
    p.add_argument("--episodes", type=positive_int, default=episodes, help="goals to reach (run in one batch)")
    p.add_argument("--budget", type=positive_int, default=50, help="env steps per episode")
    p.add_argument("--goal-offset", type=positive_int, default=25, help="env steps from start to goal (held-out goals)")
    p.add_argument("--data", help="store with held-out episodes for goals (default: the world model's training store)")
    p.add_argument(
        "--goal-velocity",
        default="rest",
        choices=("rest", "observed"),
        help="zero the goal's proprio velocities (arrive and stay) or keep the goal frame's",
    )
    p.add_argument("--out", default=None, help=f"results directory (default runs/{command}/<timestamp>)")
    p.add_argument("--seed", type=seed, default=0)
    add_device_flag(p)


def envs(p: argparse.ArgumentParser) -> None:
    """`wm envs` takes no flags."""


def collect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="env id (`wm envs`), pkg.module:factory or a gymnasium id")
    p.add_argument("--episodes", required=True, type=positive_int, help="number of episodes to add")
    p.add_argument("--out", required=True, help="store path (created, or appended to if it has the same spec)")
    p.add_argument(
        "--policy",
        default="expert",
        help="behaviour policy: expert (noisy scripted, built-in envs), random (i.i.d. uniform), smooth "
        "(time-correlated random) or package.module:factory, your own (see envs/behaviour.py)",
    )
    p.add_argument("--seed", type=seed, default=0, help="base seed (episode i uses a seed derived from it)")
    p.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1), help="parallel envs")
    p.add_argument("--steps", type=positive_int, default=None, help="steps per episode (default: the env's)")
    p.add_argument("--image-size", type=positive_int, default=64, help="square image size in pixels")
    p.add_argument(
        "--durable", action="store_true", help="fsync every episode before committing it (survives power loss)"
    )


def import_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=("lerobot", "minari", "zarr"), help="source format")
    p.add_argument("src", help="dataset directory (zarr: also a .zarr.zip; minari: also a local dataset id)")
    p.add_argument("--out", required=True, help="new store path (never overwritten)")
    p.add_argument("--camera", "--rgb-key", dest="rgb_key", help="image feature / key (default: auto-detect)")
    p.add_argument("--proprio-key", help="state feature / key (default: auto-detect)")
    p.add_argument("--action-key", help="action feature / key (default: action)")
    p.add_argument("--image-size", type=positive_int, default=64, help="square image size in pixels")


def export(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=("lerobot",), help="target format (LeRobot v3.0)")
    p.add_argument("store", help="episode store path")
    p.add_argument("--out", required=True, help="new dataset directory (never overwritten)")


def info(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="store path")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--check", action="store_true", help="decode every chunk to verify the data")
    p.add_argument(
        "--repair",
        action="store_true",
        help="first remove what an interrupted write left (a damaged index: keep the episodes before the damage)",
    )


def train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="episode store path")
    families = RegistryKeys("wm.models.registry", "FAMILIES")
    p.add_argument("--model", required=True, choices=families, metavar="FAMILY", help="model family: %(choices)s")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help="optimisation steps")
    length.add_argument("--epochs", type=positive_int, help="passes over the training windows")
    p.add_argument("--encoder-weights", help="DINOv2 weights file (Meta .pth, HF model.safetensors or timm)")
    p.add_argument("--init", help="fine-tune this checkpoint (its model and normalisation) instead of a new model")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. lr=1e-3 predictor.depth=4")


def eval_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--data", required=True, help="episode store of the same env")
    p.add_argument("--horizon", type=positive_int, default=5, help="imagined steps (each frameskip env steps)")
    p.add_argument("--windows", type=positive_int, default=512, help="held-out windows to evaluate")
    add_device_flag(p)


def imagine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--data", required=True, help="episode store")
    p.add_argument("--episode", type=seed, default=0, help="episode index")
    p.add_argument("--out", required=True, help="output .mp4 file (must not exist)")
    add_device_flag(p)


def plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or `wm train --out` folder")
    p.add_argument("--env", required=True, help="env id the checkpoint was trained on")
    p.add_argument("--goal-source", default="dataset", choices=("dataset", "random"))
    add_goal_flags(p, episodes=50, command="plan")
    add_mpc_flags(p)


def bc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="store with goal-directed episodes (`wm collect --policy expert` or your own policy)",
    )
    p.add_argument("--world-model", required=True, help="world model (checkpoint or `wm train --out` folder) to read")
    kinds = RegistryKeys("policies.registry", "CLONED")
    p.add_argument("--policy", required=True, choices=kinds, metavar="KIND", help="policy kind: %(choices)s")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    p.add_argument("--demos", type=positive_int, default=None, help="keep only this many demonstrations")
    p.add_argument("--steps", type=positive_int, default=4000, help="optimisation steps")
    p.add_argument("--goal-blocks", type=positive_int, default=3, help="hindsight goals 1..K blocks ahead")
    p.add_argument("--init", help="start from this policy's weights (same kind, this world model's latents)")
    p.add_argument("--seed", type=seed, default=0)
    add_device_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. width=512 lr=3e-4")


def eval_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint or `wm bc`/`wm refine` --out folder")
    p.add_argument("--env", required=True, help="env id the policy's world model was trained on")
    p.add_argument("--world-model", help="the policy's world model, if it moved (checked by hash)")
    p.add_argument("--imagined", action="store_true", help="also run the same start/goal pairs in the world model")
    p.add_argument("--stochastic", action="store_true", help="sample a Gaussian policy instead of its mean")
    add_goal_flags(p, episodes=100, command="eval-policy")


def refine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy", required=True, help="BC policy checkpoint (`wm bc`): Gaussian for ppo, diffusion for dsrl"
    )
    algos = RegistryKeys("policies.registry", "REFINED")
    p.add_argument("--algo", required=True, choices=algos, metavar="ALGO", help="refinement algorithm: %(choices)s")
    p.add_argument("--imagined-steps", type=positive_int, default=500_000, help="world-model blocks to imagine")
    p.add_argument("--out", required=True, help="run directory (resumes from its latest checkpoint if present)")
    p.add_argument("--world-model", help="the policy's world model, if it moved (checked by hash)")
    p.add_argument("--data", help="store to start imagination from (default: the world model's training store)")
    p.add_argument("--eval-env", help="then evaluate BC and refined on held-out goals in this real env")
    p.add_argument("--eval-data", help="store whose held-out episodes give those goals (default: the training store)")
    p.add_argument("--eval-episodes", type=positive_int, default=100)
    p.add_argument("--seed", type=seed, default=0)
    add_device_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. num_envs=128 anchor=0.1")


def improve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="Gaussian policy to improve (`wm bc` or `wm refine --algo ppo`)")
    p.add_argument("--env", required=True, help="the real env its episodes run in (its world model's env)")
    p.add_argument("--out", required=True, help="run directory (resumes from its state.json if present)")
    p.add_argument("--world-model", help="the policy's world model, if it moved (checked by hash)")
    p.add_argument("--data", help="store to copy and grow (default: the world model's training store)")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds of real episodes, fine-tuning, refinement")
    p.add_argument("--episodes", type=positive_int, default=100, help="real episodes per round (training goals)")
    p.add_argument("--eval-episodes", type=positive_int, default=50, help="fixed held-out goals, every round")
    p.add_argument("--eval-data", help="store whose held-out episodes give those goals (default: the training store)")
    p.add_argument("--budget", type=positive_int, default=50, help="env steps per episode")
    p.add_argument("--goal-offset", type=positive_int, default=25, help="goals this many env steps ahead")
    p.add_argument("--finetune-steps", type=positive_int, default=1000, help="world-model fine-tuning steps a round")
    p.add_argument("--imagined-steps", type=positive_int, default=131_072, help="imagined refinement steps a round")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the data-matched BC")
    p.add_argument("--explore", action="store_true", help="collect with the policy's Gaussian sampled (its own std), "
                   "not its mean")  # fmt: skip
    p.add_argument("--seed", type=seed, default=0)
    add_device_flag(p)
    robot = p.add_argument_group("real episodes on a robot (`wm robot serve`) instead of the env")
    robot.add_argument("--robot", help="robot server address tcp://HOST:PORT")
    robot.add_argument("--token", default="", help="the server's shared secret (or set WM_ROBOT_TOKEN)")
    robot.add_argument("--server-key", default=None, help="the server's Curve public key file, if it encrypts")
    robot.add_argument("--judge", choices=("sim", "latent", "operator"),
                       help="who tells success (default: sim on a simulated robot, else operator)")  # fmt: skip
    robot.add_argument("--threshold", type=float, default=1.0, help="latent judge: success below this distance")
    robot.add_argument("--hz", type=float, default=None, help="control rate (default: the robot's)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. train.lr=1e-4 refine.anchor=0.1")


def robot(p: argparse.ArgumentParser) -> None:
    robot_sub = p.add_subparsers(dest="robot_command", metavar="ACTION", parser_class=Parser, required=True)
    p = robot_sub.add_parser("serve", help="serve a robot (or an env as a simulated one) behind the safety guard")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--env", help="simulate this env as the robot (`wm envs`; or pkg.module:factory), state hooks")
    what.add_argument(
        "--robot", help="serve a real robot: pkg.module:factory returning one (the robot protocol; a LeRobotAdapter)"
    )
    p.add_argument("--port", type=port, default=5555, help="TCP port (0: any free port, printed at start)")
    p.add_argument("--token", default="", help="shared secret requests are signed with (or set WM_ROBOT_TOKEN)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--curve-key", default=None, help="encrypt with CurveZMQ: DIR/secret.key from `wm robot keygen`")
    p.add_argument("--insecure", action="store_true", help="allow a --host beyond loopback without --curve-key")
    p.add_argument("--image-size", type=positive_int, default=64, help="square image size in pixels")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--watchdog", type=float, default=1.0, help="seconds without a new action before holding")
    p.add_argument("--low", default=None, help="lower action bounds: one number or comma-separated per dim")
    p.add_argument("--high", default=None, help="upper action bounds: one number or comma-separated per dim")
    p.add_argument("--max-delta", default=None, help="max change of an action dim per step: one number or per dim "
                   "(a real robot needs it, or its config's max_relative_target)")  # fmt: skip
    p.add_argument("--max-rate", type=float, default=None, help="max actions per second (a real robot needs it, or "
                   "its control_hz)")  # fmt: skip
    p.add_argument("--workspace-low", default=None, help="comma-separated lower bounds on proprio[:k]")
    p.add_argument("--workspace-high", default=None, help="comma-separated upper bounds on proprio[:k]")
    p.add_argument("--stop-file", default=None, help="e-stop when this file appears")
    p.add_argument("--estop-key", action="store_true", help="e-stop on `s` + Enter on stdin")
    p = robot_sub.add_parser("keygen", help="make a CurveZMQ key pair for `wm robot serve --curve-key`")
    p.add_argument("--out", required=True, help="directory for public.key and secret.key (never overwritten)")


def validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", required=True, help="robot server address tcp://HOST:PORT")
    p.add_argument("--token", default="", help="the server's shared secret (or set WM_ROBOT_TOKEN)")
    p.add_argument("--server-key", default=None, help="the server's Curve public key file, if it encrypts")
    p.add_argument("--controller", required=True, choices=("mpc", "policy", "random"))
    p.add_argument("--checkpoint", help="world model checkpoint (mpc, the latent judge; policy: its own by default)")
    p.add_argument("--policy", help="policy checkpoint for --controller policy (made by `wm bc`)")
    p.add_argument("--episodes", required=True, type=positive_int)
    p.add_argument("--out", required=True, help="new directory for the store, results.json and the plot")
    p.add_argument("--budget", type=positive_int, default=None, help="control steps per episode")
    p.add_argument("--goals", help=".npz of goal rgb (G, H, W, 3), proprio (G, P) [, start, goal states]")
    p.add_argument("--goal-store", help="store whose held-out episodes give the goals (default: the checkpoint's)")
    p.add_argument("--goal-offset", type=positive_int, default=25, help="steps from start to goal (goal store)")
    p.add_argument(
        "--judge",
        choices=("latent", "sim", "operator"),
        help="default: latent with a checkpoint, else sim on a simulated robot, else operator",
    )
    p.add_argument("--threshold", type=float, default=1.0, help="latent judge: success below this distance")
    p.add_argument("--hz", type=float, default=None, help="control rate (default: the robot's)")
    p.add_argument("--async-plan", action="store_true", help="plan the next chunk while the current one runs")
    p.add_argument("--chunk", type=positive_int, default=5, help="random controller: actions per chunk")
    add_mpc_flags(p)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per robot request before retrying")
    p.add_argument("--seed", type=seed, default=0)
    add_device_flag(p)


def demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="wm/PointMaze-v0", help="built-in env id")
    p.add_argument("--out", default="runs/demo", help="parent directory for the run (a new subfolder is made)")
    p.add_argument("--episodes", type=positive_int, default=100, help="noisy-expert episodes to collect")
    p.add_argument("--random-episodes", type=int_at_least(0), default=50, help="random-action episodes to collect")
    p.add_argument("--train-steps", type=positive_int, default=2500, help="training steps of the world model")
    p.add_argument("--train-minutes", type=float, default=10.0, help="guard: stop training after this long")
    p.add_argument("--refine", action="store_true", help="then clone a policy and refine it in imagination (~+4 min)")
    p.add_argument("--seed", type=seed, default=0)
