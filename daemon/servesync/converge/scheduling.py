"""What a model's ``schedule:`` asks of it now: the planner's and the status files' view.

Pure: every answer is computed from a record (or a spec) and ``now``; the
calendar arithmetic is :mod:`servesync.desired.schedules` (one predicate,
``in_window``, whose flips are ``next_open``/``next_close``, so a reported
next stop or start is exactly when :func:`due`/:func:`start_reason` change
their answer, DST included). The truth is in the record (docs/ARCHITECTURE.md, "Scheduled
stop"): ``running_since`` starts the ``stop_after`` clock and
``schedule_stop`` says the model was stopped by its schedule and why, so a
daemon that restarts reads the same answers as the one that stopped.

Rules:

* outside its ``active_hours`` a model is stopped, whatever its state
  (``schedule_stop = "active_hours"``), and starts again when the window opens;
* a RUNNING (or DEGRADED) model whose spec has been RUNNING for ``stop_after``
  (since ``running_since``) is stopped (``schedule_stop = "stop_after"``); it
  starts again on a commit that changes its spec or its schedule, or when its
  window opens (a closed window turns the stop into an ``active_hours`` one);
* the clock starts when a spec that was not running becomes RUNNING (a new
  spec hash, or a start after a stop), and again when the schedule changes
  while it runs; a redeploy of the same spec (drift, a retry) keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from servesync.converge.records import ModelRecord, State
from servesync.desired.schedules import Schedule, in_window, next_close, next_open

STOP_AFTER = "stop_after"
ACTIVE_HOURS = "active_hours"
MIN_WAIT_S = 1.0  # a boundary already due is looked at again this soon (a tick was busy)
OVERDUE_S = 10.0  # due longer ago than this: the planner declined it (a held model)
SCHEDULE_REASON = "schedule"  # the status files' ``stopped_reason`` of a scheduled stop


def of(spec: Mapping[str, Any]) -> Schedule | None:
    """The schedule of a record's spec (its JSON), or None."""
    return Schedule.from_json(spec.get("schedule"))


def outside(schedule: Schedule | None, now: datetime) -> bool:
    """Is ``now`` outside the schedule's ``active_hours`` (False without them)?"""
    hours = schedule.active_hours if schedule else None
    return hours is not None and not in_window(hours, now)


def due(schedule: Schedule | None, running_since: str | None,
        now: datetime) -> tuple[str, str] | None:
    """(why, message) when the schedule says stop now; None: let it run.
    ``running_since``: the stop_after clock's start, None when it does not run."""
    if schedule is None:
        return None
    hours = schedule.active_hours
    if hours is not None and not in_window(hours, now):
        return ACTIVE_HOURS, (f"outside active hours ({hours.describe()}); starts again at "
                              f"{iso(next_open(hours, now))}")
    limit = schedule.stop_after_s
    if limit and running_since and now >= datetime.fromisoformat(running_since) + \
            timedelta(seconds=limit):
        return STOP_AFTER, f"stop_after {schedule.stop_after} elapsed (RUNNING since " \
                           f"{running_since})"
    return None


def start_reason(schedule: Schedule | None, stopped: str, *, changed: bool,
                 now: datetime) -> str | None:
    """Why a model the schedule stopped (``stopped``: why it was) starts again
    now, or None: it stays stopped. ``changed``: its spec or schedule changed."""
    if schedule is None:
        return "schedule removed"
    if outside(schedule, now):
        return None
    if stopped == ACTIVE_HOURS:
        return "active hours window open"
    if schedule.stop_after is None:
        return "stop_after removed"
    return "spec or schedule changed" if changed else None


def next_stop_at(rec: ModelRecord, now: datetime) -> datetime | None:
    """When the schedule stops this model next, if it runs (or is on its way)."""
    schedule = of(rec.spec)
    if schedule is None or rec.schedule_stop or not rec.enabled \
            or rec.state in (State.STOPPED, State.DELETING):
        return None
    times = []
    if schedule.active_hours is not None:
        times.append(next_close(schedule.active_hours, now))
    limit = schedule.stop_after_s
    if limit and rec.running_since and rec.state in (State.RUNNING, State.DEGRADED):
        times.append(datetime.fromisoformat(rec.running_since) + timedelta(seconds=limit))
    return min(times, default=None)


def next_start_at(rec: ModelRecord, now: datetime) -> datetime | None:
    """When the schedule starts this model again, if it stopped it and a window
    will open (a ``stop_after`` stop without one waits for a commit: None)."""
    schedule = of(rec.spec)
    if rec.schedule_stop is None or schedule is None or schedule.active_hours is None:
        return None
    return next_open(schedule.active_hours, now)


def boundary(rec: ModelRecord, now: datetime) -> datetime | None:
    """The record's next scheduled stop, or start once the schedule stopped it
    (None: none). Worked out once per record and kept on it
    (``ModelRecord.schedule_memo``) until ``now`` reaches it: no earlier
    boundary can appear in between (the next fire time after any instant
    before it is the same), and None does not depend on ``now``."""
    memo = rec.schedule_memo
    if memo is not None and memo[0] <= now and (memo[1] is None or now < memo[1]):
        return memo[1]
    at = next_start_at(rec, now) if rec.schedule_stop else next_stop_at(rec, now)
    object.__setattr__(rec, "schedule_memo", (now, at))  # a cache: the record stays as it is
    return at


def wait_s(rec: ModelRecord, now: datetime) -> float | None:
    """Seconds until this model's schedule needs a look (its next stop or
    start), at least :data:`MIN_WAIT_S`; None when it needs none. A stop
    overdue by more than :data:`OVERDUE_S` is one the planner declined (its
    file is held): no look again, not a tick every second."""
    at = boundary(rec, now)
    if at is None:
        return None
    left = (at - now).total_seconds()
    return None if left < -OVERDUE_S else max(MIN_WAIT_S, left)


def iso(at: datetime) -> str:
    """``at`` as the status files show times: ISO 8601 UTC to the second, with a
    ``Z`` (the one formatter of the status files and pages); naive is UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
