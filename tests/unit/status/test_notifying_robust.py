"""The notifier's hardening (the pre-merge review of the notify branch), each
against a real loopback receiver or the real outbox file:

* one notifier, one outbox and one thread per sink across config reloads;
* a total deadline per POST: a receiver trickling its answer cannot hold a
  thread; the thread is cut and retries;
* transitions derived from the per-model marks: a tick that died between the
  store write and the queueing is made up for; a first start over existing
  records sends nothing (no flood);
* an outbox error never ends a delivery thread, a failed append is cut back,
  an outbox that cannot be opened turns notifications off, not the daemon;
* the bounds: max_pending, max_age_s, max_attempts drop (counted, logged by
  sink name); a sink's users allow-list holds at queueing time too;
* a body with a lone surrogate is delivered; a FIFO secret_file is refused.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from servesync.config import Config, NotificationSink
from servesync.converge.records import ModelRecord, State
from servesync.state import outbox as outbox_mod
from servesync.state.outbox import OUTBOX_FILE, Outbox
from servesync.status.notifying import Notifications, Notifier, NotifyMetrics, Outcome
from tests.support.waiting import wait_for
from tests.support.webhook import Receiver
from tests.unit.converge.plancases import record, spec


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def sink(url: str, name: str = "team-alerts", **kw: object) -> NotificationSink:
    base: dict[str, object] = dict(
        name=name, url=url, events=("QUEUED", "DEPLOYING", "RUNNING", "FAILED"),
        timeout_s=1.0, max_backoff_s=1.0, users=("*",))
    base.update(kw)
    return NotificationSink(**base)  # type: ignore[arg-type]


def rec(suffix: str, state: State, notify: tuple[str, ...] = ("team-alerts",),
        user: str = "alice") -> ModelRecord:
    return record(spec(suffix, user=user, notify=notify), state)


def records(*recs: ModelRecord) -> dict[str, ModelRecord]:
    return {r.model_key: r for r in recs}


def config(tmp_path: Path, *sinks: NotificationSink) -> Config:
    return Config(state_dir=str(tmp_path / "state"), status_dir=str(tmp_path / "status"),
                  notifications=sinks)


def test_a_reload_reuses_the_notifier_its_outbox_and_its_threads(
        tmp_path: Path, receiver: Receiver) -> None:
    (tmp_path / "status").mkdir()
    (tmp_path / "state").mkdir()
    hub = Notifications()
    try:
        first = hub.get(config(tmp_path, sink(receiver.url)), dict)
        assert first is not None
        for _ in range(3):  # three SIGHUPs, the third adds a sink
            again = hub.get(config(tmp_path, sink(receiver.url, timeout_s=2.0),
                                   sink(receiver.url, name="ops")), dict)
            assert again is first
        assert first.config.sink("team-alerts").timeout_s == 2.0  # type: ignore[union-attr]
        names = sorted(t.name for t in threading.enumerate()
                       if t.name.startswith("servesync-notify-"))
        assert names == ["servesync-notify-ops", "servesync-notify-team-alerts"]
        hub.get(config(tmp_path, sink(receiver.url)), dict)  # ops removed
        wait_for("the ops thread ends", lambda: all(
            t.name != "servesync-notify-ops" for t in threading.enumerate()), deadline_s=10)
        first.observe(records(rec("a", State.RUNNING)), 1, "r1")
        wait_for("delivered", lambda: len(receiver.received) == 1, deadline_s=10)
        time.sleep(1.0)
        assert len(receiver.received) == 1  # one thread: one POST per id
    finally:
        hub.close()
    assert not any(t.name.startswith("servesync-notify-") and t.is_alive()
                   for t in threading.enumerate())


class Trickler:
    """A receiver that answers one byte every 0.2 s, for ever."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                for ch in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000:
                    if self.stop.is_set():
                        return
                    conn.sendall(bytes([ch]))
                    time.sleep(0.2)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def test_a_trickling_receiver_cannot_hold_a_post_past_its_deadline(tmp_path: Path) -> None:
    slow = Trickler()
    try:
        notifier = Notifier(Config(notifications=(sink(slow.url, timeout_s=1.0),)),
                            Outbox(tmp_path))
        (entry,) = notifier.outbox.add([("team-alerts", {"event": "RUNNING"})])
        started = time.monotonic()
        outcome = notifier.deliver(notifier.config.notifications[0], entry)
        took = time.monotonic() - started
    finally:
        slow.close()
    assert outcome == Outcome.RETRY
    assert took < 2.0  # the per-read timeout alone would wait for ever


