"""Webhook notifications: a tick's state transitions → the outbox → HTTP POSTs.

The reconciler hands :meth:`Notifier.enqueue` each tick's transitions once
their records are stored; ``enqueue`` writes one fsynced outbox append
(:mod:`servesync.state.outbox`) and returns: delivery never blocks a tick.
One delivery thread per sink POSTs that sink's entries in order, each until
it is delivered: a sink that is down holds its own queue (retried with
exponential backoff, 1 s doubling up to the sink's ``max_backoff_s``) while
the other sinks keep going. At least once: an entry is marked done only
after a 2xx, so a crash between the POST and the mark sends it again, with
the same ``X-Servesync-Delivery`` id, which receivers deduplicate on.

What is sent (README, Notifications): a JSON body naming the model (public
id, model key, user, model id), its old and new state, the revision and the
error summary; headers ``X-Servesync-Delivery`` (the idempotency id),
``X-Servesync-Event`` (the state entered) and, with a ``secret_file``,
``X-Servesync-Signature: sha256=<hex HMAC-SHA256 of the body>``. Redirects
are not followed (the head node calls only the operator's address). A 4xx
other than 408 and 429 is the receiver refusing that body for good: logged,
marked ``refused``, and the queue moves on.

Secrets: the secret file's content and the sink's URL (which may hold a
token) are never logged; a sink is named by its name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from servesync.config import Config, NotificationSink
from servesync.converge.ports import Transition
from servesync.state.outbox import Entry, Outbox
from servesync.status.metrics import write_registry

log = logging.getLogger("servesync.notify")

BACKOFF_START_S = 1.0
METRICS_FILE = "metrics-notify.prom"
USER_AGENT = "servesync-notify/1"


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_s(attempts: int, max_backoff_s: float) -> float:
    """The wait after the ``attempts``-th failure in a row: 1, 2, 4, ... s, capped."""
    return float(min(max_backoff_s, BACKOFF_START_S * 2 ** max(attempts - 1, 0)))


def payload(t: Transition) -> dict[str, Any]:
    """The JSON body of one transition (the outbox adds its ``id``)."""
    r = t.record
    return {
        "event": str(r.state),
        "model": {"public_id": r.public_id, "model_key": r.model_key, "user_id": r.user_id,
                  "model_id": r.suffix, "source_file": r.source_file},
        "old_state": None if t.old is None else str(t.old),
        "new_state": str(r.state),
        "revision": r.attempted_revision or t.revision,
        "error_summary": r.error_summary,
        "at": r.updated_at,
        "tick": t.tick,
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is then an HTTPError: not followed


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(slots=True)
class SinkStats:
    """Counters of one sink since start (for ``metrics.prom``)."""

    delivered: int = 0
    failed: int = 0  # attempts that failed (each retried)
    refused: int = 0  # entries the receiver refused for good (4xx)


class Outcome:
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


class NotifyMetrics:
    """``metrics-notify.prom`` in the status dir (node_exporter's textfile
    collector reads it beside ``metrics.prom``): per sink,
    ``servesync_notifications_total{sink,outcome}`` (delivered, failed: an
    attempt that will be retried, refused) and
    ``servesync_notifications_pending{sink}``. Rewritten after every attempt."""

    def __init__(self, status_dir: Path, sinks: Sequence[str]) -> None:
        self.path = Path(status_dir) / METRICS_FILE
        self.registry = CollectorRegistry()
        self.total = Counter("servesync_notifications", "Webhook notification attempts by "
                             "sink and outcome (delivered, failed and retried, refused)",
                             ["sink", "outcome"], registry=self.registry)
        self.pending = Gauge("servesync_notifications_pending",
                             "Notifications in the outbox not yet delivered, by sink",
                             ["sink"], registry=self.registry)
        for sink in sinks:
            for outcome in ("delivered", "failed", "refused"):
                self.total.labels(sink, outcome)
        self._lock = threading.Lock()

    def update(self, sink: str, outcome: str | None, pending: int) -> None:
        with self._lock:
            if outcome is not None:
                self.total.labels(sink, outcome).inc()
            self.pending.labels(sink).set(pending)
            try:
                write_registry(self.path, self.registry)
            except OSError as e:
                log.warning("cannot write %s: %s", self.path.name, type(e).__name__)


@dataclass
class Notifier:
    """Queues transitions for the sinks models opt into, and delivers them."""

    config: Config
    outbox: Outbox
    sleep: Callable[[float], None] | None = None  # tests: a fake wait (default: the stop event)
    metrics: NotifyMetrics | None = None
    stats: dict[str, SinkStats] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.stats = {s.name: SinkStats() for s in self.config.notifications}
        known = {s.name for s in self.config.notifications}
        for entry in self.outbox.pending():
            if entry.sink not in known:  # the operator removed the sink
                log.warning("notification %s dropped: sink %s is no longer configured",
                            entry.id, entry.sink)
                self.outbox.done(entry.id, "dropped")

    def enqueue(self, transitions: Sequence[Transition]) -> None:
        """One outbox append for every (transition, sink) the model opted into
        and the sink's ``events`` select; wakes the delivery threads."""
        items = []
        for t in transitions:
            names = t.record.spec.get("notify") or ()
            for name in names:
                sink = self.config.sink(str(name))
                if sink is not None and sink.wants(str(t.record.state)):
                    items.append((sink.name, payload(t)))
        if not items:
            return
        for entry in self.outbox.add(items):
            log.info("notification %s queued for sink %s", entry.id, entry.sink)
        with self._wake:
            self._wake.notify_all()

    def start(self) -> None:
        """One delivery thread per sink (daemon threads; :meth:`stop` ends them)."""
        for i, sink in enumerate(self.config.notifications):
            problem = _secret_problem(sink)
            if problem:  # its entries wait (retried with backoff) until the key is readable
                log.error("/notifications/%d/secret_file of sink %s: %s; its notifications "
                          "are held until it can be read", i, sink.name, problem)
            if self.metrics is not None:
                self.metrics.update(sink.name, None, len(self.outbox.pending(sink.name)))
            thread = threading.Thread(target=self._run, args=(sink,), daemon=True,
                                      name=f"servesync-notify-{sink.name}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the threads; what is not delivered stays in the outbox."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _run(self, sink: NotificationSink) -> None:
        attempts = 0
        while not self._stop.is_set():
            entry = self.outbox.first(sink.name)
            if entry is None:
                with self._wake:
                    if self.outbox.first(sink.name) is None and not self._stop.is_set():
                        self._wake.wait(timeout=5.0)
                continue
            try:
                outcome = self.deliver(sink, entry)
            except Exception:
                log.exception("sink %s: delivery of %s failed", sink.name, entry.id)
                outcome = Outcome.RETRY
            if outcome != Outcome.RETRY:
                self.outbox.done(entry.id, outcome)
            if self.metrics is not None:
                self.metrics.update(sink.name, "failed" if outcome == Outcome.RETRY else outcome,
                                    len(self.outbox.pending(sink.name)))
            if outcome == Outcome.RETRY:
                attempts += 1
                self._wait(backoff_s(attempts, sink.max_backoff_s))
                continue
            attempts = 0

    def _wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self._stop.wait(seconds)

    def deliver(self, sink: NotificationSink, entry: Entry) -> str:
        """One POST of ``entry``: DELIVERED (2xx), REFUSED (a 4xx but 408/429),
        or RETRY (anything else: down, timeout, 5xx, a redirect)."""
        body = entry.body.encode()
        event = _event(entry.body)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Servesync-Delivery": entry.id, "X-Servesync-Event": event}
        stats = self.stats.setdefault(sink.name, SinkStats())
        if sink.secret_file:
            problem = _secret_problem(sink)
            if problem:  # never sent unsigned: held until the key can be read
                stats.failed += 1
                log.warning("sink %s: notification %s held: secret_file %s; will retry",
                            sink.name, entry.id, problem)
                return Outcome.RETRY
            headers["X-Servesync-Signature"] = signature(_secret(sink), body)
        request = urllib.request.Request(sink.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=sink.timeout_s) as response:
                response.read(65536)
                code = int(response.status)
        except urllib.error.HTTPError as e:
            code = int(e.code)
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as e:
            stats.failed += 1
            reason = getattr(e, "reason", None)
            log.warning("sink %s: notification %s not delivered (%s%s); will retry",
                        sink.name, entry.id, type(e).__name__,
                        f": {type(reason).__name__}" if reason is not None else "")
            return Outcome.RETRY
        if 200 <= code < 300:
            stats.delivered += 1
            log.info("sink %s: notification %s delivered (%s, HTTP %d)", sink.name, entry.id,
                     event, code)
            return Outcome.DELIVERED
        if 400 <= code < 500 and code not in (408, 429):
            stats.refused += 1
            log.warning("sink %s: notification %s refused by the receiver (HTTP %d); "
                        "not retried", sink.name, entry.id, code)
            return Outcome.REFUSED
        stats.failed += 1
        log.warning("sink %s: notification %s not delivered (HTTP %d); will retry",
                    sink.name, entry.id, code)
        return Outcome.RETRY


def _secret_problem(sink: NotificationSink) -> str | None:
    """Why the sink's key cannot be used (unreadable, empty), or None."""
    if sink.secret_file is None:
        return None
    try:
        return None if _secret(sink) else "is empty"
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"


def _secret(sink: NotificationSink) -> bytes:
    """The sink's key, read now (a rotated file takes effect at the next POST)."""
    assert sink.secret_file is not None
    return Path(sink.secret_file).read_bytes().strip()


def _event(body: str) -> str:
    """The state a body announces (its ``event``), for the header and the log."""
    try:
        return str(json.loads(body).get("event", ""))
    except (ValueError, AttributeError):
        return ""
