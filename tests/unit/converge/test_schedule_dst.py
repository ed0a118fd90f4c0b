"""The planner's scheduled stops and starts on the day clocks spring forward
(America/New_York, 2026-03-08: 01:59:59 EST -> 03:00:00 EDT, 07:00 UTC):
the status file's ``next_start_at``/``next_stop_at``, the requeue the daemon
waits for, and the plan at that instant agree, to the second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from servesync.converge import scheduling
from servesync.converge.actions import Deploy, Kind, RecordOnly
from servesync.converge.planning import requeue_after
from servesync.converge.records import State
from servesync.desired.schedules import ActiveHours, Schedule
from tests.unit.converge.plancases import observed, record, spec
from tests.unit.converge.test_schedule_planning import run, running, up

NY = "America/New_York"
JUMP = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant after 01:59:59 EST
SECOND = timedelta(seconds=1)


def test_a_window_opening_in_the_skipped_hour_is_started_when_the_status_said() -> None:
    s = spec("a", schedule=Schedule(active_hours=ActiveHours("02:30", "09:00", NY)))
    stopped = record(s, State.STOPPED, schedule_stop="active_hours")
    now = JUMP - timedelta(minutes=10)  # 01:50 EST
    assert scheduling.next_start_at(stopped, now) == JUMP  # not 03:30 EDT
    assert requeue_after({stopped.model_key: stopped}, now=now, in_flight=False) == 600
    assert run(s, stopped, observed(), JUMP - SECOND, in_gateway=False) == ()
    (deploy,) = run(s, stopped, observed(), JUMP, in_gateway=False)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.START


def test_a_window_closing_in_the_skipped_hour_is_stopped_when_the_status_said() -> None:
    s = spec("a", schedule=Schedule(active_hours=ActiveHours("22:00", "02:30", NY)))
    rec = running(s, since=JUMP - timedelta(hours=5))
    now = JUMP - timedelta(hours=3)  # 23:00 EST on Saturday
    assert scheduling.next_stop_at(rec, now) == JUMP  # not 03:30 EDT
    assert requeue_after({rec.model_key: rec}, now=now, in_flight=False) == 3 * 3600
    assert run(s, rec, up(rec), JUMP - SECOND) == ()
    record_only, _gateway = run(s, rec, up(rec), JUMP)
    assert isinstance(record_only, RecordOnly)
    assert record_only.record.schedule_stop == "active_hours"


def test_a_window_wholly_in_the_skipped_hour_names_the_next_day_start() -> None:
    s = spec("a", schedule=Schedule(active_hours=ActiveHours("02:15", "02:45", NY)))
    stopped = record(s, State.STOPPED, schedule_stop="active_hours")
    now = JUMP - timedelta(minutes=10)
    monday = datetime(2026, 3, 9, 6, 15, tzinfo=UTC)  # 02:15 EDT
    assert scheduling.next_start_at(stopped, now) == monday  # not 03:15 EDT, never open
    assert requeue_after({stopped.model_key: stopped}, now=now, in_flight=False) == \
        (monday - now).total_seconds()
    for minute in range(0, 23 * 60, 5):  # not started from 03:00 EDT until Monday 02:00
        assert run(s, stopped, observed(), JUMP + timedelta(minutes=minute),
                   in_gateway=False) == ()
    (deploy,) = run(s, stopped, observed(), monday, in_gateway=False)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.START
