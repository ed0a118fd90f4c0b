"""Webhook notifications: state transitions → the outbox → HTTP POSTs.

After every tick the reconciler hands :meth:`Notifier.observe` the stored
records; the notifier compares each model's state with the last state it was
notified in (the outbox's marks, :mod:`servesync.state.outbox`) and queues
one entry per changed model and sink in the same fsynced append that moves
the marks: a daemon killed between the store write and this append derives
the missing transitions at its next tick. At the first start with an outbox
that has no marks (a fresh or upgraded state dir), the stored states become
the marks without a notification (no flood). Delivery never blocks a tick.

One delivery thread per sink POSTs that sink's entries in order, each until
it is delivered, refused, or dropped: a sink that is down holds its own queue
(retried with exponential backoff, 1 s doubling up to ``max_backoff_s``)
while the other sinks keep going. An entry older than the sink's
``max_age_s`` or that failed ``max_attempts`` times is dropped; more than
``max_pending`` entries for a sink drop the oldest of the user with the most
waiting (:func:`fair_drops`; each drop logged with the
sink's name and counted). At least once: an entry is marked done only after a
2xx, so a crash between the POST and the mark sends it again, with the same
``X-Servesync-Delivery`` id, which receivers deduplicate on.

One :class:`Notifications` per daemon keeps one Notifier (one outbox, one
thread per sink) across config reloads: a reload only hands it the new sinks.
Each POST has a wall-clock deadline (``timeout_s``, name resolution and
connect included): past it the socket is shut down and the attempt counts as
failed, so a receiver trickling bytes cannot hold a thread. No proxy from the
environment, redirects not followed (a 301/308 is refused, other 3xx
retried), a 4xx other than 408 and 429 is the receiver refusing that body for
good. An error of the outbox file never ends a delivery thread (logged,
backed off, retried) and never stops reconciliation.

What is sent (README, Notifications): a JSON body naming the model (public
id, model key, user, model id), its old and new state, the revision and the
error summary; headers ``X-Servesync-Delivery``, ``X-Servesync-Event`` and,
with a ``secret_file``, ``X-Servesync-Signature: sha256=<hex HMAC-SHA256 of
the body>``. Secrets: the secret file's content and the sink's URL (which may
hold a token) are never logged; a sink is named by its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import http.client
import json
import logging
import os
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from servesync.config import Config, NotificationSink
from servesync.converge.ports import Transition
from servesync.converge.records import ModelRecord, State, own_secrets
from servesync.redaction import scrub
from servesync.state.outbox import Entry, Outbox
from servesync.status.metrics import write_registry

log = logging.getLogger("servesync.notify")

BACKOFF_START_S = 1.0
METRICS_FILE = "metrics-notify.prom"
USER_AGENT = "servesync-notify/1"
MAX_SECRET_BYTES = 4096
IDLE_WAIT_S = 5.0


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_s(attempts: int, max_backoff_s: float) -> float:
    """The wait after the ``attempts``-th failure in a row: 1, 2, 4, ... s, capped."""
    return float(min(max_backoff_s, BACKOFF_START_S * 2 ** max(attempts - 1, 0)))


def payload(t: Transition, operator: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON body of one transition (the outbox adds its ``id``). The error
    summary is scrubbed again (it was when it entered the record): of the
    model's env values, the operator's ``replica_env`` values (``operator``),
    URL credentials and token-shaped strings."""
    r = t.record
    known = own_secrets([r], operator)
    return {
        "event": str(r.state),
        "model": {"public_id": r.public_id, "model_key": r.model_key, "user_id": r.user_id,
                  "model_id": r.suffix, "source_file": r.source_file},
        "old_state": None if t.old is None else str(t.old),
        "new_state": str(r.state),
        "revision": r.attempted_revision or t.revision,
        "error_summary": None if r.error_summary is None else scrub(r.error_summary, known),
        "at": r.updated_at,
        "tick": t.tick,
    }


