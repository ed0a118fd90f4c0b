"""The single-writer lock, against other real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servesync.errors import LockHeldError
from servesync.state.locking import LOCK_FILE, StateLock

HOLDER = r"""
import sys
from pathlib import Path
from servesync.state.locking import StateLock

with StateLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()  # hold until told (or killed)
"""


@contextmanager
def holder(state_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the lock; killed on exit if still alive."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"locked\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        with pytest.raises(LockHeldError) as info:
            StateLock(tmp_path).acquire()
        message = str(info.value)
        assert f"another servesync (pid {proc.pid}) is running on {tmp_path}" in message
        assert str(tmp_path / LOCK_FILE) in message


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with StateLock(tmp_path) as lock:
            assert lock.held


def test_lock_is_released_when_the_holder_exits(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        assert proc.stdin is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
        with StateLock(tmp_path) as lock:
            assert lock.held


def test_holder_pid_is_written_and_cleared(tmp_path: Path) -> None:
    path = tmp_path / "new" / LOCK_FILE
    with StateLock(tmp_path / "new"):
        assert path.read_text() == f"{os.getpid()}\n"
    assert path.read_text() == ""
    assert path.exists()  # never unlinked: a flocked file must keep its inode


def test_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with StateLock(tmp_path), pytest.raises(LockHeldError):
        StateLock(tmp_path).acquire()
    with StateLock(tmp_path) as again:
        assert again.held
    assert not again.held


def test_lock_is_refused_while_other_process_holds_it_and_stays_refused(tmp_path: Path) -> None:
    with holder(tmp_path):
        for _ in range(3):
            with pytest.raises(LockHeldError):
                StateLock(tmp_path).acquire()
        assert (tmp_path / LOCK_FILE).read_text().strip().isdigit()
