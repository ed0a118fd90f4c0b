"""The notification outbox: what is still to be told to each webhook sink.

Filled by the reconciler's notifier (:mod:`servesync.status.notifying`) after
a tick's records are stored, emptied by its delivery threads; kept in the
state dir so a restart neither loses nor repeats what was queued
(README, Notifications; docs/ARCHITECTURE.md, "Notifications").

The file ``notify.outbox`` (0600) is append-only JSON lines, written like the
store's journal (:mod:`servesync.state.store`): each append is fsynced
before it returns; a torn last line (no newline: a write killed midway) is
dropped at open; a complete line that is not JSON is skipped with a warning
(a notification is not worth stopping the daemon for). Lines:

* ``{"add": {"id": "<hex>", "sink": "<name>", "body": "<JSON text>"}}``: one
  notification, in the order the sink must get it; ``id`` is its idempotency
  id (header ``X-Servesync-Delivery``), ``body`` the exact bytes POSTed, so a
  retry sends, and signs, the same body;
* ``{"done": "<id>", "how": "delivered" | "refused" | "dropped"}``: no more
  attempts.

Once done lines dominate (more than :data:`COMPACT_MIN_DONE` and more than
the pending ones), the file is rewritten atomically with the pending entries
only. Thread-safe: one lock around memory and file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesync.state.atomicio import atomic_write, fsync_dir

log = logging.getLogger("servesync.notify")

OUTBOX_FILE = "notify.outbox"
OUTBOX_MODE = 0o600
COMPACT_MIN_DONE = 64


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification for one sink: its idempotency id and the body's text."""

    id: str
    sink: str
    body: str


def encode_body(body: Mapping[str, Any]) -> str:
    """The one text of a body: compact, keys sorted (what is signed and sent)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Outbox:
    """The pending notifications of ``state_dir``, in memory and on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / OUTBOX_FILE
        self._lock = threading.Lock()
        self._pending: dict[str, Entry] = {}  # insertion order = delivery order per sink
        self._done_lines = 0
        self._load()

    def _load(self) -> None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = blob.split(b"\n")
        torn = lines.pop()
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                if "add" in item:
                    add = item["add"]
                    entry = Entry(id=str(add["id"]), sink=str(add["sink"]), body=str(add["body"]))
                    self._pending[entry.id] = entry
                else:
                    self._pending.pop(str(item["done"]), None)
                    self._done_lines += 1
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s: line %d is not an outbox entry (%s): skipped", self.path,
                            number, type(e).__name__)
        if torn:
            log.warning("%s: its last line was torn (a write killed midway); dropped",
                        self.path)
            self._rewrite()  # the next line must not be glued to the fragment

    def add(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Entry]:
        """Queue ``(sink, body)`` pairs, in order, in one fsynced append. Each
        body gets its idempotency id as ``body["id"]``. Returns the entries."""
        entries = []
        for sink, body in items:
            delivery = secrets.token_hex(16)
            entries.append(Entry(id=delivery, sink=sink,
                                 body=encode_body({**body, "id": delivery})))
        if not entries:
            return []
        data = "".join(json.dumps({"add": {"id": e.id, "sink": e.sink, "body": e.body}},
                                  separators=(",", ":")) + "\n" for e in entries)
        with self._lock:
            self._append(data.encode())
            self._pending.update((e.id, e) for e in entries)
        return entries

    def first(self, sink: str) -> Entry | None:
        """The oldest pending notification of ``sink``."""
        with self._lock:
            return next((e for e in self._pending.values() if e.sink == sink), None)

    def pending(self, sink: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._pending.values() if sink is None or e.sink == sink]

    def done(self, entry_id: str, how: str = "delivered") -> None:
        """No more attempts at ``entry_id`` (delivered, refused by the receiver,
        or dropped: its sink is no longer configured); compacts when due."""
        with self._lock:
            if entry_id not in self._pending:
                return
            self._append((json.dumps({"done": entry_id, "how": how},
                                     separators=(",", ":")) + "\n").encode())
            del self._pending[entry_id]
            self._done_lines += 1
            if self._done_lines > max(COMPACT_MIN_DONE, len(self._pending)):
                self._rewrite()

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     OUTBOX_MODE)
        try:
            created = os.fstat(fd).st_size == 0
            os.fchmod(fd, OUTBOX_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def _rewrite(self) -> None:
        """The pending entries only, atomically (temp file, fsync, rename)."""
        data = "".join(json.dumps({"add": {"id": e.id, "sink": e.sink, "body": e.body}},
                                  separators=(",", ":")) + "\n"
                       for e in self._pending.values())
        atomic_write(self.path, data.encode(), mode=OUTBOX_MODE)
        self._done_lines = 0