def _user_of(entry: Entry) -> str:
    try:
        user = json.loads(entry.body)["model"]["user_id"]
    except (ValueError, KeyError, TypeError):
        return ""
    return user if isinstance(user, str) else ""


def fair_drops(queue: Sequence[Entry], keep: int) -> list[Entry]:
    """The entries to drop so that at most ``keep`` of a sink's ``queue``
    (oldest first) wait: each time, the oldest entry of the user with the
    most waiting, so a tenant whose models flap during an outage pushes out
    its own notifications, not other tenants'."""
    excess = len(queue) - keep
    if excess <= 0:
        return []
    by_user: dict[str, list[Entry]] = {}
    for entry in queue:
        by_user.setdefault(_user_of(entry), []).append(entry)
    heap = [(-len(entries), user) for user, entries in by_user.items()]
    heapq.heapify(heap)
    taken: dict[str, int] = {}
    drops: list[Entry] = []
    for _ in range(excess):
        count, user = heapq.heappop(heap)
        n = taken.get(user, 0)
        drops.append(by_user[user][n])
        taken[user] = n + 1
        if count + 1 < 0:
            heapq.heappush(heap, (count + 1, user))
    return drops


class PostTimeout(Exception):
    """A POST that did not finish within its deadline (it was cut)."""


class _Post:
    """One POST in its own thread, so that the caller's deadline holds even
    while the name is resolved; :meth:`abort` shuts the socket down."""

    def __init__(self, url: str, body: bytes, headers: Mapping[str, str],
                 timeout_s: float) -> None:
        self.parts = urllib.parse.urlsplit(url)
        self.body, self.headers, self.timeout_s = body, dict(headers), timeout_s
        self.code: int | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="servesync-post")

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            p = self.parts
            if p.scheme == "https":
                conn = http.client.HTTPSConnection(p.hostname or "", p.port,
                                                   timeout=self.timeout_s, context=_tls())
            else:
                conn = http.client.HTTPConnection(p.hostname or "", p.port,
                                                  timeout=self.timeout_s)
            self._conn = conn
            conn.connect()  # name resolution and connect: the caller's deadline runs
            if self._aborted:
                raise PostTimeout()
            target = (p.path or "/") + (f"?{p.query}" if p.query else "")
            conn.request("POST", target, body=self.body, headers=self.headers)
            with conn.getresponse() as response:  # closed, whatever the status
                response.read(65536)
                self.code = int(response.status)
        except BaseException as e:  # reported to the caller, which classifies it
            self.error = e
        finally:
            if conn is not None:
                conn.close()
            self.done.set()

    def abort(self) -> None:
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> int:
        """The status code; raises the POST's error, or PostTimeout past the deadline."""
        self.thread.start()
        if not self.done.wait(self.timeout_s):
            self.abort()
            raise PostTimeout()
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code


@dataclass(slots=True)
class SinkStats:
    """Counters of one sink since start: the only count, which
    ``metrics-notify.prom`` shows (:class:`NotifyMetrics`)."""

    delivered: int = 0
    failed: int = 0  # attempts that failed and will be retried
    refused: int = 0  # entries the receiver refused for good (4xx)
    dropped: int = 0  # entries given up: too old, too many attempts, over max_pending
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """The tick thread (over ``max_pending``) and the sink's delivery thread
    count into the same counters."""

    def count(self, outcome: str, n: int = 1) -> None:
        """Add ``n`` to the counter of ``outcome`` (one of :data:`OUTCOMES`)."""
        with self.lock:
            setattr(self, outcome, getattr(self, outcome) + n)


OUTCOMES = ("delivered", "failed", "refused", "dropped")
"""The counters of :class:`SinkStats`: the ``outcome`` label of
``servesync_notifications_total``."""


class Outcome:
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"
    DROPPED = "dropped"


