"""Webhook notifications against a real HTTP receiver on 127.0.0.1.

Transitions → outbox entries (only the sinks a model names, only the events
a sink selects); the signature; the backoff; delivery in order, exactly one
POST per id, through an outage of the receiver (``SERVESYNC_NOTIFY_OUTAGE_S``,
3 s here; ``benchmarks/bench_notify_outage.py`` runs the issue's 30 s); a
restart with pending entries; a sink that is down does not hold another; a
4xx is not retried; the URL's token and the secret never reach the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from servesync.config import Config, NotificationSink, ServingConfig
from servesync.converge.ports import Transition
from servesync.converge.records import State
from servesync.state.outbox import Outbox
from servesync.status.notifying import Notifier, backoff_s, signature
from tests.support.waiting import wait_for
from tests.support.webhook import Receiver, free_port
from tests.unit.converge.plancases import record, spec

OUTAGE_S = float(os.environ.get("SERVESYNC_NOTIFY_OUTAGE_S", "3"))
SECRET = b"hmac-key-never-logged"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


def sink(url: str, secret_file: Path | None = None, name: str = "team-alerts",
         events: tuple[str, ...] = ("QUEUED", "DEPLOYING", "RUNNING", "DEGRADED", "FAILED"),
         ) -> NotificationSink:
    return NotificationSink(name=name, url=url, events=events,
                            secret_file=str(secret_file) if secret_file else None,
                            timeout_s=2.0, max_backoff_s=1.0, users=("*",))


def moved(suffix: str, old: State | None, new: State, notify: tuple[str, ...] = ("team-alerts",),
          error: str | None = None, tick: int = 1) -> Transition:
    rec = replace(record(spec(suffix, notify=notify), new), error_summary=error)
    return Transition(record=rec, old=old, tick=tick, revision="rev1")


def test_signature_is_the_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    assert signature(b"k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    assert [backoff_s(n, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_transitions_become_entries_for_the_named_sinks_and_selected_events(
        tmp_path: Path) -> None:
    config = Config(notifications=(
        sink("http://127.0.0.1:9/a", name="all"),
        sink("http://127.0.0.1:9/b", name="failures", events=("FAILED",))))
    box = Outbox(tmp_path)
    notifier = Notifier(config, box)
    notifier.enqueue([
        moved("a", None, State.QUEUED, notify=("all", "failures")),
        moved("b", State.DEPLOYING, State.FAILED, notify=("failures",), error="boom"),
        moved("c", State.DEPLOYING, State.RUNNING, notify=()),  # opted into nothing
    ])
    got = [(e.sink, json.loads(e.body)) for e in box.pending()]
    assert [(s, b["model"]["model_id"], b["event"]) for s, b in got] == [
        ("all", "a", "QUEUED"), ("failures", "b", "FAILED")]
    failed = got[1][1]
    assert failed["old_state"] == "DEPLOYING" and failed["new_state"] == "FAILED"
    assert failed["error_summary"] == "boom" and failed["revision"] == "rev0"
    assert failed["model"]["user_id"] == "alice"
    assert failed["model"]["public_id"].startswith("alice-") and failed["id"]


def test_a_bodys_error_summary_quotes_no_env_value_operator_secret_or_url_credential(
        tmp_path: Path) -> None:
    """Ray's message enters records scrubbed; payload() scrubs again (review 2, finding 3)."""
    config = Config(notifications=(sink("http://127.0.0.1:9/a"),),
                    serving=ServingConfig(replica_env={"K": "operator-value-99"}))
    quoted = ("DEPLOY_FAILED: pydantic: input_value={'OTHER': 'plain-value', 'K': "
              "'operator-value-99', 'HF_TOKEN': 'hf_verysecretvalue123', "
              "'DB': 'postgres://u:pw@h/db'}")
    t = moved("b", State.DEPLOYING, State.FAILED, error=quoted)
    t = replace(t, record=replace(t.record, spec={**t.record.spec, "env": {
        "OTHER": "plain-value", "HF_TOKEN": "hf_verysecretvalue123"}}))
    box = Outbox(tmp_path)
    Notifier(config, box).enqueue([t])
    (entry,) = box.pending()
    assert json.loads(entry.body)["error_summary"] == (
        "DEPLOY_FAILED: pydantic: input_value={'OTHER': '<redacted>', 'K': '<redacted>', "
        "'HF_TOKEN': '<redacted>', 'DB': 'postgres://***@h/db'}")


def test_delivered_in_order_signed_once_each(receiver: Receiver, secret_file: Path,
                                             tmp_path: Path) -> None:
    notifier = Notifier(Config(notifications=(sink(receiver.url, secret_file),)),
                        Outbox(tmp_path))
    notifier.start()
    try:
        notifier.enqueue([moved("a", None, State.QUEUED), moved("a", State.QUEUED,
                                                                State.DEPLOYING)])
        notifier.enqueue([moved("a", State.DEPLOYING, State.RUNNING)])
        wait_for("3 deliveries", lambda: not Outbox(tmp_path).pending(), deadline_s=10)
    finally:
        notifier.stop()
    assert [b["event"] for b in receiver.bodies()] == ["QUEUED", "DEPLOYING", "RUNNING"]
    assert all(r.signed_with(SECRET) for r in receiver.received)
    assert all(r.delivery == r.json["id"] for r in receiver.received)
    assert receiver.received[0].headers["X-Servesync-Event"] == "QUEUED"
    assert notifier.stats["team-alerts"].delivered == 3


