"""The daemon with notifications: run_daemon on the real wiring (Ray replaced by
the fake of tests/support/fakeray.py) and a real webhook receiver on 127.0.0.1.

A model goes DEPLOYING → RUNNING and another, whose deploy Ray refuses, is
FAILED in its first tick (a transition compares a model's state before and
after a tick: it was not recorded before): the receiver gets a signed POST for
each state entered, the FAILED one with the error; the outbox ends empty, and a restarted daemon
sends nothing again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servesync import wiring
from servesync.config import Config, NotificationSink, ServingConfig, SourceConfig
from servesync.converge.ports import Applier
from servesync.daemon.loop import run_daemon
from servesync.daemon.sdnotify import Notifier as SdNotifier
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError
from servesync.state.outbox import Outbox
from servesync.status.notifying import Notifications
from tests.support.fakeray import SettlingRay
from tests.support.waiting import wait_for
from tests.support.webhook import Receiver

SECRET = b"daemon-test-key"
MODEL = "model_id: {name}\nmodel_source: $HOME/common/hf/tiny\nnotify: [team-alerts]\n"


class RefusingRay(SettlingRay):
    """Ray refusing the deploy of any model called ``broken`` for good."""

    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None:
        if spec.suffix == "broken":
            raise PermanentError("the engine refused the spec: boom")
        super().deploy_model(spec, app_name=app_name, public_id=public_id)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _daemon(config: Config) -> tuple[threading.Event, threading.Thread]:
    """run_daemon wired as ``servesync run`` wires it (one Notifications)."""
    stop = threading.Event()
    hub = Notifications()

    def run() -> None:
        try:
            run_daemon(config, ticker_factory=lambda c: wiring.reconciler(
                c, lock=False, notifications=hub), notifier=SdNotifier(None), stop_event=stop)
        finally:
            hub.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread


def test_deploying_running_and_failed_reach_the_webhook(
        tmp_path: Path, storage_root: Path, desired_tree: Path, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ray = RefusingRay()

    def fake_applier(config: Config) -> Applier:
        return ray

    monkeypatch.setattr(wiring, "_applier", fake_applier)
    for name in ("good", "broken"):
        (desired_tree / "users" / "alice" / f"{name}.yaml").write_text(MODEL.format(name=name))
    (tmp_path / "hook.secret").write_bytes(SECRET)
    config = Config(
        source=SourceConfig(path=str(desired_tree)), state_dir=str(tmp_path / "state"),
        status_dir=str(tmp_path / "status"), storage_root=str(storage_root),
        serving=ServingConfig(accelerator_type="cpu"), tick_interval_s=3600,
        notifications=(NotificationSink(
            name="team-alerts", url=receiver.url, secret_file=str(tmp_path / "hook.secret"),
            events=("DEPLOYING", "RUNNING", "FAILED"), users=("alice",)),))

    def events() -> list[tuple[str, str]]:
        return sorted((b["model"]["model_id"], b["event"]) for b in receiver.bodies())

    want = [("broken", "FAILED"), ("good", "DEPLOYING"), ("good", "RUNNING")]
    stop, thread = _daemon(config)
    try:
        wait_for("three notifications", lambda: events() == want, deadline_s=30,
                 detail=events)
    finally:
        stop.set()
        thread.join(30)
    assert all(r.signed_with(SECRET) for r in receiver.received)
    by_event = {(b["model"]["model_id"], b["event"]): b for b in receiver.bodies()}
    failed = by_event[("broken", "FAILED")]
    assert failed["old_state"] is None and "boom" in failed["error_summary"]
    running = by_event[("good", "RUNNING")]
    assert running["old_state"] == "DEPLOYING" and running["model"]["user_id"] == "alice"
    assert Outbox(Path(config.state_dir)).pending() == []
    metrics = (tmp_path / "status" / "metrics-notify.prom").read_text()
    assert 'servesync_notifications_total{outcome="delivered",sink="team-alerts"} 3.0' \
        in metrics
    assert 'servesync_notifications_pending{sink="team-alerts"} 0.0' in metrics
    assert 'servesync_notifications_oldest_pending_age_seconds{sink="team-alerts"} 0.0' \
        in metrics
    assert "token" not in metrics and str(tmp_path) not in metrics

    seen = ray.observations
    stop, thread = _daemon(config)  # a restart: RUNNING and FAILED stay, nothing is sent
    try:
        wait_for("a tick of the restarted daemon", lambda: ray.observations > seen,
                 deadline_s=30)
        time.sleep(1.0)  # a notification of that tick would be delivered by now
    finally:
        stop.set()
        thread.join(30)
    assert events() == want