class NotifyMetrics:
    """``metrics-notify.prom`` in the status dir (node_exporter's textfile
    collector reads it beside ``metrics.prom``): per sink,
    ``servesync_notifications_total{sink,outcome}`` (delivered, failed: an
    attempt that will be retried, refused, dropped) and
    ``servesync_notifications_pending{sink}``,
    ``servesync_notifications_oldest_pending_age_seconds{sink}``; and
    ``servesync_notifications_disabled`` (1: the outbox could not be opened,
    nothing is queued). Rewritten after every change. The totals are read
    from ``stats``, which the :class:`Notifier` counts in (its own ``stats``)."""

    def __init__(self, status_dir: Path, sinks: Sequence[str]) -> None:
        self.path = Path(status_dir) / METRICS_FILE
        self.registry = CollectorRegistry()
        self.stats: dict[str, SinkStats] = {sink: SinkStats() for sink in sinks}
        self.registry.register(_Totals(self.stats, time.time()))
        self.pending = Gauge("servesync_notifications_pending",
                             "Notifications in the outbox not yet delivered, by sink",
                             ["sink"], registry=self.registry)
        self.oldest = Gauge("servesync_notifications_oldest_pending_age_seconds",
                            "Age of the oldest notification waiting for a sink (0: none); "
                            "growing means the sink is not taking them",
                            ["sink"], registry=self.registry)
        self.disabled = Gauge("servesync_notifications_disabled",
                              "1 when the notification outbox cannot be opened: "
                              "notifications are off, reconciliation goes on",
                              registry=self.registry)
        self._lock = threading.Lock()

    def update(self, sink: str, pending: int, oldest_s: float) -> None:
        """The file, with ``sink``'s pending count and oldest age (and every total)."""
        with self._lock:
            self.pending.labels(sink).set(pending)
            self.oldest.labels(sink).set(oldest_s)
            self._write()

    def set_disabled(self, disabled: bool) -> None:
        with self._lock:
            self.disabled.set(1 if disabled else 0)
            self._write()

    def _write(self) -> None:
        try:
            write_registry(self.path, self.registry)
        except OSError as e:
            log.warning("cannot write %s: %s", self.path.name, type(e).__name__)


class _Totals(Collector):
    """``servesync_notifications_total{sink,outcome}`` read from the sinks' :class:`SinkStats`."""

    def __init__(self, stats: Mapping[str, SinkStats], created: float) -> None:
        self.stats, self.created = stats, created

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "servesync_notifications", "Webhook notification attempts by sink and outcome "
            "(delivered, failed and retried, refused, dropped)", labels=["sink", "outcome"])
        for sink, stats in sorted(list(self.stats.items()), key=lambda item: item[0]):
            for outcome in OUTCOMES:
                family.add_metric([sink, outcome], getattr(stats, outcome), created=self.created)
        yield family


