"""The control loop: observe, plan/infer, send at a fixed rate, timing each section and warning when late.

The loop drives one robot with a `Controller` (`envs.controller`, B = 1): it gives the controller what a
controller may see of an observation (`controller_view`, plus `"step"`: the control step of the observation since
the run started) and gets a chunk of actions, action k meant for the k-th step from the observation's step on
(K = 1 for step-by-step controllers). After every send, `executed(step, obs, sent)` (in the loop's thread) tells the
controller what the robot reports it sent (the guard's clipped, rate- and change-limited action, or its hold) after
observing `obs` (the controller's view): a controller that keeps an action history (MPC's past actions) records
these, not what it asked for.

Synchronous (default): when the queue of actions is empty the loop calls the controller on the current observation
and waits for it. Asynchronous (`async_plan=True`): a worker thread plans the next chunk from the latest observation
while the current chunk executes (it starts once `refill_at` or fewer actions are left); when a chunk arrives, the
actions meant for steps already past are dropped as stale and the rest replace the queue. If the queue runs dry the
loop waits for the planner (and, if all of its chunk is stale, sends the chunk's last action).

Sleeping to the next tick never catches up a late step with a burst: the schedule restarts from now.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from envs.controller import Controller
from envs.robot.protocol import controller_view

log = logging.getLogger("wm.robot")
LATE_WARNING_EVERY_S = 5.0


@dataclass
class StepRecord:
    """One control step. Times in seconds."""

    step: int
    obs: dict  # the full observation (sim_* ground truth included, for recording only)
    requested: np.ndarray  # (A,) what the controller asked for
    sent: np.ndarray  # (A,) what the robot reports it sent
    chunk: np.ndarray  # (K, A) the chunk the action came from
    chunk_step: int  # the step of the observation the chunk was planned from
    new_plan: bool  # a chunk arrived at this step
    t_observe: float
    t_plan: float  # controller time (sync) or time spent waiting for the planner (async)
    t_send: float
    t_step: float  # observe + plan + send (sleep excluded)
    late: bool  # t_step exceeded the period


@dataclass
class LoopStats:
    steps: int = 0
    late_steps: int = 0
    dropped_actions: int = 0  # stale actions dropped (async)
    plans: int = 0
    seconds: float = 0.0
    t_step: list[float] = field(default_factory=list)

    @property
    def rate_hz(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


class ControlLoop:
    """Drive `robot` with `controller` at `hz` steps per second, reporting each send to `controller.executed`."""

    def __init__(self, robot, controller: Controller, hz: float, async_plan: bool = False, refill_at: int = 1):
        self.robot, self.controller, self.period = robot, controller, 1.0 / hz
        self.async_plan, self.refill_at = async_plan, refill_at
        self.stats = LoopStats()
        self._last_warning = -np.inf

    def run(self, steps: int, on_step: Callable[[StepRecord], None] | None = None) -> LoopStats:
        """Run `steps` control steps (a new episode: the action queue starts empty); returns this run's stats."""
        self.stats = stats = LoopStats()
        queue: deque[tuple[int, np.ndarray]] = deque()  # (step the action is meant for, action (A,))
        chunk, chunk_step = None, 0
        pool = ThreadPoolExecutor(1, thread_name_prefix="planner") if self.async_plan else None
        pending: tuple[Future, int] | None = None
        started = next_tick = time.perf_counter()
        try:
            for t in range(steps):
                t0 = time.perf_counter()
                obs = self.robot.get_observation()
                view = {**controller_view(obs), "step": t}
                t1 = time.perf_counter()
                new_plan = False
                if pool is None:
                    if not queue:
                        chunk, chunk_step, new_plan = self._plan(view), t, True
                        queue.extend((t + i, a) for i, a in enumerate(chunk))
                else:
                    if pending is not None and (pending[0].done() or not queue):
                        chunk, chunk_step = pending[0].result(), pending[1]
                        fresh = [(chunk_step + i, a) for i, a in enumerate(chunk) if chunk_step + i >= t]
                        stats.dropped_actions += len(chunk) - len(fresh)
                        queue = deque(fresh or [(t, chunk[-1])])
                        pending, new_plan = None, True
                    if pending is None and len(queue) <= self.refill_at:
                        pending = (pool.submit(self._plan, view), t)
                        if not queue:  # the first chunk of the run: nothing to execute meanwhile
                            chunk, chunk_step = pending[0].result(), t
                            queue.extend((t + i, a) for i, a in enumerate(chunk))
                            pending, new_plan = None, True
                _, action = queue.popleft()
                t2 = time.perf_counter()
                sent = np.asarray(self.robot.send_action(action), np.float32)
                t3 = time.perf_counter()
                self.controller.executed(t, _batch(view), sent[None])
                late = t3 - t0 > self.period
                stats.steps, stats.late_steps = t + 1, stats.late_steps + late
                stats.plans += new_plan
                stats.t_step.append(t3 - t0)
                if late:
                    self._warn_late(t, t3 - t0, t2 - t1)
                if on_step is not None:
                    on_step(
                        StepRecord(
                            t, obs, action, sent, chunk, chunk_step, new_plan, t1 - t0, t2 - t1, t3 - t2, t3 - t0, late
                        )
                    )
                next_tick += self.period
                now = time.perf_counter()
                if now < next_tick:
                    time.sleep(next_tick - now)
                else:
                    next_tick = now
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            stats.seconds = time.perf_counter() - started
        return stats

    def _plan(self, view: dict) -> np.ndarray:
        chunk = self.controller.act(_batch(view))[0]
        chunk = chunk.cpu().numpy() if hasattr(chunk, "cpu") else np.asarray(chunk)
        return chunk.astype(np.float32).reshape(-1, chunk.shape[-1])  # (K, A)

    def _warn_late(self, step: int, took: float, planning: float) -> None:
        now = time.monotonic()
        if now - self._last_warning >= LATE_WARNING_EVERY_S:
            self._last_warning = now
            log.warning(
                "control loop late: step %d took %.0f ms (planning %.0f ms) for a %.0f ms period",
                step,
                took * 1000,
                planning * 1000,
                self.period * 1000,
            )


def _batch(view: dict) -> dict:
    """One robot's view as a batch of one (`"step"` stays an int)."""
    return {k: v if k == "step" else np.asarray(v)[None] for k, v in view.items()}
