"""A validation run: a controller drives a robot through episodes toward goal images; everything is recorded.

For each episode: the robot is reset to the goal's start state (simulated robots: the `reset` extension; real
robots: the operator resets the scene and presses Enter), the controller is given the goal image, the control
loop runs `budget` steps at `hz`, the final observation is recorded and the judge decides success (see
`wm.validation.judges`). Simulated robots also report the env's own success flag; it is recorded as ground truth
(`success`; the sim judge's verdict) and never reaches the controller, which is told, after every step, the action
the robot actually sent (its optional `executed` hook).

Written to the run's folder:
  store/               episode store (open with `wm info DIR/store`), one frame per step plus the final frame:
                       rgb, proprio, action (what the robot sent), action_requested (what the controller asked),
                       plan (K, A) the action chunk the step's action came from, plan_step (step of the
                       observation it was planned from; -1 on the final frame), new_plan, t_observe / t_plan /
                       t_send / t_step (s), late, safety (a guard event arrived with this step's reply),
                       success (ground truth where the robot reports it, else the verdict on the final frame),
                       judged_success (the verdict, final frame), complete (False for an episode cut short by a
                       robot failure, or one the operator left unjudged), goal_latent_distance (with a model),
                       state / goal (simulated robots).
                       The final frame has action 0, as in every store.
  safety_events.jsonl  every guard event the robot reported: wall time, reason, detail, episode, step
  results.json         success rate (judged, and ground truth), latencies p50/p95 per loop section and per
                       decision, safety event counts, per-episode outcomes, the config (without the token);
                       rewritten after every episode, so it survives a failure
  summary.png          success per episode and step latency
Episodes are appended as they finish; if the robot fails mid-episode, the partial episode is saved with
`complete=False`, the results are written and the error is reported in one line.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.controller import Controller
from envs.robot.loop import ControlLoop
from envs.robot.protocol import RobotError
from wm.data.store import EpisodeStore
from wm.errors import WMError
from wm.evaluation.media import summary_figure
from wm.evaluation.metrics import percentiles, wilson_interval
from wm.validation.judges import wait_for_operator_reset
from wm.validation.recorder import SECTIONS, EpisodeRecorder


@dataclass
class Totals:
    """What the run has gathered so far, across episodes."""

    per_episode: list[dict] = field(default_factory=list)
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in SECTIONS})  # seconds per loop section
    decisions: list[float] = field(default_factory=list)  # seconds per replan / policy call
    late: int = 0
    dropped: int = 0
    aborted: str | None = None


class ValidationSession:
    """`ValidationSession(robot, controller, judge, out, budget, hz, keys, config).run(goals, episodes) -> results`.

    `controller` is a `Controller` (`envs.controller`; the control loop calls its `executed(step, obs, sent)` after
    every step); `judge(final_obs, goal_obs, episode) -> bool | None`;
    `keys` is the store layout (`recorder.store_keys`); `config` the run's public settings (no secrets), which
    name at least `robot`, `controller`, `checkpoint` and `episodes`; `model` (optional) records the latent goal
    distance of every frame."""

    def __init__(self, robot, controller: Controller, judge, out, budget: int, hz: float, keys: dict, config: dict, *,
                 chunk: int, model=None, async_plan: bool = False):  # fmt: skip
        self.robot, self.controller, self.judge, self.model = robot, controller, judge, model
        self.out, self.budget, self.hz, self.keys, self.config = Path(out), budget, hz, keys, config
        self.chunk = chunk
        self.has_truth = "sim_success" in robot.observation_features
        self.loop = ControlLoop(robot, controller, hz, async_plan, refill_at=max(1, chunk // 2))
        self.totals = Totals()
        self.started = time.time()

    def run(self, goals: list[dict], episodes: int) -> dict:
        """Run `episodes` episodes (cycling through `goals`); returns the results also in results.json."""
        store = EpisodeStore.create(self.out / "store", self.keys, self._store_spec())
        bar = tqdm(total=episodes * self.budget, desc=f"validate {self.config['controller']}", unit="step")
        results = {}
        try:
            for episode in range(episodes):
                verdict = self._episode(store, episode, goals[episode % len(goals)], bar)
                results = self.results()
                (self.out / "results.json").write_text(json.dumps(results, indent=2))
                if self.totals.aborted is None and verdict is None:
                    self.totals.aborted = "the operator judge got no answer (stdin closed)"
                if self.totals.aborted is not None:
                    break
                wins = sum(e["judged_success"] for e in self.totals.per_episode)
                bar.set_postfix(success=f"{wins}/{episode + 1}")
        finally:
            bar.close()
            if store.num_episodes:
                record = {"kind": "validation", "policy": self.config["controller"], **self.config}
                store.record_collection({**record, "episodes_written": store.num_episodes, "steps": self.budget})
            store.close()
        per = self.totals.per_episode
        if per:
            outcomes = {"judged": ([e["judged_success"] for e in per], "tab:green")}
            if per[0]["truth_success"] is not None:
                outcomes["ground truth"] = ([e["truth_success"] for e in per], "tab:gray")
            step_ms = np.asarray(self.totals.steps["t_step"]) * 1000
            summary_figure(self.out / "summary.png", outcomes, step_ms, 1000 / self.hz,
                           "step latency (ms): observe + plan + send")  # fmt: skip
        if self.totals.aborted is not None:
            kept = sum(e["complete"] for e in per)
            partial = len(per) - kept
            raise WMError(
                f"validation stopped at episode {len(per) - partial}: {self.totals.aborted}; "
                f"{kept} complete episode(s){' and the partial one' if partial else ''} are saved in {self.out}"
            )
        return results

    # ----------------------------------------------------------------------------------------- one episode
    def _episode(self, store: EpisodeStore, episode: int, goal: dict, bar) -> bool | None:
        """Run, record and judge one episode; returns the verdict (False if it did not complete)."""
        robot, totals = self.robot, self.totals
        recorder = EpisodeRecorder(self.keys, self.chunk, robot.action_features.shape[0])
        seen = len(robot.events)

        def on_step(record) -> None:
            nonlocal seen
            recorder.add(record, self.model, goal["goal_obs"], safety=len(robot.events) > seen)
            self._log_events(robot.events[seen:], episode, record.step)
            seen = len(robot.events)
            bar.update(1)

        complete, verdict = False, False
        try:
            self._reset(goal, episode)
            self.controller.reset({k: np.asarray(v)[None] for k, v in goal["goal_obs"].items()})  # a batch of one
            stats = self.loop.run(self.budget, on_step)
            final = robot.get_observation()
            recorder.add_final(final, self.model, goal["goal_obs"])
            complete = True
        except (RobotError, KeyboardInterrupt) as e:
            totals.aborted = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
            stats = self.loop.stats
        if complete:
            verdict = self.judge(final, goal["goal_obs"], episode)
        judged = complete and verdict is not None  # an episode nobody judged counts as neither success nor failure
        if not recorder.rows:
            return verdict
        arrays = recorder.arrays(judged, bool(verdict), goal["goal"], self.has_truth)
        store.append_episode(arrays)
        distance = arrays.get("goal_latent_distance")
        totals.per_episode.append(
            {
                "episode": episode,
                "complete": judged,
                "judged_success": bool(verdict),
                "truth_success": bool(arrays["success"][-1]) if self.has_truth else None,
                "final_goal_latent_distance": float(distance[-1]) if distance is not None else None,
                "steps": stats.steps,
                "late_steps": stats.late_steps,
                "rate_hz": round(stats.rate_hz, 2),
                "safety_events": int(arrays["safety"].sum()),
                "goal_source": goal["source"],
            }
        )
        totals.decisions.extend(self.controller.latencies)
        for k in SECTIONS:
            totals.steps[k].extend(arrays[k][:-1] if complete else arrays[k])
        totals.late += stats.late_steps
        totals.dropped += stats.dropped_actions
        return verdict

    def _reset(self, goal: dict, episode: int) -> None:
        if self.robot.can_reset:
            options = {k: np.asarray(goal[k], np.float64) for k in ("start", "goal") if goal[k] is not None}
            self.robot.reset({"state" if k == "start" else k: v for k, v in options.items()})
        else:
            wait_for_operator_reset(episode)

    def _log_events(self, events: list[dict], episode: int, step: int) -> None:
        if events:
            with (self.out / "safety_events.jsonl").open("a") as f:
                for e in events:
                    f.write(json.dumps({**e, "episode": episode, "loop_step": step}) + "\n")

    # ----------------------------------------------------------------------------------------- reports
    def _store_spec(self) -> dict:
        action = self.robot.action_features
        return {
            "env": {
                "id": self.robot.info["name"],
                "image_size": self.keys["rgb"]["shape"][0],
                "episode_steps": self.budget + 1,
            },  # fmt: skip
            "observation": {"rgb": self.keys["rgb"], "proprio": self.keys["proprio"]},
            "action": {"shape": list(action.shape), "low": action.low, "high": action.high, "alignment": "sent action"},
            "validation": {k: self.config[k] for k in ("controller", "checkpoint", "robot")} | {"hz": self.hz},
        }

    def results(self) -> dict:
        """The run's results so far (what results.json holds)."""
        totals, robot = self.totals, self.robot
        episodes = [e for e in totals.per_episode if e["complete"]]
        wins = sum(e["judged_success"] for e in episodes)
        lo, hi = wilson_interval(wins, len(episodes))
        truth = sum(e["truth_success"] for e in episodes) / len(episodes) if self.has_truth and episodes else None
        return {
            "robot": self.config["robot"],
            "robot_name": robot.info["name"] if robot.info else None,
            "controller": self.config["controller"],
            "episodes_requested": self.config["episodes"],
            "episodes_complete": len(episodes),
            "aborted": totals.aborted,
            "judge": self.judge.describe(),
            "success_rate": wins / len(episodes) if episodes else None,
            "success_95ci": [round(lo, 3), round(hi, 3)],
            "truth_success_rate": truth,
            "latency_ms": {k.removeprefix("t_"): percentiles(v, 1000, 2) for k, v in totals.steps.items()},
            "replan_latency_ms": percentiles(totals.decisions, 1000, 2),
            "loop": {
                "hz_target": self.hz,
                "hz_achieved": round(sum(e["rate_hz"] for e in episodes) / len(episodes), 2) if episodes else None,
                "late_steps": totals.late,
                "dropped_stale_actions": totals.dropped,
                "steps": len(totals.steps["t_step"]),
                "budget": self.budget,
            },
            "safety_events": {
                "total": len(robot.events),
                "by_reason": dict(Counter(e["reason"] for e in robot.events)),
            },
            "seconds": round(time.time() - self.started, 1),
            "per_episode": totals.per_episode,
            "config": self.config,
            "store": str(self.out / "store"),
        }
