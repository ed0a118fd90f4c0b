"""The pure planner and a model's ``schedule`` on a fake clock: ``stop_after``
counted from ``running_since``; ``active_hours`` stops and starts; a new spec
or schedule starts a stop_after stop again; a schedule-only change restarts
nothing; a stop is requeued for exactly when it is due."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from servesync.converge import naming
from servesync.converge.actions import Action, DeleteApp, Deploy, Kind, RecordOnly, UpdateGateway
from servesync.converge.observed import AppStatus, Observed
from servesync.converge.planning import plan, requeue_after
from servesync.converge.records import EventKind, GatewayRecord, ModelRecord, State
from servesync.desired.schedules import ActiveHours, Schedule
from servesync.desired.specs import ModelSpec
from tests.support.clock import T0, at
from tests.unit.converge.plancases import desired, observed, record, spec

GW = naming.GATEWAY_APP
HOUR = 3600.0
TWO_HOURS = spec("a", schedule=Schedule(stop_after="2h"))
# T0 is Tuesday 2026-01-06 12:30 UTC: inside 08:00-20:00 UTC, outside 08:00-12:00
OPEN = Schedule(active_hours=ActiveHours("08:00", "20:00", "UTC", ("mon-fri",)))
MORNING = Schedule(active_hours=ActiveHours("08:00", "12:00", "UTC", ("mon-fri",)))


def run(s: ModelSpec, rec: ModelRecord | None, obs: Observed, now: datetime,
        *, in_gateway: bool = True) -> tuple[Action, ...]:
    members = ((rec.public_id, rec.app_name),) if rec is not None and in_gateway else ()
    gw = GatewayRecord(members, T0.isoformat())
    return plan(desired=desired(s), recorded={rec.model_key: rec} if rec else {},
                observed=obs, gateway=gw, now=now, deploy_timeout_s=600)


def running(s: ModelSpec, since: datetime = T0) -> ModelRecord:
    return record(s, running_since=since.isoformat())


def up(rec: ModelRecord) -> Observed:
    return observed((rec, AppStatus.RUNNING), (GW, AppStatus.RUNNING))


def test_stop_after_is_not_due_a_second_early() -> None:
    rec = running(TWO_HOURS)
    assert run(TWO_HOURS, rec, up(rec), at(2 * HOUR - 1)) == ()


def test_stop_after_elapsed_leaves_the_gateway_then_deletes_and_records_why() -> None:
    rec = running(TWO_HOURS)
    record_only, gateway = run(TWO_HOURS, rec, up(rec), at(2 * HOUR))
    assert isinstance(record_only, RecordOnly) and isinstance(gateway, UpdateGateway)
    assert gateway.members == ()  # out of the gateway first
    stopping = record_only.record
    assert stopping.state is State.DELETING and stopping.schedule_stop == "stop_after"
    assert stopping.running_since is None and stopping.enabled
    assert stopping.events[-1].kind is EventKind.STOP_REQUESTED
    assert stopping.events[-1].message.startswith("schedule: stop_after 2h elapsed")
    # the gateway without it has settled: the application is deleted, then STOPPED
    settled = plan(desired=desired(TWO_HOURS), recorded={rec.model_key: stopping},
                   observed=up(rec), gateway=GatewayRecord((), T0.isoformat()),
                   now=at(2 * HOUR + 5), deploy_timeout_s=600)
    (delete,) = [a for a in settled if isinstance(a, DeleteApp)]
    assert delete.kind is Kind.STOP
    (gone,) = plan(desired=desired(TWO_HOURS), recorded={rec.model_key: stopping},
                   observed=observed(), gateway=GatewayRecord(()),
                   now=at(2 * HOUR + 10), deploy_timeout_s=600)
    assert isinstance(gone, RecordOnly) and gone.record.state is State.STOPPED
    assert gone.record.schedule_stop == "stop_after"


def test_a_stop_after_stop_waits_for_a_new_spec() -> None:
    stopped = record(TWO_HOURS, State.STOPPED, schedule_stop="stop_after")
    assert run(TWO_HOURS, stopped, observed(), at(10 * HOUR), in_gateway=False) == ()
    bigger = replace(TWO_HOURS, num_replicas=2)
    (deploy,) = run(bigger, stopped, observed(), at(10 * HOUR), in_gateway=False)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.START
    assert deploy.record.schedule_stop is None and deploy.record.state is State.DEPLOYING


def test_a_changed_schedule_starts_a_stop_after_stop_again() -> None:
    stopped = record(TWO_HOURS, State.STOPPED, schedule_stop="stop_after")
    longer = replace(TWO_HOURS, schedule=Schedule(stop_after="4h"))
    (deploy,) = run(longer, stopped, observed(), at(10 * HOUR), in_gateway=False)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.START
    assert deploy.record.spec["schedule"] == {"stop_after": "4h"}


def test_a_schedule_only_change_restarts_nothing_and_restarts_the_clock() -> None:
    rec = running(TWO_HOURS)
    longer = replace(TWO_HOURS, schedule=Schedule(stop_after="3h"))
    (action,) = run(longer, rec, up(rec), at(HOUR))
    assert isinstance(action, RecordOnly)  # no Deploy, no Ray call
    assert action.record.spec["schedule"] == {"stop_after": "3h"}
    assert action.record.running_since == at(HOUR).isoformat()
    assert action.record.spec_hash == rec.spec_hash
    assert requeue_after({rec.model_key: action.record}, now=at(HOUR),
                         in_flight=False) == 3 * HOUR


def test_requeue_is_exactly_when_the_stop_is_due() -> None:
    rec = running(TWO_HOURS)
    assert requeue_after({rec.model_key: rec}, now=at(HOUR), in_flight=False) == HOUR


def test_running_since_starts_when_a_new_spec_runs_and_survives_a_drift_redeploy() -> None:
    deploying = record(TWO_HOURS, State.DEPLOYING, applied_hash=None)
    (rec_running,) = [a for a in run(TWO_HOURS, deploying, up(deploying), at(60))
                      if isinstance(a, RecordOnly)]
    assert rec_running.record.state is State.RUNNING
    assert rec_running.record.running_since == at(60).isoformat()
    drifted = replace(rec_running.record, state=State.DEPLOYING)  # same spec, resubmitted
    (again,) = [a for a in run(TWO_HOURS, drifted, up(drifted), at(120))
                if isinstance(a, RecordOnly)]
    assert again.record.running_since == at(60).isoformat()


def test_outside_active_hours_a_running_model_is_stopped() -> None:
    s = spec("a", schedule=MORNING)
    rec = running(s)
    record_only, _gateway = run(s, rec, up(rec), at(0))
    assert isinstance(record_only, RecordOnly)
    assert record_only.record.state is State.DELETING
    assert record_only.record.schedule_stop == "active_hours"
    assert "starts again at 2026-01-07T08:00:00Z" in record_only.record.events[-1].message


def test_a_model_admitted_outside_its_window_is_recorded_stopped() -> None:
    (action,) = run(spec("a", schedule=MORNING), None, observed(), at(0))
    assert isinstance(action, RecordOnly)
    assert action.record.state is State.STOPPED
    assert action.record.schedule_stop == "active_hours"


def test_the_window_opening_starts_it_and_requeue_waits_for_it() -> None:
    s = spec("a", schedule=MORNING)
    stopped = record(s, State.STOPPED, schedule_stop="active_hours")
    # Tuesday 12:30 -> Wednesday 08:00
    until_open = 19.5 * HOUR
    assert requeue_after({stopped.model_key: stopped}, now=at(0),
                         in_flight=False) == until_open
    assert run(s, stopped, observed(), at(until_open - 1), in_gateway=False) == ()
    (deploy,) = run(s, stopped, observed(), at(until_open), in_gateway=False)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.START
    assert "window open" in deploy.reason


def test_a_new_spec_outside_the_window_stays_stopped() -> None:
    s = spec("a", schedule=MORNING)
    stopped = record(s, State.STOPPED, schedule_stop="active_hours")
    bigger = replace(s, num_replicas=2)
    assert run(bigger, stopped, observed(), at(0), in_gateway=False) == ()


def test_a_stop_after_stop_becomes_a_window_stop_when_the_window_closes() -> None:
    s = spec("a", schedule=Schedule(stop_after="1h", active_hours=OPEN.active_hours))
    stopped = record(s, State.STOPPED, schedule_stop="stop_after")
    assert run(s, stopped, observed(), at(0), in_gateway=False) == ()  # window open: waits
    (action,) = run(s, stopped, observed(), at(8 * HOUR), in_gateway=False)  # 20:30
    assert isinstance(action, RecordOnly) and action.record.schedule_stop == "active_hours"
    (start,) = run(s, action.record, observed(), at(19.5 * HOUR), in_gateway=False)
    assert isinstance(start, Deploy) and start.kind is Kind.START


def test_weekends_are_outside_a_weekday_window() -> None:
    s = spec("a", schedule=OPEN)
    rec = running(s)
    saturday = at(4 * 24 * HOUR)  # Saturday 12:30
    record_only, _ = run(s, rec, up(rec), saturday)
    assert isinstance(record_only, RecordOnly) and record_only.record.schedule_stop == \
        "active_hours"
    assert run(s, rec, up(rec), at(0)) == ()  # Tuesday 12:30: inside


def test_enabled_false_takes_over_a_scheduled_stop() -> None:
    stopped = record(TWO_HOURS, State.STOPPED, schedule_stop="stop_after")
    (action,) = run(replace(TWO_HOURS, enabled=False), stopped, observed(), at(0),
                    in_gateway=False)
    assert isinstance(action, RecordOnly)
    assert action.record.schedule_stop is None and not action.record.enabled


def test_a_model_running_from_before_schedules_gets_its_clock_with_its_first_schedule() -> None:
    old = record(spec("a"))  # recorded RUNNING by a servesync without schedules
    assert old.running_since is None
    (action,) = run(TWO_HOURS, old, up(old), at(HOUR))
    assert isinstance(action, RecordOnly) and action.record.running_since == at(HOUR).isoformat()


def test_a_held_model_past_its_stop_is_left_running_and_not_polled() -> None:
    rec = running(TWO_HOURS)
    held = desired(bad_files=(TWO_HOURS.source_file,))
    gw = GatewayRecord(((rec.public_id, rec.app_name),), T0.isoformat())
    assert plan(desired=held, recorded={rec.model_key: rec}, observed=up(rec), gateway=gw,
                now=at(3 * HOUR), deploy_timeout_s=600) == ()
    assert requeue_after({rec.model_key: rec}, now=at(2 * HOUR + 0.5),
                         in_flight=False) == 1.0  # just due: looked at again
    assert requeue_after({rec.model_key: rec}, now=at(3 * HOUR), in_flight=False) is None


def test_the_window_is_worked_out_once_per_record_until_it_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """requeue_after at every tick reuses the record's next boundary (the
    calendar is not asked again) until ``now`` reaches it; the answers are
    those worked out afresh."""
    from servesync.converge import scheduling

    calls: list[datetime] = []
    real = scheduling.next_close
    monkeypatch.setattr(scheduling, "next_close", lambda hours, now: (
        calls.append(now), real(hours, now))[1])
    s = spec("a", schedule=OPEN)  # closes Tuesday 20:00, 7.5 h after T0
    rec = running(s)
    waits = [requeue_after({rec.model_key: rec}, now=at(t), in_flight=False)
             for t in (0, 60, HOUR)]
    assert waits == [7.5 * HOUR, 7.5 * HOUR - 60, 6.5 * HOUR] and calls == [at(0)]
    assert requeue_after({rec.model_key: rec}, now=at(7.5 * HOUR),
                         in_flight=False) == 24 * HOUR  # the next close, as afresh
    assert calls == [at(0), at(7.5 * HOUR)]  # reached: worked out again
    fresh = running(s)  # an equal record, no memo: the same answer
    assert requeue_after({fresh.model_key: fresh}, now=at(HOUR), in_flight=False) == 6.5 * HOUR
    assert fresh == rec and replace(rec, attempts=1).schedule_memo is None


def test_a_specs_metadata_is_worked_out_once_per_tick_and_spec(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner asks a spec's metadata up to three times a model a tick;
    the spec works it out once (and keeps it: a validation cache hands the
    planner the same spec every tick)."""
    calls: list[str] = []
    real = ModelSpec._metadata_json
    monkeypatch.setattr(ModelSpec, "_metadata_json", lambda self: (
        calls.append(self.suffix), real(self))[1])
    old = running(TWO_HOURS)
    s = spec("a", schedule=Schedule(stop_after="3h"), labels={"team": "x"})
    actions = run(s, old, up(old), at(60))  # _converge, _metadata_changed, _respec
    (record_only,) = [a for a in actions if isinstance(a, RecordOnly)]
    assert record_only.record.spec["labels"] == {"team": "x"}
    assert record_only.record.spec["schedule"] == {"stop_after": "3h"}
    assert calls == ["a"]
    run(s, old, up(old), at(120))
    assert calls == ["a"] and s.metadata_json() is s.metadata_json()
