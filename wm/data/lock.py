"""One writer at a time: an advisory `flock` on `<store>/.lock`.

The kernel releases the lock when the holding process dies, even by SIGKILL, so a crashed writer never leaves
a stale lock behind. The file records the holder's pid for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from wm.errors import WMError


class StoreLock:
    """Exclusive, non-blocking lock on a store directory. Use `acquire()` / `release()` or `with`."""

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise WMError(
                f"{self.path.parent} is being written by another process (pid {self.holder()}); "
                "wait for it to finish or write to another path"
            )

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
