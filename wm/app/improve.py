"""`wm improve`: real runs improve the world model and the policy, round after round (Dyna / MBPO / WoVR).

Each round
  (a) runs the current policy for `--episodes` episodes in the real env on training goals (start/goal pairs of the
      world model's training episodes, goal `goal_offset` steps ahead, `budget` steps each; never the held-out
      evaluation goals) and records them; its mean action, or with `--explore` a sample of its Gaussian. With
      `--robot`, on a robot through `wm validate`'s session instead (`wm.app.improve_robot`: each round's
      validation records in `round_<r>/robot/`, judged by `--judge`, by default the simulator's ground truth on a
      simulated robot, else the operator);
  (b) appends them to `OUT/data/<store>`, a copy of the training store (its `collections` record names the round and
      the policy; `copy_of` names the original store, so the original split still holds there);
  (c) fine-tunes the world model and its success head on old + new data (`wm train --init`, the predictor and the
      success head only: the encoder stays frozen, so the policy's latents do not move);
  (d) clones again, as the starting policy's BC was and from scratch, on its demonstrations plus every successful
      real episode so far (self-imitation), refines the clone inside the fine-tuned model (`wm refine --algo ppo`), and
      keeps whichever of the two reaches more fresh training goals in imagination (policy ranking in the model, no
      real step: refinement can undo a strong clone);
  (e) evaluates it on the fixed held-out goals in the real env and inside the model, beside zero actions.
Round 0 evaluates the starting policy; evaluation (e) and the baseline run in `--env` (with a real robot, its
simulation; `wm validate` scores a round's policy on the robot itself). Then (unless `--no-baseline`) the
data-matched BC: the starting policy's BC on its demonstrations plus every successful real episode of the rounds,
evaluated on the same goals.

Everything lands in `--out`: `improve_log.jsonl` (a row per round: real and imagined success with 95% intervals,
their gap, real env steps used), `curve.png`, `summary.json`, and `round_<r>/{train,clone,refine,eval}`. `state.json`
records the finished stages; a run killed at any moment (SIGKILL included) resumes from it and ends where an unbroken
run ends: collection and evaluation replay deterministically, training and refinement resume from their own
checkpoints. Nothing outside `--out` is written. Settings: `train.<field>=value` (fine-tuning, `wm train`'s
training settings) and `refine.<field>=value` (`wm refine`'s).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from wm.errors import WMError
from wm.outputs import require_run_dir
from wm.settings import require_at_least, route_settings

COLLECT_STREAM = 0xC011EC7  # mixed into the seed: the training goals of each round's real episodes
SELECT_STREAM = 0x5E1EC7  # and of its choice between the cloned and the refined policy, in imagination
FROZEN_LATENTS = "only=predictor,success"  # what fine-tuning trains: the latents (encoder, proprio) stay


@dataclass
class ImproveSettings:
    """`key=value` settings of `wm improve`: `train.<field>` for the fine-tuning (`wm.train.TrainConfig`),
    `refine.<field>` for the refinement (`policies.refine.RefineConfig`)."""

    train: dict = field(default_factory=dict)
    refine: dict = field(default_factory=dict)


@dataclass
class ImproveConfig:
    policy: str  # a Gaussian policy (`wm bc` or `wm refine --algo ppo`): what the rounds improve
    env: str  # the real env
    out: str
    world_model: str | None = None  # default: the policy's
    data: str | None = None  # the store to copy and grow (default: the world model's training store)
    rounds: int = 3
    episodes: int = 100  # real episodes per round, on training goals
    eval_episodes: int = 50  # fixed held-out goals, evaluated every round
    eval_data: str | None = None  # store of the held-out goals (default: the world model's, else fresh episodes)
    budget: int = 50
    goal_offset: int = 25
    finetune_steps: int = 1000
    imagined_steps: int = 131_072
    baseline: bool = True  # the data-matched BC
    explore: bool = False  # collect with the Gaussian policy sampled (its own std) instead of its mean
    seed: int = 0
    device: str = "auto"
    overrides: list = field(default_factory=list)
    robot: str | None = None  # tcp://HOST:PORT: (a) runs on this robot (`wm robot serve`), not in the env
    token: str = ""  # the robot server's shared secret (never written to the run folder)
    server_key: str | None = None  # its Curve public key file, when it encrypts
    judge: str | None = None  # who tells a robot episode's success: sim | latent | operator (default: see above)
    threshold: float = 1.0  # the latent judge's
    hz: float | None = None  # the robot's control rate (default: its own)

    def validate(self) -> None:
        if self.robot:
            self.link().validate_link()
        elif self.judge or self.hz is not None or self.server_key:
            raise WMError("--judge, --hz and --server-key go with --robot (the real episodes on a robot)")
        require_at_least("improve", 1, rounds=self.rounds, episodes=self.episodes, eval_episodes=self.eval_episodes,
                         budget=self.budget, goal_offset=self.goal_offset, finetune_steps=self.finetune_steps,
                         imagined_steps=self.imagined_steps)  # fmt: skip
        require_run_dir(self.out)
        if self.eval_data and self.data and Path(self.eval_data).resolve() == Path(self.data).resolve():
            raise WMError("--eval-data is the store --data grows: the held-out goals would be trained on; pass "
                          "another store of held-out goals")  # fmt: skip

    def link(self, policy: str | None = None, world_model: str | None = None):
        """The robot side of (a) as `wm validate` takes it (`wm.app.validate.ValidateConfig`) for `policy`."""
        from wm.app.validate import ValidateConfig

        return ValidateConfig(self.robot, self.token, "policy", self.episodes, "", checkpoint=world_model,
                              policy=policy or self.policy, budget=self.budget, judge=self.judge,
                              threshold=self.threshold, hz=self.hz, seed=self.seed, server_key=self.server_key,
                              device=self.device)  # fmt: skip

    def settings(self) -> ImproveSettings:
        from policies.refine import RefineConfig
        from wm.train import TrainConfig

        nested = {"train": TrainConfig, "refine": RefineConfig}
        exclude = ("train.steps", "train.only", "refine.algo", "refine.imagined_steps", "refine.seed")
        routed = ImproveSettings(**route_settings(list(self.overrides), {"improve": ImproveSettings}, nested,
                                                  exclude)["improve"])  # fmt: skip
        TrainConfig(**{**routed.train, "steps": self.finetune_steps})  # values checked now, not rounds later
        RefineConfig(algo="ppo", imagined_steps=self.imagined_steps, **routed.refine)
        return routed


class State:
    """`OUT/state.json`: the run's config and its finished stages, written atomically after each one."""

    def __init__(self, out: Path, config: dict, defaults: dict):
        """`defaults`: the values of settings a run written before they existed had (so it still resumes)."""
        self.path = out / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"config": config, "done": {}}
        if {**defaults, **self.data["config"]} != config:
            raise WMError(f"{out} holds a `wm improve` run with other settings; pass a new --out or the same settings")

    def get(self, stage: str):
        return self.data["done"].get(stage)

    def finish(self, stage: str, value=True) -> None:
        self.data["done"][stage] = value
        tmp = self.path.with_name(f".state.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


class Improvement:
    """One `wm improve` run (see the module docstring); `run()` does or resumes every stage."""

    def __init__(self, cfg: ImproveConfig):
        from policies.checkpoint import load_policy
        from policies.registry import require_refinable
        from wm.data.store import EpisodeStore
        from wm.device import resolve_device
        from wm.models.checkpoint import resolve_checkpoint

        cfg.validate()
        self.cfg, self.settings, self.out = cfg, cfg.settings(), Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.start_policy = resolve_checkpoint(cfg.policy, "policy")
        policy, _, model, wm_config = load_policy(self.start_policy, cfg.world_model, self.device)
        require_refinable("ppo", policy.cfg.kind, str(self.start_policy))
        if model.success_mode is None:
            raise WMError("the world model has no success head, which refinement's reward and the imagined evaluation "
                          "need; train one with `wm train --init CK success_head=true only=success`")  # fmt: skip
        wm_config.trained_on.require_env(cfg.env)
        self.kind, self.spec, self.trained_on = wm_config.kind, model.spec, wm_config.trained_on
        self.start_world_model = wm_config.path
        source = cfg.data or self.trained_on.store
        if not source or not Path(source).is_dir():
            raise WMError(f"the store {source or '(none named)'} to grow is not here; pass --data STORE of {cfg.env} "
                          "(the world model's training store, or episodes of its env)")  # fmt: skip
        self.source = Path(source)
        with EpisodeStore.open(self.source) as store:
            self.trained_on.require_same_data(store)
        self.bc = self.bc_recipe()  # what cloning and the baseline repeat, checked before the first round
        if cfg.robot:  # the robot answers and fits, before any round
            from wm.app.improve_robot import check_robot, connected

            with EpisodeStore.open(self.source) as store, connected(cfg.link()) as robot:
                check_robot(robot, model, store.keys, cfg.env, model.spec.frameskip)
        self.store = self.out / "data" / self.source.name
        defaults = {f.name: f.default for f in fields(ImproveConfig) if f.default is not MISSING}
        self.state = State(self.out, run_identity(asdict(cfg)), run_identity(defaults))
        self.zero = None

    # ------------------------------------------------------------------------------------------------ stages
    def run(self) -> dict:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        self.copy_store()
        problems = self.evaluation_problems()
        policy, world_model = self.start_policy, self.start_world_model
        stages = ["collect", "train", "clone", "refine", "select", "eval"]
        with tqdm(total=1 + len(stages) * self.cfg.rounds, desc="improve", unit="stage", position=1) as bar:
            self.evaluate(0, policy, world_model, problems)
            bar.update(1)
            for r in range(1, self.cfg.rounds + 1):
                bar.set_postfix(round=r)
                self.collect(r, policy, world_model)
                bar.update(1)
                world_model = self.finetune(r, world_model)
                bar.update(1)
                cloned = self.clone(r, world_model)
                bar.update(1)
                refined = self.refine(r, cloned, world_model)
                bar.update(1)
                policy = self.select(r, cloned, refined, world_model)
                bar.update(1)
                self.evaluate(r, policy, world_model, problems)
                bar.update(1)
        if self.cfg.baseline:
            self.bc_baseline(problems)
        problems.close()
        return self.summary()

    def copy_store(self) -> None:
        """`OUT/data/<name>`: a copy of the store to grow, tagged with the original's name (atomic: copy + rename)."""
        from wm.data.store import EpisodeStore

        if self.state.get("copy"):
            return
        tmp = self.store.with_name(f".{self.store.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.source, tmp, ignore=shutil.ignore_patterns(".lock"))
        with EpisodeStore.open(tmp, mode="a") as s:
            training = self.trained_on.is_training_data(s)
            s.mark_copy_of(self.trained_on.store if training else str(self.source.resolve()), s.num_episodes)
            episodes = s.num_episodes
        shutil.rmtree(self.store, ignore_errors=True)
        os.replace(tmp, self.store)
        self.state.finish("copy", {"episodes": episodes})

    def evaluation_problems(self):
        """The fixed held-out goals (`goal_reaching.held_out_problems`): the same pairs every round and on resume."""
        from wm.evaluation.goal_reaching import held_out_problems

        cfg, scratch = self.cfg, self.out / "eval_goals"
        data = cfg.eval_data
        if data is None and not self.trained_on.store_is_here:
            if self.state.get("eval_goals") is None:  # fresh goals: collected once, then read back on resume
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                data = str(scratch)
        problems = held_out_problems(self.spec, self.trained_on, cfg.env, episodes=cfg.eval_episodes,
                                     budget=cfg.budget, goal_offset=cfg.goal_offset, seed=cfg.seed, data=data,
                                     scratch=scratch, what="wm improve")  # fmt: skip
        if self.state.get("eval_goals") is None:
            self.state.finish("eval_goals", problems.goals)
        problems.goals = self.state.get("eval_goals")
        return problems

    def training_problems(self, r: int, world_model, stream: int = COLLECT_STREAM):
        """Round `r`'s start/goal pairs from the original episodes the world model trains on (never held out),
        drawn from the random stream `stream`."""
        from envs.registry import make_env
        from wm.data.store import EpisodeStore
        from wm.evaluation.goal_reaching import Problems
        from wm.goals import dataset_goals
        from wm.models.checkpoint import read_config
        from wm.models.checkpoint_config import CheckpointConfig

        config = CheckpointConfig.parse(read_config(world_model), world_model)
        original = self.state.get("copy")["episodes"]
        with EpisodeStore.open(self.store) as store:  # a store the model never saw: all of it is for training
            trains_on = config.trained_on.is_training_data(store)
        episodes = [e for e in (config.trained_on.train_episodes if trains_on else range(original)) if e < original]
        envs = [make_env(self.cfg.env, self.spec.image_size, self.cfg.budget + 1).unwrapped
                for _ in range(self.cfg.episodes)]  # fmt: skip
        rng = np.random.default_rng([self.cfg.seed, r, stream])
        pairs = dataset_goals(self.store, config.trained_on, self.cfg.episodes, self.cfg.goal_offset, rng,
                              self.spec.history_steps, solved=envs[0].is_success, episodes=episodes)  # fmt: skip
        return Problems(self.cfg.env, envs, pairs, {"store": str(self.store), "source": "training episodes"},
                        self.cfg.budget)  # fmt: skip

    def collect(self, r: int, policy, world_model) -> None:
        """(a) + (b): round `r`'s real episodes, appended to the copy (only those a killed run did not commit)."""
        from policies.checkpoint import load_policy
        from policies.controller import PolicyController
        from wm.app.improve_robot import robot_episodes
        from wm.data.collection import settle_killed_record
        from wm.data.store import EpisodeStore
        from wm.evaluation.goal_reaching import run_controller
        from wm.evaluation.recording import EpisodeRecorder

        if self.state.get(f"round_{r}/collect"):
            return
        actor, _, model, _ = load_policy(policy, world_model, self.device)
        problems, seed = self.training_problems(r, world_model), self.cfg.seed + r
        if self.cfg.robot:
            with EpisodeStore.open(self.store) as store:
                keys = store.keys
            link = self.cfg.link(str(policy), str(world_model))
            root = self.out / f"round_{r}" / "robot"
            episodes, success = robot_episodes(link, root, actor, model, problems.pairs, self.cfg.env,
                                               problems.envs[0], keys, seed, self.cfg.explore)  # fmt: skip
        else:
            recorder = EpisodeRecorder()
            controller = PolicyController(actor, model, seed=seed, stochastic=self.cfg.explore)
            run = run_controller(problems, controller, f"round {r}: real", videos=0, recorder=recorder)
            episodes, success = recorder.episodes(), run.success
        problems.close()
        with EpisodeStore.open(self.store, mode="a") as store:
            settle_killed_record(store)
            records = store.attrs.get("collections", [])
            mine = [c for c in records if c.get("improve_round") == r]
            first = mine[0]["first_episode"] if mine else store.num_episodes
            record = {"policy": None, "improve_round": r, "source": "robot" if self.cfg.robot else "env",
                      "controller": str(policy), "first_episode": first, "successes": int(success.sum())}  # fmt: skip
            for i in range(store.num_episodes - first, len(episodes)):
                store.record_collection({**record, "episodes_written": i + 1}, replace_last=bool(mine) or i > 0)
                store.append_episode(episodes[i])
        self.state.finish(f"round_{r}/collect", {"episodes": len(episodes), "first_episode": first,
                                                 "successes": int(success.sum()),
                                                 "successful": [first + int(i) for i in np.flatnonzero(success)],
                                                 "real_env_steps": len(episodes) * self.cfg.budget})  # fmt: skip

    def finetune(self, r: int, world_model) -> Path:
        """(c): the world model fine-tuned on the grown copy (predictor and success head); its checkpoint."""
        from wm.app.train import TrainRunConfig, run_train

        out = self.out / f"round_{r}" / "train"
        if not self.state.get(f"round_{r}/train"):
            settings = [FROZEN_LATENTS, *(f"{k}={json.dumps(v)}" for k, v in self.settings.train.items())]
            run_train(TrainRunConfig(str(self.store), self.kind, str(out), steps=self.cfg.finetune_steps,
                                     init=str(world_model), overrides=settings))  # fmt: skip
            self.state.finish(f"round_{r}/train")
        return out / "model"

    def clone(self, r: int, world_model) -> Path:
        """(d, first): self-imitation. The starting policy's BC run again from scratch on its demonstrations plus
        every successful real episode so far (`reclone`); refinement starts from it. (Warm-started from the last
        round's policy instead, the round-3 clone reached 10-12 points less on Wall's held-out goals: results.md.)"""
        out = self.out / f"round_{r}" / "clone"
        if not self.state.get(f"round_{r}/clone"):
            self.reclone(world_model, out, self.cfg.seed + r, r)
            self.state.finish(f"round_{r}/clone")
        return out / "policy"

    def reclone(self, world_model, out: Path, seed: int, rounds: int) -> None:
        """The starting policy's BC recipe (`bc_record`) on `world_model`'s latents, from scratch, on its
        demonstrations plus the real successes of rounds 1..`rounds`; the policy lands in `out/policy`."""
        from wm.app.bc import BCConfig, run_bc

        bc = self.bc
        run_bc(BCConfig(str(self.store), str(world_model), bc["kind"], str(out), steps=bc["steps"],
                        goal_blocks=bc["goal_blocks"], seed=seed, device=self.cfg.device, overrides=bc["overrides"],
                        train_episodes=sorted(bc["train_episodes"] + self.real_successes(rounds)),
                        val_episodes=bc["val_episodes"]))  # fmt: skip

    def real_successes(self, rounds: int) -> list[int]:
        """The store indices of the real episodes of rounds 1..`rounds` that ended at their goal."""
        return [e for r in range(1, rounds + 1) for e in self.state.get(f"round_{r}/collect")["successful"]]

    def bc_recipe(self) -> dict:
        """How the starting policy's BC was made (`bc_record`), checked to be on the store this run grows."""
        bc = bc_record(self.start_policy)
        if Path(bc["store"]).resolve() != self.source.resolve():
            raise WMError(f"the starting policy's BC learned from {bc['store']}, not from {self.source}; pass --data "
                          f"{bc['store']}: its demonstrations are episodes of that store")  # fmt: skip
        return bc

    def refine(self, r: int, policy, world_model) -> Path:
        """(d, then): the clone refined with PPO in the fine-tuned model; its checkpoint."""
        from wm.app.refine import RefineRunConfig, run_refine

        out = self.out / f"round_{r}" / "refine"
        if not self.state.get(f"round_{r}/refine"):
            settings = [f"{k}={json.dumps(v)}" for k, v in self.settings.refine.items()]
            run_refine(RefineRunConfig(str(policy), "ppo", str(out), imagined_steps=self.cfg.imagined_steps,
                                       world_model=str(world_model), data=str(self.store), seed=self.cfg.seed + r,
                                       device=self.cfg.device, overrides=settings))  # fmt: skip
            self.state.finish(f"round_{r}/refine")
        return out / "policy"

    def select(self, r: int, cloned: Path, refined: Path, world_model) -> Path:
        """(d, last): policy ranking in imagination, no real step. Of the cloned and the refined policy, the one with
        the higher imagined success on fresh training goals of the round, in the fine-tuned model (refinement can
        undo a strong clone); a tie keeps the clone."""
        from policies.checkpoint import load_policy
        from policies.evaluation import imagined_episodes

        choice = self.state.get(f"round_{r}/select")
        if choice is None:
            problems, scores = self.training_problems(r, world_model, SELECT_STREAM), {}
            for name, path in (("clone", cloned), ("refined", refined)):
                actor, _, model, _ = load_policy(path, world_model, self.device)
                dreamt = imagined_episodes(actor, model, problems, str(self.store), self.cfg.goal_offset,
                                           self.cfg.seed, videos=0)  # fmt: skip
                scores[f"imagined_{name}"] = float(dreamt.success.mean())
            problems.close()
            kept = "refined" if scores["imagined_refined"] > scores["imagined_clone"] else "clone"
            choice = {**scores, "kept": kept}
            self.state.finish(f"round_{r}/select", choice)
        return refined if choice["kept"] == "refined" else cloned

    def evaluate(self, r: int, policy, world_model, problems) -> None:
        """(e): the policy on the fixed held-out goals, real and imagined; the round's row of the log."""
        if self.state.get(f"round_{r}/eval"):
            return
        results = self.evaluation(policy, world_model, problems, self.out / f"round_{r}" / "eval")
        real_steps = sum(self.state.get(f"round_{k}/collect")["real_env_steps"] for k in range(1, r + 1))
        real_episodes = sum(self.state.get(f"round_{k}/collect")["episodes"] for k in range(1, r + 1))
        row = {"round": r, "real_episodes": real_episodes, "real_env_steps": real_steps,
               "real_success": results["success_rate"], "real_95ci": results["success_95ci"],
               "imagined_success": results["imagined"]["rate"], "imagined_95ci": results["imagined"]["95ci"],
               "gap": round(results["imagined"]["gap"], 4), "zero_action_success": results["zero_action_success"],
               "policy": str(policy), "world_model": str(world_model),
               "selection": self.state.get(f"round_{r}/select")}  # fmt: skip
        self.state.finish(f"round_{r}/eval", row)
        self.write_log()

    def evaluation(self, policy, world_model, problems, out: Path) -> dict:
        from policies.checkpoint import load_policy
        from policies.evaluation import evaluate_policy
        from wm.evaluation.goal_reaching import write_report

        actor, _, model, _ = load_policy(policy, world_model, self.device)
        shutil.rmtree(out, ignore_errors=True)  # what a killed evaluation left
        ev = evaluate_policy(actor, model, problems, problems.goals["store"], self.cfg.goal_offset, imagined=True,
                             seed=self.cfg.seed, videos=2, zero=self.zero)  # fmt: skip
        self.zero = ev.zero
        results = {"policy": str(policy), "world_model": str(world_model), **ev.results}
        write_report(out, results, problems, ev.run, ev.zero, ev.imagined, "policy call (ms)")
        return results

    def bc_baseline(self, problems) -> None:
        """The data-matched BC: the starting policy's BC run again on its demonstrations plus every successful
        real episode of the rounds (its world model the starting one), on the same goals."""
        if self.state.get("baseline"):
            return
        bc, successes = self.bc, self.real_successes(self.cfg.rounds)
        out = self.out / "baseline"
        self.reclone(self.start_world_model, out / "bc", self.cfg.seed, self.cfg.rounds)
        results = self.evaluation(out / "bc" / "policy", self.start_world_model, problems, out / "eval")
        self.state.finish("baseline", {"demos": len(bc["train_episodes"]), "real_successes_added": len(successes),
                                       "real_success": results["success_rate"], "real_95ci": results["success_95ci"],
                                       "imagined_success": results["imagined"]["rate"]})  # fmt: skip

    # ------------------------------------------------------------------------------------------------ report
    def rows(self) -> list[dict]:
        evaluated = (self.state.get(f"round_{r}/eval") for r in range(self.cfg.rounds + 1))
        return [row for row in evaluated if row is not None]

    def write_log(self) -> None:
        rows = self.rows()
        tmp = self.out / ".improve_log.jsonl.tmp"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, self.out / "improve_log.jsonl")
        plot_curve(self.out / "curve.png", rows, self.state.get("baseline"))

    def summary(self) -> dict:
        self.write_log()
        rows = self.rows()
        first, last = rows[0], rows[-1]
        summary = {"env": self.cfg.env, "rounds": self.cfg.rounds, "start": first, "final": last,
                   "real_success_gain": round(last["real_success"] - first["real_success"], 4),
                   "gap_first": first["gap"], "gap_final": last["gap"],
                   "real_env_steps_collected": last["real_env_steps"],
                   "real_env_steps_in_refinement": 0, "bc_baseline": self.state.get("baseline"),
                   "policy": last["policy"], "world_model": last["world_model"],
                   "log": str(self.out / "improve_log.jsonl"), "curve": str(self.out / "curve.png")}  # fmt: skip
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def run_identity(config: dict) -> dict:
    """What makes two `wm improve` commands the same run: their settings, but not where the folder or the robot
    is reached (a robot server may come back at another address), and never the robot's secret."""
    mine = {k: v for k, v in config.items() if k not in ("token", "server_key")}
    if "out" in mine:
        mine["out"] = None
    if "robot" in mine:
        mine["robot"] = bool(mine["robot"])
    return mine


def bc_record(policy_path: Path) -> dict:
    """How the starting policy's BC was made (the policy itself, or the BC it was refined from): kind, demonstration
    episodes, steps, goal range and settings: what the data-matched baseline repeats."""
    from wm.models.checkpoint import read_config, resolve_checkpoint

    config = read_config(policy_path)
    if "refined_from" in config:
        config = read_config(resolve_checkpoint(config["refined_from"]["path"], "policy"))
    if "bc" not in config:
        raise WMError(f"{policy_path} does not say how its BC was trained, which `wm improve` repeats to clone it "
                      "again; pass a policy made by `wm bc` or refined from one by `wm refine`")  # fmt: skip
    data = config["data"]
    return {"kind": config["policy"]["kind"], "store": data["store"], "train_episodes": list(data["train_episodes"]),
            "val_episodes": list(data["val_episodes"]), "goal_blocks": int(data["goal_blocks"][1]),
            "steps": int(config["train"]["steps"]), "overrides": list(config["bc"]["overrides"])}  # fmt: skip


def plot_curve(path: Path, rows: list[dict], baseline: dict | None) -> None:
    """Real and imagined success (95% intervals) and their gap per round, against the real episodes used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row["real_episodes"] for row in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, colour, label in (("real", "tab:green", "real success"), ("imagined", "tab:purple", "imagined success")):
        y = np.array([row[f"{key}_success"] for row in rows])
        low, high = (np.array([row[f"{key}_95ci"][i] for row in rows]) for i in (0, 1))
        ax.errorbar(x, y, yerr=[y - low, high - y], color=colour, marker="o", capsize=3, label=label)
    ax.plot(x, [row["gap"] for row in rows], color="tab:red", linestyle=":", marker="x", label="gap (imagined - real)")
    ax.plot(x, [row["zero_action_success"]["rate"] for row in rows], color="tab:gray", linestyle="--",
            label="zero actions")  # fmt: skip
    if baseline is not None:
        ax.axhline(baseline["real_success"], color="tab:orange", linestyle="-.", label="data-matched BC, real")
    ax.set_xlabel("real episodes used (rounds)")
    ax.set_ylabel("success on held-out goals")
    ax.set_ylim(min(-0.05, *(row["gap"] for row in rows)), 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_improve(cfg: ImproveConfig) -> dict:
    started = time.time()
    summary = Improvement(cfg).run()
    return {**summary, "seconds_this_run": round(time.time() - started, 1)}
