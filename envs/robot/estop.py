"""The emergency stop: one latch tripped by a signal, a stop file, a key on stdin, or code (`trip`).

Once tripped it stays tripped; the safety guard polls `reason` every step (and every watchdog tick) and performs
the safe stop (hold, then disconnect). Signal handlers can only be installed from the main thread.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


class EStop:
    """`reason` is None until tripped, then a one-line description of what tripped it."""

    def __init__(self, signals=(signal.SIGUSR1,), stop_file: str | os.PathLike | None = None, key: bool = False):
        self.signals = tuple(signals)
        self.stop_file = Path(stop_file) if stop_file else None
        self.key = key
        self._reason: str | None = None
        self._previous: dict = {}

    def install(self) -> EStop:
        """Register the signal handlers (main thread) and start the stdin key reader if asked; returns self."""
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        if self.key:
            threading.Thread(target=self._read_keys, name="estop-key", daemon=True).start()
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def trip(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason

    @property
    def reason(self) -> str | None:
        if self._reason is None and self.stop_file is not None and self.stop_file.exists():
            self.trip(f"stop file {self.stop_file} appeared")
        return self._reason

    def _on_signal(self, signum, _frame) -> None:
        self.trip(f"signal {signal.Signals(signum).name}")

    def _read_keys(self) -> None:
        for line in sys.stdin:
            if line.strip().lower() in ("s", "stop"):
                self.trip("stop key pressed")
                return
