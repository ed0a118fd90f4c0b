"""The notification outbox: what is still to be told to each webhook sink.

Filled by the reconciler's notifier (:mod:`servesync.status.notifying`),
emptied by its delivery threads; kept in the state dir so a restart neither
loses nor repeats what was queued (README, Notifications;
docs/ARCHITECTURE.md, "Notifications").

The file ``notify.outbox`` (0600) is append-only JSON lines, written like the
store's journal (:mod:`servesync.state.store`): each append is one line,
fsynced before it returns; a failed append is cut back to the last complete
line (else the next write rewrites the file); a torn last line (no newline: a
write killed midway) is dropped at open; a complete line that is not JSON is
skipped with a warning. One line may hold any of:

* ``"add": [{"id", "sink", "body", "at"}, ...]``: notifications, in the order
  the sink must get them; ``id`` is the idempotency id (header
  ``X-Servesync-Delivery``), ``body`` the exact text POSTed (so a retry sends,
  and signs, the same body), ``at`` when it was queued (epoch seconds: the
  base of the sink's ``max_age_s``);
* ``"done": [[id, how], ...]``: no more attempts (``delivered``, ``refused``,
  ``dropped``);
* ``"marks": {model_key: state | null}``: the last state each model was
  notified in (null: forgotten). Written in the same line as the entries it
  announces, so "notified up to" and "queued" can never disagree: a state the
  store holds and the marks do not is a transition still to be queued.

Once the file has more than :data:`COMPACT_MIN_LINES` lines and more than
twice as many as pending entries (done entries and marks lines dominate),
it is rewritten atomically as one line of the pending entries and the
marks: its size follows what is pending (bounded per sink by the
notifier's ``max_pending``), not the history. Thread-safe: one lock around memory and file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesync.state.atomicio import atomic_write, fsync_dir

log = logging.getLogger("servesync.notify")

OUTBOX_FILE = "notify.outbox"
OUTBOX_MODE = 0o600
COMPACT_MIN_LINES = 64
COMPACT_MIN_DONE = COMPACT_MIN_LINES  # the name the first tests used


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification for one sink: its idempotency id, the body's text and
    when it was queued (epoch seconds)."""

    id: str
    sink: str
    body: str
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "sink": self.sink, "body": self.body, "at": self.at}