def test_a_receiver_down_for_a_while_gets_everything_after_in_order_once_per_id(
        tmp_path: Path, secret_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()  # not started: down
    notifier = Notifier(Config(notifications=(sink(receiver.url, secret_file),)),
                        Outbox(tmp_path))
    caplog.set_level(logging.DEBUG, logger="servesync")
    notifier.start()
    try:
        sent = []
        started = time.monotonic()
        for i in range(10):  # queued while the receiver is down, a tick apart
            t = moved(f"m{i % 3}", State.DEPLOYING, State.RUNNING if i % 2 else State.FAILED,
                      tick=i)
            notifier.enqueue([t])
            sent.append((t.record.suffix, str(t.record.state), i))
            time.sleep(min(OUTAGE_S / 10, 0.5))
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
        assert notifier.stats["team-alerts"].failed >= 2  # it did try, and back off
        receiver.start()
        wait_for("all delivered", lambda: not Outbox(tmp_path).pending(),
                 deadline_s=15)
        time.sleep(1.5)  # any duplicate would come now
    finally:
        notifier.stop()
        receiver.stop()
    got = [(b["model"]["model_id"], b["event"], b["tick"]) for b in receiver.bodies()]
    assert got == sent
    ids = [r.delivery for r in receiver.received]
    assert len(set(ids)) == len(ids) == 10
    assert all(r.signed_with(SECRET) for r in receiver.received)
    logged = caplog.text
    assert "s3cr3t-t0ken" not in logged and SECRET.decode() not in logged
    assert "team-alerts" in logged


def test_a_restart_with_pending_entries_delivers_each_once(
        receiver: Receiver, tmp_path: Path) -> None:
    config = Config(notifications=(sink(receiver.url),))
    first = Notifier(config, Outbox(tmp_path))  # never started: the daemon died first
    first.enqueue([moved("a", None, State.QUEUED), moved("b", State.DEPLOYING, State.FAILED)])
    pending = [e.id for e in Outbox(tmp_path).pending()]
    second = Notifier(config, Outbox(tmp_path))
    second.start()
    try:
        wait_for("delivered", lambda: len(receiver.received) == 2, deadline_s=10)
    finally:
        second.stop()
    third = Notifier(config, Outbox(tmp_path))  # a further restart sends nothing again
    third.start()
    time.sleep(1.0)
    third.stop()
    assert [r.delivery for r in receiver.received] == pending


def test_a_sink_that_is_down_holds_only_its_own_queue(receiver: Receiver,
                                                      tmp_path: Path) -> None:
    dead = sink(f"http://127.0.0.1:{free_port()}/hook", name="dead")
    config = Config(notifications=(dead, sink(receiver.url)))
    notifier = Notifier(config, Outbox(tmp_path))
    notifier.start()
    try:
        notifier.enqueue([moved("a", None, State.QUEUED, notify=("dead", "team-alerts"))])
        wait_for("the live sink got it", lambda: len(receiver.received) == 1, deadline_s=10)
    finally:
        notifier.stop()
    assert [e.sink for e in Outbox(tmp_path).pending()] == ["dead"]


def test_a_4xx_is_refused_for_good_and_the_queue_moves_on(receiver: Receiver,
                                                           tmp_path: Path) -> None:
    receiver.status = 400
    notifier = Notifier(Config(notifications=(sink(receiver.url),)), Outbox(tmp_path))
    notifier.start()
    try:
        notifier.enqueue([moved("a", None, State.QUEUED), moved("b", None, State.QUEUED)])
        wait_for("both tried", lambda: not Outbox(tmp_path).pending(), deadline_s=10)
    finally:
        notifier.stop()
    assert len(receiver.received) == 2 and notifier.stats["team-alerts"].refused == 2


def test_a_5xx_is_retried_with_the_same_id_and_body(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status = 503
    notifier = Notifier(Config(notifications=(sink(receiver.url),)), Outbox(tmp_path))
    notifier.start()
    try:
        notifier.enqueue([moved("a", None, State.QUEUED)])
        wait_for("two attempts", lambda: len(receiver.received) >= 2, deadline_s=10)
        receiver.status = 200
        wait_for("delivered", lambda: not Outbox(tmp_path).pending(), deadline_s=10)
    finally:
        notifier.stop()
    assert len({(r.delivery, r.body) for r in receiver.received}) == 1


def test_entries_of_a_sink_no_longer_configured_are_dropped(tmp_path: Path) -> None:
    Notifier(Config(notifications=(sink("http://127.0.0.1:9/x", name="old"),)),
             Outbox(tmp_path)).enqueue([moved("a", None, State.QUEUED, notify=("old",))])
    Notifier(Config(), Outbox(tmp_path))
    assert Outbox(tmp_path).pending() == []


def test_an_unreadable_secret_holds_the_queue_and_nothing_goes_unsigned(
        receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "not-yet.secret"
    notifier = Notifier(Config(notifications=(sink(receiver.url, missing),)), Outbox(tmp_path))
    caplog.set_level(logging.INFO, logger="servesync")
    notifier.start()
    try:
        notifier.enqueue([moved("a", None, State.QUEUED)])
        wait_for("a held attempt", lambda: notifier.stats["team-alerts"].failed >= 1,
                 deadline_s=10)
        assert receiver.received == []
        missing.write_bytes(SECRET)
        wait_for("delivered once the key is there", lambda: len(receiver.received) == 1,
                 deadline_s=10)
    finally:
        notifier.stop()
    assert receiver.received[0].signed_with(SECRET)
    assert "/notifications/0/secret_file of sink team-alerts" in caplog.text