def test_a_transition_lost_by_a_crash_mid_tick_is_queued_at_the_next_tick(
        tmp_path: Path) -> None:
    cfg = Config(notifications=(sink("http://127.0.0.1:9/x"),))
    notifier = Notifier(cfg, Outbox(tmp_path))
    notifier.baseline(records(rec("a", State.DEPLOYING)))
    assert notifier.outbox.pending() == []  # the baseline sends nothing
    # the store then recorded RUNNING and the daemon died before queueing:
    restarted = Notifier(cfg, Outbox(tmp_path))
    restarted.baseline(records(rec("a", State.RUNNING)))  # marks exist: no new baseline
    restarted.observe(records(rec("a", State.RUNNING)), 7, "r7")
    (entry,) = Outbox(tmp_path).pending()
    assert '"old_state":"DEPLOYING"' in entry.body and '"event":"RUNNING"' in entry.body
    restarted.observe(records(rec("a", State.RUNNING)), 8, "r7")  # nothing new
    assert len(Outbox(tmp_path).pending()) == 1


def test_a_first_start_over_existing_records_sends_nothing_new_ones_are_told(
        tmp_path: Path) -> None:
    notifier = Notifier(Config(notifications=(sink("http://127.0.0.1:9/x"),)),
                        Outbox(tmp_path))
    old = [rec(f"m{i}", State.FAILED) for i in range(5)]
    notifier.baseline(records(*old))
    notifier.observe(records(*old, rec("new", State.DEPLOYING)), 1, "r1")
    (entry,) = notifier.outbox.pending()
    assert '"model_id":"new"' in entry.body and '"old_state":null' in entry.body
    notifier.observe(records(rec("new", State.DEPLOYING)), 2, "r1")  # the five deleted
    assert set(Outbox(tmp_path).marks()) == {rec("new", State.DEPLOYING).model_key}


def test_the_users_allow_list_holds_when_queueing(tmp_path: Path) -> None:
    notifier = Notifier(Config(notifications=(sink("http://127.0.0.1:9/x", users=("bob",)),)),
                        Outbox(tmp_path))
    notifier.baseline({})
    notifier.observe(records(rec("a", State.RUNNING), rec("b", State.RUNNING, user="bob")),
                     1, "r1")
    assert ['"user_id":"bob"' in e.body for e in notifier.outbox.pending()] == [True]


def test_an_outbox_error_never_ends_the_delivery_thread(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Outbox(tmp_path)
    failures = iter([OSError(28, "No space left on device")])
    real_done = box.done

    def flaky_done(entry_id: str, how: str = "delivered") -> None:
        for e in failures:
            raise e
        real_done(entry_id, how)

    monkeypatch.setattr(box, "done", flaky_done)
    notifier = Notifier(Config(notifications=(sink(receiver.url),)), box)
    notifier.start()
    try:
        box.add([("team-alerts", {"event": "RUNNING"})])
        with notifier._wake:
            notifier._wake.notify_all()
        wait_for("delivered and marked done", lambda: not Outbox(tmp_path).pending(),
                 deadline_s=15)
        assert all(t.is_alive() for t in notifier.threads())
    finally:
        notifier.stop()
    assert len(receiver.received) == 2  # the first POST was not marked: sent again, same id
    assert receiver.received[0].delivery == receiver.received[1].delivery


def test_a_failed_append_is_cut_back_and_memory_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Outbox(tmp_path)
    (kept,) = box.add([("s", {"n": 1})])
    size = (tmp_path / OUTBOX_FILE).stat().st_size

    def no_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(outbox_mod.os, "fsync", no_fsync)
    with pytest.raises(OSError):
        box.add([("s", {"n": 2})])
    monkeypatch.undo()
    assert (tmp_path / OUTBOX_FILE).stat().st_size == size  # no fragment left
    assert [e.id for e in box.pending()] == [kept.id]
    (new,) = box.add([("s", {"n": 3})])
    assert [e.id for e in Outbox(tmp_path).pending()] == [kept.id, new.id]


def test_an_outbox_that_cannot_be_opened_turns_notifications_off_not_the_daemon(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "status").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / OUTBOX_FILE).mkdir()  # read_bytes: IsADirectoryError
    hub = Notifications()
    caplog.set_level(logging.ERROR, logger="servesync")
    assert hub.get(config(tmp_path, sink("http://127.0.0.1:9/x")), dict) is None
    assert "notifications disabled" in caplog.text
    metrics = (tmp_path / "status" / "metrics-notify.prom").read_text()
    assert "servesync_notifications_disabled 1.0" in metrics


def test_more_than_max_pending_drops_the_oldest_counted(tmp_path: Path) -> None:
    notifier = Notifier(Config(notifications=(sink("http://127.0.0.1:9/x", max_pending=3),)),
                        Outbox(tmp_path))
    notifier.baseline({})
    for i in range(5):
        notifier.observe(records(rec("a", State.RUNNING if i % 2 else State.FAILED)), i, "r")
    ticks = [e.body.split('"tick":')[1].split("}")[0] for e in Outbox(tmp_path).pending()]
    assert ticks == ["2", "3", "4"] and notifier.stats["team-alerts"].dropped == 2


