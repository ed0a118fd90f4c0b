"""The one sd_notify listener of the tests: the socket systemd binds for ``NOTIFY_SOCKET``.

A real AF_UNIX datagram socket, bound in a short temp dir under ``/tmp``
(socket paths are limited to 107 characters) or, with ``abstract=True``, at
an abstract address. ``path`` is the value for ``NOTIFY_SOCKET``. A thread
keeps every message with its arrival time as it comes in, so a busy sender
never finds the socket full; every read first takes in what is already
queued, so a message sent before a call is always seen by it.

Used by the daemon loop and sd_notify unit tests (the ``notify`` fixture in
tests/conftest.py) and by the daemon e2e test.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

WAIT_S = 10.0  # how long wait_for waits unless told


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() on arrival
    text: str


class NotifyListener:
    """A bound AF_UNIX datagram socket, as systemd gives a Type=notify service."""

    def __init__(self, *, abstract: bool = False) -> None:
        self._dir: Path | None = None
        if abstract:
            name = f"servesync-test-{uuid.uuid4().hex}"
            self.path, address = "@" + name, "\0" + name
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="ssn", dir="/tmp"))
            self.path = address = str(self._dir / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(address)
        self._sock.setblocking(False)
        self.messages: list[Message] = []  # every message, in order of arrival
        self._drained = 0  # how many of them drain() has handed out
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the thread through it
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._receive, name="notify-listener",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                readable, _, _ = select.select([self._sock, self._wake_r], [], [])
            except (OSError, ValueError):  # closed meanwhile
                return
            if self._sock in readable:
                with self._cond:
                    self._take()

    def _take(self) -> None:
        """Move what is queued on the socket into ``messages`` (holding the lock)."""
        if self._closed:
            return
        came = False
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append(Message(time.monotonic(), data.decode("utf-8", "replace")))
            came = True
        if came:
            self._cond.notify_all()

    def wait_for(self, match: str | Callable[[str], bool], *, since: int = 0,
                 timeout: float = WAIT_S) -> Message | None:
        """The first message from index ``since`` on that is ``match`` (a text,
        or a predicate on the text); None if none came within ``timeout``."""
        def wanted(text: str) -> bool:
            return text == match if isinstance(match, str) else match(text)

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._take()
                for message in self.messages[since:]:
                    if wanted(message.text):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def drain(self, timeout: float = 0.0) -> list[str]:
        """The texts received since the last drain, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._take()
            while len(self.messages) == self._drained:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                self._take()
            got = [m.text for m in self.messages[self._drained:]]
            self._drained = len(self.messages)
        return got

    def texts(self, since: int = 0) -> list[str]:
        """Every text received (from index ``since`` on)."""
        with self._cond:
            self._take()
            return [m.text for m in self.messages[since:]]

    def count(self) -> int:
        """How many messages have come so far (an index for ``since``)."""
        with self._cond:
            self._take()
            return len(self.messages)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._sock.close()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
