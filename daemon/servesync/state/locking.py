"""The single-writer lock: one servesync per state directory.

``StateLock(state_dir)`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on
``state_dir/servesync.lock`` and writes the owner's pid into it; a second
servesync (any process, or a second lock in the same process) gets
:class:`~servesync.errors.LockHeldError` naming the pid and the file. Called
by the CLI before it opens the store or starts the loop.

The kernel drops a flock when its holder dies, even by SIGKILL, so there is
no stale lock to clean up; the pid left in the file is informative only. The
descriptor is not inherited by child processes (Python's default), so Ray
processes started by servesync cannot keep the lock alive after it exits.
Side effects: creates ``state_dir`` and the lock file; never deletes the
lock file (unlinking a flocked file lets two holders lock two inodes).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from servesync.errors import LockHeldError

LOCK_FILE = "servesync.lock"


class StateLock:
    """Exclusive ownership of ``state_dir``; use as a context manager."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LockHeldError at once (never waits)."""
        if self._fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "pid unknown"
            raise LockHeldError(
                f"another servesync ({who}) is running on {self.state_dir} "
                f"(lock file {self.path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock (closing the descriptor drops it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int, *, attempts: int = 5) -> int | None:
    """The holder's pid from the lock file. The holder writes it just after
    locking, so an empty file is retried briefly before giving up."""
    for _ in range(attempts):
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if raw.isdigit():
            return int(raw)
        time.sleep(0.02)
    return None