@dataclass
class Notifier:
    """Queues transitions for the sinks models opt into, and delivers them."""

    config: Config
    outbox: Outbox
    sleep: Callable[[float], None] | None = None  # tests: a fake wait (default: the stop event)
    metrics: NotifyMetrics | None = None
    stats: dict[str, SinkStats] = field(default_factory=dict)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    _posts: dict[str, _Post] = field(default_factory=dict)  # the attempt in flight, per sink
    _started: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # config and threads

    def __post_init__(self) -> None:
        if self.metrics is not None:  # one count: the one the metrics file shows
            self.stats = self.metrics.stats
        for s in self.config.notifications:
            self.stats.setdefault(s.name, SinkStats())
        self._drop_unconfigured()

    def _drop_unconfigured(self) -> None:
        known = {s.name for s in self.config.notifications}
        gone: dict[str, list[str]] = {}
        for entry in self.outbox.pending():
            if entry.sink not in known:  # the operator removed (or renamed) the sink
                gone.setdefault(entry.sink, []).append(entry.id)
        for name, ids in gone.items():
            self.outbox.finish(ids, "dropped")
            log.warning("sink %s is no longer configured: %d pending notifications dropped",
                        name, len(ids))

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: the same outbox and threads; new sinks get a
        thread, a removed sink's thread ends and its queue is dropped (logged)."""
        with self._lock:
            self.config = config
            for s in config.notifications:
                self.stats.setdefault(s.name, SinkStats())
            if self._started:
                self._start_threads()
        try:
            self._drop_unconfigured()
        except OSError as e:  # tried again at the next reload or start
            log.error("cannot drop the notifications of removed sinks: %s",
                      e.strerror or type(e).__name__)
        with self._wake:
            self._wake.notify_all()

    def baseline(self, records: Mapping[str, ModelRecord]) -> None:
        """An outbox that never had marks (new, or from before them): the
        stored states become the marks, nothing is sent for them."""
        if not self.outbox.marked:
            self.outbox.add((), marks={key: str(r.state) for key, r in records.items()})

    def observe(self, records: Mapping[str, ModelRecord], tick: int,
                revision: str | None) -> None:
        """Queue what changed since the last notified state of each model (the
        marks), and move the marks, in one append (see the module doc)."""
        marks = self.outbox.marks()
        moved: list[Transition] = []
        delta: dict[str, str | None] = {}
        for key, r in records.items():
            old = marks.get(key)
            if old == str(r.state):
                continue
            delta[key] = str(r.state)
            moved.append(Transition(record=r, old=_state(old), tick=tick, revision=revision))
        delta.update((key, None) for key in marks if key not in records)
        if delta:
            self._queue(moved, delta)

    def enqueue(self, transitions: Sequence[Transition]) -> None:
        """Queue these transitions (and mark their states notified)."""
        self._queue(transitions, {t.record.model_key: str(t.record.state)
                                  for t in transitions})

    def _queue(self, transitions: Sequence[Transition],
               marks: Mapping[str, str | None]) -> None:
        config = self.config
        items = []
        for t in transitions:
            for name in t.record.spec.get("notify") or ():
                sink = config.sink(str(name))
                if sink is not None and sink.wants(str(t.record.state)) \
                        and sink.allows(t.record.user_id):
                    items.append((sink.name, payload(t, config.serving.replica_env.values())))
        entries = self.outbox.add(items, marks=marks)
        for entry in entries:
            log.info("notification %s queued for sink %s", entry.id, entry.sink)
        for name in sorted({e.sink for e in entries}):
            sink = config.sink(name)
            if sink is not None:
                self._cap(sink)
        if entries:
            with self._wake:
                self._wake.notify_all()

    def _cap(self, sink: NotificationSink) -> None:
        over = fair_drops(self.outbox.pending(sink.name), sink.max_pending)
        if not over:
            return
        self.outbox.finish([e.id for e in over], "dropped")
        log.warning("sink %s: %d oldest notifications dropped (more than max_pending %d "
                    "waiting)", sink.name, len(over), sink.max_pending)
        self._report(sink.name, Outcome.DROPPED, len(over))

    def start(self) -> None:
        """One delivery thread per sink (daemon threads; :meth:`stop` ends them)."""
        with self._lock:
            self._started = True
            for i, sink in enumerate(self.config.notifications):
                problem = _secret_problem(sink)
                if problem:  # its entries wait (retried with backoff) until the key is readable
                    log.error("/notifications/%d/secret_file of sink %s: %s; its notifications "
                              "are held until it can be read", i, sink.name, problem)
                self._report(sink.name, None)
            self._start_threads()

    def _start_threads(self) -> None:
        """Under ``_lock``: a thread for every configured sink without one."""
        for sink in self.config.notifications:
            if sink.name in self._threads:
                continue
            thread = threading.Thread(target=self._run, args=(sink.name,), daemon=True,
                                      name=f"servesync-notify-{sink.name}")
            self._threads[sink.name] = thread
            thread.start()

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads.values())

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the threads (a POST in flight is cut); what is not delivered
        stays in the outbox."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for post in list(self._posts.values()):
            post.abort()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, name: str) -> None:
        attempts = 0  # failed attempts at ``head`` in a row
        head: str | None = None
        while not self._stop.is_set():
            with self._lock:
                sink = self.config.sink(name)
                if sink is None:  # removed by a reload
                    self._threads.pop(name, None)
                    return
            try:
                entry = self.outbox.first(name)
                if entry is None:
                    with self._wake:
                        if not self._stop.is_set() and self.outbox.first(name) is None:
                            self._wake.wait(timeout=IDLE_WAIT_S)
                    continue
                if entry.id != head:
                    head, attempts = entry.id, 0
                if self._expired(sink, entry):
                    continue
                outcome = self.deliver(sink, entry)
                if outcome == Outcome.RETRY:
                    attempts += 1
                    if attempts >= sink.max_attempts:
                        self._drop(sink, entry, f"{attempts} failed attempts (max_attempts)")
                        continue
                else:
                    self.outbox.done(entry.id, outcome)
                self._report(name, "failed" if outcome == Outcome.RETRY else outcome)
                if outcome == Outcome.RETRY:
                    self._wait(backoff_s(attempts, sink.max_backoff_s))
            except Exception:  # an outbox write (disk full, EIO), a bug: never the thread's end
                attempts += 1
                log.exception("sink %s: notification delivery failed; will retry", name)
                self._wait(backoff_s(attempts, sink.max_backoff_s))

    def _expired(self, sink: NotificationSink, entry: Entry) -> bool:
        age = self.outbox.clock() - entry.at
        if age <= sink.max_age_s:
            return False
        self._drop(sink, entry, f"not delivered within max_age_s ({sink.max_age_s:g} s)")
        return True

    def _drop(self, sink: NotificationSink, entry: Entry, why: str) -> None:
        self.outbox.done(entry.id, "dropped")
        log.warning("sink %s: notification %s dropped: %s", sink.name, entry.id, why)
        self._report(sink.name, Outcome.DROPPED)

    def _report(self, sink: str, outcome: str | None, count: int = 1) -> None:
        """Count ``outcome`` (one of :data:`OUTCOMES`; None: nothing) in the
        sink's :class:`SinkStats`, the one count; then the counters, pending
        count and oldest age to metrics-notify.prom."""
        stats = self.stats.setdefault(sink, SinkStats())
        if outcome is not None:
            stats.count(outcome, count)
        if self.metrics is None:
            return
        first = self.outbox.first(sink)
        oldest = max(0.0, self.outbox.clock() - first.at) if first is not None else 0.0
        self.metrics.update(sink, self.outbox.count(sink), oldest)

    def _wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self._stop.wait(seconds)

    def deliver(self, sink: NotificationSink, entry: Entry) -> str:
        """One POST of ``entry`` within ``sink.timeout_s`` in all: DELIVERED
        (2xx), REFUSED (a 4xx but 408/429, or a permanent redirect 301/308),
        or RETRY (anything else: down, timeout, 5xx, another 3xx)."""
        body = entry.body.encode("utf-8", "backslashreplace")  # ASCII JSON: never lossy
        event = _event(entry.body)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Servesync-Delivery": entry.id, "X-Servesync-Event": event}
        if sink.secret_file:
            try:
                key = _secret(sink)
            except (OSError, ValueError) as e:  # never sent unsigned: held until readable
                log.warning("sink %s: notification %s held: secret_file %s; will retry",
                            sink.name, entry.id, _why(e))
                return Outcome.RETRY
            headers["X-Servesync-Signature"] = signature(key, body)
        previous = self._posts.get(sink.name)
        if previous is not None and previous.thread.is_alive():  # still resolving the name
            log.warning("sink %s: notification %s not sent: the previous attempt has not "
                        "ended yet; will retry", sink.name, entry.id)
            return Outcome.RETRY
        post = _Post(sink.url, body, headers, sink.timeout_s)
        self._posts[sink.name] = post
        try:
            code = post.run()
        except (PostTimeout, http.client.HTTPException, OSError, ValueError) as e:
            log.warning("sink %s: notification %s not delivered (%s); will retry",
                        sink.name, entry.id, "timed out" if isinstance(e, PostTimeout)
                        else type(e).__name__)
            return Outcome.RETRY
        if 200 <= code < 300:
            log.info("sink %s: notification %s delivered (%s, HTTP %d)", sink.name, entry.id,
                     event, code)
            return Outcome.DELIVERED
        if (400 <= code < 500 and code not in (408, 429)) or code in (301, 308):
            log.warning("sink %s: notification %s refused by the receiver (HTTP %d); "
                        "not retried", sink.name, entry.id, code)
            return Outcome.REFUSED
        log.warning("sink %s: notification %s not delivered (HTTP %d); will retry",
                    sink.name, entry.id, code)
        return Outcome.RETRY