def test_an_entry_older_than_max_age_is_dropped_not_sent(
        tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    box = Outbox(tmp_path, clock=lambda: now[0])
    notifier = Notifier(Config(notifications=(sink(receiver.url, max_age_s=60),)), box)
    box.add([("team-alerts", {"event": "FAILED"})])
    now[0] += 61
    (young,) = box.add([("team-alerts", {"event": "RUNNING"})])
    caplog.set_level(logging.WARNING, logger="servesync")
    notifier.start()
    try:
        wait_for("queue empty", lambda: not box.pending(), deadline_s=10)
    finally:
        notifier.stop()
    assert [r.delivery for r in receiver.received] == [young.id]
    assert notifier.stats["team-alerts"].dropped == 1
    assert "sink team-alerts: notification" in caplog.text and "max_age_s" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_an_entry_failing_max_attempts_is_dropped_and_counted_once(
        tmp_path: Path, receiver: Receiver) -> None:
    """The queue moves on past it; SinkStats is the one count: the metrics
    file's totals are read from it, so they agree (the last failed attempt is
    not retried: a drop, not a failure)."""
    receiver.status = 503
    (tmp_path / "status").mkdir()
    metrics = NotifyMetrics(tmp_path / "status", ["team-alerts"])
    notifier = Notifier(Config(notifications=(sink(receiver.url, max_attempts=2),)),
                        Outbox(tmp_path), sleep=lambda s: None, metrics=metrics)
    assert notifier.stats is metrics.stats
    notifier.outbox.add([("team-alerts", {"event": "FAILED"})])
    notifier.start()
    try:
        wait_for("dropped", lambda: not notifier.outbox.pending(), deadline_s=10)
    finally:
        notifier.stop()
    assert len(receiver.received) == 2
    stats = notifier.stats["team-alerts"]
    assert (stats.delivered, stats.failed, stats.refused, stats.dropped) == (0, 1, 0, 1)
    text = (tmp_path / "status" / "metrics-notify.prom").read_text()
    for outcome, n in (("delivered", 0), ("failed", 1), ("refused", 0), ("dropped", 1)):
        assert f'servesync_notifications_total{{outcome="{outcome}",sink="team-alerts"}} ' \
               f"{n}.0" in text, outcome


def test_a_lone_surrogate_in_a_field_is_delivered(tmp_path: Path, receiver: Receiver) -> None:
    bad = replace(rec("a", State.RUNNING), source_file="users/alice/\udcff.yaml")
    notifier = Notifier(Config(notifications=(sink(receiver.url),)), Outbox(tmp_path))
    notifier.baseline({})
    notifier.observe(records(bad), 1, "r1")
    (entry,) = notifier.outbox.pending()
    assert notifier.deliver(notifier.config.notifications[0], entry) == Outcome.DELIVERED
    assert receiver.bodies()[0]["model"]["source_file"] == "users/alice/\udcff.yaml"


def test_a_fifo_or_oversized_secret_file_is_refused_not_read(
        tmp_path: Path, receiver: Receiver) -> None:
    fifo = tmp_path / "fifo.secret"
    os.mkfifo(fifo)  # reading it would block for ever
    big = tmp_path / "big.secret"
    big.write_bytes(b"k" * 5000)
    for path in (fifo, big):
        notifier = Notifier(Config(notifications=(sink(receiver.url, secret_file=str(path)),)),
                            Outbox(tmp_path))
        (entry,) = notifier.outbox.add([("team-alerts", {"event": "RUNNING"})])
        assert notifier.deliver(notifier.config.notifications[0], entry) == Outcome.RETRY
        notifier.outbox.done(entry.id)
    assert receiver.received == []


def test_over_max_pending_the_user_with_most_waiting_loses_its_oldest_first() -> None:
    """A tenant flooding a shared sink during an outage pushes out its own
    notifications, never another tenant's."""
    from servesync.state.outbox import Entry
    from servesync.status.notifying import fair_drops

    def entry(n: int, user: str) -> Entry:
        body = json.dumps({"model": {"user_id": user}, "n": n})
        return Entry(id=f"e{n}", sink="shared", body=body, at=float(n))

    queue = [entry(0, "bob"), *(entry(n, "mallory") for n in range(1, 9)), entry(9, "bob")]
    dropped = fair_drops(queue, keep=4)
    assert [e.id for e in dropped] == ["e1", "e2", "e3", "e4", "e5", "e6"]  # mallory's oldest
    assert fair_drops(queue, keep=10) == []
    even = [entry(0, "a"), entry(1, "b"), entry(2, "a"), entry(3, "b")]
    assert sorted(e.id for e in fair_drops(even, keep=2)) == ["e0", "e1"]  # oldest of each


def test_two_threads_counting_into_one_sink_lose_no_count() -> None:
    """The tick thread (over max_pending) and the delivery thread (too old, too
    many attempts) both count ``dropped``: no increment may be lost."""
    import sys
    import threading

    from servesync.status.notifying import SinkStats

    stats = SinkStats()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        def drop() -> None:
            for _ in range(50_000):
                stats.count("dropped")

        threads = [threading.Thread(target=drop) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert stats.dropped == 100_000
