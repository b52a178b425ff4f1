"""How many CPU threads torch's kernels use in a `wm` job, chosen for the machine as it is while the job runs.

Two thread pools on the same cores do not share them, they fight: on a 2-core machine beside one busy process the
imagined env ran 2.3x slower on 2 torch threads than on 1 (`scripts/bench_imagine.py --busy 1`). So a job takes
the CPUs it may use (its affinity) minus those other processes keep busy *now* (runnable tasks in `/proc/loadavg`
less this process's own running threads, the median of a few samples), at least one, and its long loops look again
every `recheck_s` seconds (`ThreadBudget.tick`), giving threads back when the machine gets busy and taking them
again when it is free. `WM_THREADS=N` pins N threads instead (`auto` is the default).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path

from wm.errors import WMError

log = logging.getLogger("wm")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _own_running_threads(proc: Path) -> int:
    """This process's threads in state R (running or runnable) right now."""
    running = 0
    for stat in (proc / "self" / "task").glob("*/stat"):
        try:
            running += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):  # the thread ended between listing and reading
            continue
    return running


def busy_elsewhere(samples: int = 5, interval_s: float = 0.02, proc: Path = Path("/proc")) -> int:
    """How many CPUs other processes keep busy now: the median over `samples` readings of the runnable tasks in
    `proc/loadavg` less this process's own running threads (0 where there is no `/proc`)."""
    if not (proc / "loadavg").exists():
        return 0
    readings = []
    for i in range(samples):
        runnable = int((proc / "loadavg").read_text().split()[3].split("/")[0])
        readings.append(max(0, runnable - max(1, _own_running_threads(proc))))  # the reader itself runs
        if i + 1 < samples:
            time.sleep(interval_s)
    return int(statistics.median_low(readings))


def parse_threads(setting: str) -> int | None:
    """`WM_THREADS`'s value: None for `auto`, else the pinned count (a one-line WMError for anything else)."""
    text = setting.strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise WMError(f"WM_THREADS must be a positive whole number or auto, got {setting!r}")
    return int(text)


class ThreadBudget:
    """Sets torch's thread count for a job (`OMP_NUM_THREADS` before torch is loaded, `set_num_threads` after):
    pinned (`WM_THREADS=N`) or fitted to the free CPUs (`auto`), see the module docstring. `threads` is the count in
    use; `tick()` is cheap and re-fits at most every `recheck_s`."""

    def __init__(self, setting: str | None = None, recheck_s: float = 30.0, busy=busy_elsewhere):
        self.pinned = parse_threads(os.environ.get("WM_THREADS", "auto") if setting is None else setting)
        self.recheck_s, self.busy = recheck_s, busy
        self.threads = 0
        self.checked = 0.0
        self._fit()

    def _fit(self) -> None:
        self.checked = time.monotonic()
        cpus = usable_cpus()
        want = self.pinned or max(1, cpus - self.busy())
        if want != self.threads:
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(want)
            else:  # torch reads it when it loads: `wm envs` or `wm info` never load torch for this
                os.environ["OMP_NUM_THREADS"] = str(want)
            if self.threads or want < cpus:  # say so when it is not simply every CPU at the start
                why = "WM_THREADS" if self.pinned else f"{cpus - want} of {cpus} CPUs busy elsewhere"
                log.info("torch threads: %d (%s; WM_THREADS=N pins them)", want, why)
            self.threads = want

    def tick(self) -> None:
        """Re-fit the thread count when `recheck_s` has passed since the last look (auto only)."""
        if self.pinned is None and time.monotonic() - self.checked >= self.recheck_s:
            self._fit()


_budget: ThreadBudget | None = None


def configure(setting: str | None = None) -> ThreadBudget:
    """Fit this process's torch threads now and let the long loops' `tick()` keep them fitted (the `wm` CLI)."""
    global _budget
    _budget = ThreadBudget(setting)
    return _budget


def tick() -> None:
    """Called by long loops (training, goal-reaching episodes, refinement); a no-op unless `configure` ran, so a
    library user's own `torch.set_num_threads` is never overridden."""
    if _budget is not None:
        _budget.tick()
