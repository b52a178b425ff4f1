"""The emergency stop: one latch tripped by a signal, a stop file, a key on stdin, or code (`trip`).

Once tripped it stays tripped; the safety guard polls `reason` every step (and every watchdog tick) and performs
the safe stop (hold, then disconnect). Signal handlers can only be installed from the main thread. An e-stop that
could never trip is refused when it is made: a stop file in a folder that does not exist, a stop key on a stdin that
is closed or /dev/null (a server started in the background with `&`); a key reader that reaches the end of stdin
later says so (a warning: signals and the stop file still work).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from wm.errors import WMError

log = logging.getLogger("wm.robot")


class EStop:
    """`reason` is None until tripped, then a one-line description of what tripped it."""

    def __init__(self, signals=(signal.SIGUSR1,), stop_file: str | os.PathLike | None = None, key: bool = False):
        self.signals = tuple(signals)
        self.stop_file = Path(stop_file) if stop_file else None
        if self.stop_file is not None and not self.stop_file.parent.is_dir():
            raise WMError(f"the stop file's folder {self.stop_file.parent} does not exist, so the file could never "
                          "appear; create the folder or pick another --stop-file")  # fmt: skip
        if key and not stdin_can_type():
            raise WMError("--estop-key reads s + Enter from stdin, but stdin is closed or /dev/null (started in the "
                          "background?): run in a terminal, or use --stop-file or SIGUSR1")  # fmt: skip
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
        log.warning("the e-stop key is dead: stdin ended; SIGUSR1%s still e-stop",
                    f" and the stop file {self.stop_file}" if self.stop_file else "")  # fmt: skip


def stdin_can_type() -> bool:
    """Whether stdin could ever deliver a key: open, and not /dev/null."""
    if sys.stdin is None or sys.stdin.closed:
        return False
    try:
        return not os.path.samestat(os.fstat(sys.stdin.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):  # no file descriptor (a replaced stream): assume it can
        return True