class Notifications:
    """The notifier of one daemon, kept across config reloads: one outbox and
    one thread per sink for the state dir; a reload only reconfigures it. An
    outbox that cannot be opened turns notifications off (logged, metric
    ``servesync_notifications_disabled``) and is tried again at the next
    reload; reconciliation never waits for it."""

    def __init__(self) -> None:
        self._notifier: Notifier | None = None
        self._state_dir: str | None = None

    def get(self, config: Config, records: Callable[[], Mapping[str, ModelRecord]]
            ) -> Notifier | None:
        """The notifier for ``config`` (started), or None: no sinks, or the
        outbox cannot be used. ``records``: the stored records (the baseline)."""
        if self._notifier is not None and self._state_dir == config.state_dir:
            self._notifier.reconfigure(config)
            return self._notifier
        self.close()
        if not config.notifications:
            return None
        metrics = NotifyMetrics(Path(config.status_dir), [s.name for s in config.notifications])
        try:
            notifier = Notifier(config, Outbox(Path(config.state_dir)), metrics=metrics)
            notifier.baseline(records())
        except (OSError, ValueError) as e:
            log.error("notifications disabled: the outbox in the state dir cannot be used "
                      "(%s: %s); models are reconciled as usual, nothing is queued",
                      type(e).__name__, getattr(e, "strerror", None) or "")
            metrics.set_disabled(True)
            return None
        metrics.set_disabled(False)
        notifier.start()
        self._notifier, self._state_dir = notifier, config.state_dir
        return notifier

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.stop()
        self._notifier, self._state_dir = None, None