def encode_body(body: Mapping[str, Any]) -> str:
    """The one text of a body: compact, keys sorted, ASCII only (a lone
    surrogate, e.g. from an undecodable file name, becomes a ``\\udcxx``
    escape, so encoding the text can never fail)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _line(item: Mapping[str, Any]) -> bytes:
    return (json.dumps(item, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


class Outbox:
    """The pending notifications and the notified marks of ``state_dir``, in
    memory and on disk. Raises OSError when the file cannot be read."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(state_dir) / OUTBOX_FILE
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, Entry] = {}  # insertion order = delivery order per sink
        self._queues: dict[str, dict[str, Entry]] = {}  # the same, per sink
        self._marks: dict[str, str] = {}
        self.marked = False  # a marks line was ever written (else: before any baseline)
        self._lines = 0  # lines in the file since it was last rewritten
        self._rewrite_next = False  # a failed append could not be cut back
        self._load()

    def _load(self) -> None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = blob.split(b"\n")
        torn = lines.pop()
        self._lines = len(lines)
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                adds = [Entry(id=str(a["id"]), sink=str(a["sink"]), body=str(a["body"]),
                              at=float(a.get("at", 0.0))) for a in item.get("add", ())]
                done = [str(d[0]) for d in item.get("done", ())]
                marks = item.get("marks")
                if marks is not None and not isinstance(marks, dict):
                    raise TypeError("marks")
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                log.warning("%s: line %d is not an outbox entry (%s): skipped", self.path,
                            number, type(e).__name__)
                continue
            self._apply(adds, done, marks)
        if torn:
            log.warning("%s: its last line was torn (a write killed midway); dropped",
                        self.path)
            self._rewrite()  # the next line must not be glued to the fragment

    def _apply(self, adds: Iterable[Entry], done: Iterable[str],
               marks: Mapping[str, Any] | None) -> None:
        for e in adds:
            self._pending[e.id] = e
            self._queues.setdefault(e.sink, {})[e.id] = e
        for entry_id in done:
            gone = self._pending.pop(entry_id, None)
            if gone is not None:
                self._queues.get(gone.sink, {}).pop(entry_id, None)
        if marks is not None:
            self.marked = True
            for key, state in marks.items():
                if state is None:
                    self._marks.pop(str(key), None)
                else:
                    self._marks[str(key)] = str(state)

    def add(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
            marks: Mapping[str, str | None] | None = None) -> list[Entry]:
        """Queue ``(sink, body)`` pairs, in order, and set ``marks``, in one
        fsynced append. Each body gets its idempotency id as ``body["id"]``.
        Returns the entries; memory changes only once the line is on disk."""
        now = self.clock()
        entries = []
        for sink, body in items:
            delivery = secrets.token_hex(16)
            entries.append(Entry(id=delivery, sink=sink, at=now,
                                 body=encode_body({**body, "id": delivery})))
        if not entries and marks is None:
            return []
        item: dict[str, Any] = {}
        if entries:
            item["add"] = [e.to_json() for e in entries]
        if marks is not None:
            item["marks"] = dict(marks)
        with self._lock:
            self._write(_line(item))
            self._apply(entries, (), marks)
            self._compact_if_due()
        return entries

    def marks(self) -> dict[str, str]:
        """The last state each model was notified in (a copy)."""
        with self._lock:
            return dict(self._marks)

    def first(self, sink: str) -> Entry | None:
        """The oldest pending notification of ``sink``."""
        with self._lock:
            return next(iter(self._queues.get(sink, {}).values()), None)

    def count(self, sink: str) -> int:
        with self._lock:
            return len(self._queues.get(sink, {}))

    def pending(self, sink: str | None = None) -> list[Entry]:
        with self._lock:
            if sink is not None:
                return list(self._queues.get(sink, {}).values())
            return list(self._pending.values())

    def done(self, entry_id: str, how: str = "delivered") -> None:
        """No more attempts at ``entry_id`` (delivered, refused by the
        receiver, or dropped); compacts when due."""
        self.finish([entry_id], how)

    def finish(self, entry_ids: Iterable[str], how: str) -> None:
        """:meth:`done` for several entries, in one append."""
        with self._lock:
            ids = [i for i in entry_ids if i in self._pending]
            if not ids:
                return
            self._write(_line({"done": [[i, how] for i in ids]}))
            self._apply((), ids, None)
            self._compact_if_due()

    def _compact_if_due(self) -> None:
        if self._lines > max(COMPACT_MIN_LINES, 2 * len(self._pending)):
            try:
                self._rewrite()
            except OSError as e:  # the appended line stands: compaction waits
                log.warning("%s: compaction failed (%s); the file stays as it is",
                            self.path, e.strerror or type(e).__name__)

    def _write(self, line: bytes) -> None:
        if self._rewrite_next:  # the file may end in a fragment: start afresh
            self._rewrite(extra=line)
            self._lines = 2
            return
        self._append(line)
        self._lines += 1

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     OUTBOX_MODE)
        try:
            size = os.fstat(fd).st_size
            try:
                os.fchmod(fd, OUTBOX_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                self._cut(fd, size)
                raise
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(self.path.parent)

    def _cut(self, fd: int, size: int) -> None:
        """After a failed append (disk full, EIO): back to the last complete
        line, so the next line is not glued to a fragment; if even that fails,
        the next write rewrites the file instead of appending."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            self._rewrite_next = True

    def _rewrite(self, extra: bytes = b"") -> None:
        """One line of the pending entries and the marks (and ``extra``, a line
        not yet applied), atomically (temp file, fsync, rename)."""
        item: dict[str, Any] = {"add": [e.to_json() for e in self._pending.values()]}
        if self.marked:
            item["marks"] = dict(self._marks)
        atomic_write(self.path, _line(item) + extra, mode=OUTBOX_MODE)
        self._lines = 1
        self._rewrite_next = False