_TLS: list[ssl.SSLContext] = []


def _tls() -> ssl.SSLContext:
    """The system's default TLS client context, built once (certificate and
    host name checked)."""
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return _TLS[0]


def _state(value: str | None) -> State | None:
    if value is None:
        return None
    try:
        return State(value)
    except ValueError:
        return None


def _why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"cannot be read ({e.strerror or type(e).__name__})"
    return str(e)


def _secret_problem(sink: NotificationSink) -> str | None:
    """Why the sink's key cannot be used (unreadable, empty, not a file), or None."""
    if sink.secret_file is None:
        return None
    try:
        _secret(sink)
    except (OSError, ValueError) as e:
        return _why(e)
    return None


def _secret(sink: NotificationSink) -> bytes:
    """The sink's key, read now (a rotated file takes effect at the next POST).
    Only a regular file of at most :data:`MAX_SECRET_BYTES` (never a FIFO or
    a device: opened non-blocking, checked before reading); ValueError says
    why not, without its content."""
    assert sink.secret_file is not None
    fd = os.open(sink.secret_file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"is larger than {MAX_SECRET_BYTES} bytes")
    key = data.strip()
    if not key:
        raise ValueError("is empty")
    return key


def _event(body: str) -> str:
    """The state a body announces (its ``event``), for the header and the log."""
    try:
        return str(json.loads(body).get("event", ""))
    except (ValueError, AttributeError):
        return ""
