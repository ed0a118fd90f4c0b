"""A model's ``schedule:``: when it must not run, and the calendar arithmetic.

Pure: no I/O, no clock (every function takes ``now``). Built by
:mod:`servesync.desired.validating` from a document the JSON Schema passed
(the schema holds the shapes; :func:`issues` the rules only code can check),
kept in the :class:`~servesync.desired.specs.ModelSpec` and, as JSON, in the
model's record; read by the planner and the status files
(:mod:`servesync.converge.scheduling`).

* ``stop_after``: a duration, ``<n>d``, ``<n>h``, ``<n>m``, ``<n>s`` or a
  combination in that order (``1h30m``), from 1 s to 366 days: the model is
  stopped that long after its current spec became RUNNING.
* ``active_hours``: ``days`` (``mon`` … ``sun``, or a range such as
  ``mon-fri``, ``fri-mon`` wrapping over the week; default every day),
  ``start`` and ``end`` (``HH:MM``) and an IANA ``timezone``. The window
  opens at ``start`` on each listed day and closes at ``end``; an ``end`` at
  or before ``start`` closes the next day (``22:00`` to ``06:00``), an ``end``
  equal to ``start`` is refused (422), and so is a day listed twice through
  overlapping items (``mon`` and ``mon-fri``; the same item twice is the
  schema's ``uniqueItems``, a 400). Outside the window the model is stopped.
  The zone must be one of :func:`zone_names`: checked by membership, so a
  tenant's string never reaches :class:`~zoneinfo.ZoneInfo` (which would open
  a file named by it) unless it is one of the database's own names.

The calendar is apscheduler's :class:`~apscheduler.triggers.cron.CronTrigger`
in the window's zone, so a window is at the zone's wall-clock times across
daylight-saving changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger

from servesync.errors import IssueCode
from servesync.redaction import quote

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_STOP_AFTER_S = 366 * 86400
_DURATION = re.compile(r"(?=\d)(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?")
_UNITS = (86400, 3600, 60, 1)

Problem = tuple[IssueCode, str, str]
"""(class, JSON pointer, message) of one refused schedule field."""


def duration_s(text: str) -> int | None:
    """Seconds of a duration such as ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``;
    None when it is not one."""
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    return sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS, strict=True) if g)


def weekdays(days: tuple[str, ...]) -> tuple[int, ...]:
    """The weekdays (0 = Monday) of ``days`` as written: names and ranges."""
    out: set[int] = set()
    for item in days:
        first, _, last = item.partition("-")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return tuple(sorted(out))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True, slots=True)
class ActiveHours:
    """The weekly window a model runs in (see the module docstring)."""

    start: str  # "HH:MM"
    end: str
    timezone: str  # an IANA name
    days: tuple[str, ...] = DAY_NAMES  # as written

    @property
    def overnight(self) -> bool:
        """Does the window close on the day after it opens?"""
        return _minutes(self.end) <= _minutes(self.start)

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start}-{self.end} {self.timezone}"

    def to_json(self) -> dict[str, Any]:
        return {"days": list(self.days), "start": self.start, "end": self.end,
                "timezone": self.timezone}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A model's ``schedule:``; at least one of the two is set."""

    stop_after: str | None = None  # as written, e.g. "2h"
    active_hours: ActiveHours | None = None

    @property
    def stop_after_s(self) -> int | None:
        return None if self.stop_after is None else duration_s(self.stop_after)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.stop_after is not None:
            out["stop_after"] = self.stop_after
        if self.active_hours is not None:
            out["active_hours"] = self.active_hours.to_json()
        return out

    @classmethod
    def from_json(cls, data: object) -> Schedule | None:
        """A schedule from a valid document's (or a record's) ``schedule``; None when absent."""
        if not isinstance(data, Mapping) or not data:
            return None
        hours = data.get("active_hours")
        active = None
        if isinstance(hours, Mapping):
            active = ActiveHours(start=str(hours["start"]), end=str(hours["end"]),
                                 timezone=str(hours["timezone"]),
                                 days=tuple(hours.get("days") or DAY_NAMES))
        stop_after = data.get("stop_after")
        return cls(stop_after=stop_after if isinstance(stop_after, str) else None,
                   active_hours=active)


def issues(data: Mapping[str, Any], flagged: set[str]) -> Iterator[Problem]:
    """What the schema cannot see in a document's ``schedule`` (``flagged``:
    pointers the schema already refused, left alone): a zero or too long
    ``stop_after``, a time zone not in :func:`zone_names`, a day listed twice,
    an empty window."""
    schedule = data.get("schedule")
    if not isinstance(schedule, Mapping) or "/schedule" in flagged:
        return
    stop_after = schedule.get("stop_after")
    if isinstance(stop_after, str) and "/schedule/stop_after" not in flagged:
        seconds = duration_s(stop_after)
        if seconds is not None and not 1 <= seconds <= MAX_STOP_AFTER_S:
            yield (IssueCode.UNPROCESSABLE, "/schedule/stop_after",
                   f"stop_after {quote(stop_after)} is {seconds} s: it must be from 1 s to "
                   "366 days (366d)")
    hours = schedule.get("active_hours")
    if not isinstance(hours, Mapping) or "/schedule/active_hours" in flagged:
        return
    zone = hours.get("timezone")
    if isinstance(zone, str) and "/schedule/active_hours/timezone" not in flagged \
            and not known_zone(zone):
        yield (IssueCode.UNPROCESSABLE, "/schedule/active_hours/timezone",
               f"timezone {quote(zone)} is not an IANA time zone name this machine knows: use "
               "one such as Asia/Shanghai, Europe/Berlin or UTC (not a posix/ or right/ "
               "variant, localtime or Factory)")
    days = hours.get("days")
    if isinstance(days, list) and not any(
            p == "/schedule/active_hours/days" or p.startswith("/schedule/active_hours/days/")
            for p in flagged):
        yield from _repeated_days(days)
    start, end = hours.get("start"), hours.get("end")
    if isinstance(start, str) and start == end and not flagged & {
            "/schedule/active_hours/start", "/schedule/active_hours/end"}:
        yield (IssueCode.UNPROCESSABLE, "/schedule/active_hours/end",
               f"end {quote(end)} equals start: the window would be empty (an end before "
               "start closes the next day; to run all day, leave active_hours out)")


def _repeated_days(days: list[Any]) -> Iterator[Problem]:
    """422 on each item of ``days`` (a list the schema passed: distinct, each a
    day or a range) that lists a day an earlier item already lists."""
    seen: dict[int, int] = {}  # weekday -> index of the first item listing it
    for i, item in enumerate(days):
        mine = weekdays((str(item),))
        again = [d for d in mine if d in seen]
        if again:
            first = seen[again[0]]
            yield (IssueCode.UNPROCESSABLE, f"/schedule/active_hours/days/{i}",
                   f"days {quote(item)} lists {', '.join(DAY_NAMES[d] for d in again)} again "
                   f"(already in {quote(days[first])}): list each day once")
        for d in mine:
            seen.setdefault(d, i)


_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
"""Names in a zoneinfo folder that are no place's time: this machine's own
setting, the POSIX rules template, and tzdata's "time zone not set"."""


@cache
def zone_names() -> frozenset[str]:
    """The time zone names a schedule may use: the IANA names of this machine's
    database (:func:`zoneinfo.available_timezones`: the system's zoneinfo and
    the ``tzdata`` package), without the ``posix/`` and ``right/`` copies (the
    latter count leap seconds) and :data:`_NOT_ZONES`; ``UTC`` always. Read
    once per process."""
    return frozenset(
        name for name in available_timezones()
        if not name.startswith(("posix/", "right/")) and name not in _NOT_ZONES) | {"UTC"}


def known_zone(name: str) -> bool:
    """Is ``name`` one of :func:`zone_names`? A set lookup: a name that is not
    never reaches :class:`~zoneinfo.ZoneInfo`, so no tenant string opens a file."""
    return name in zone_names()


@lru_cache(maxsize=1024)
def _triggers(hours: ActiveHours) -> tuple[CronTrigger, CronTrigger]:
    """apscheduler triggers firing when the window opens and when it closes."""
    zone = ZoneInfo(hours.timezone)
    days = weekdays(hours.days)
    close_days = tuple((d + 1) % 7 for d in days) if hours.overnight else days

    def cron(on: tuple[int, ...], hhmm: str) -> CronTrigger:
        h, m = hhmm.split(":")
        return CronTrigger(day_of_week=",".join(DAY_NAMES[d] for d in on), hour=int(h),
                           minute=int(m), second=0, timezone=zone)

    return cron(days, hours.start), cron(close_days, hours.end)


def _fire_after(trigger: CronTrigger, now: datetime) -> datetime:
    """The trigger's first fire time strictly after ``now``, in UTC (fire times
    are whole seconds)."""
    after = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    fire: datetime | None = trigger.get_next_fire_time(None, after)
    assert fire is not None  # a weekly cron fires forever
    return fire.astimezone(UTC)


def next_open(hours: ActiveHours, now: datetime) -> datetime:
    """When the window next opens, strictly after ``now`` (UTC)."""
    return _fire_after(_triggers(hours)[0], now)


def next_close(hours: ActiveHours, now: datetime) -> datetime:
    """When the window next closes, strictly after ``now`` (UTC)."""
    return _fire_after(_triggers(hours)[1], now)


def in_window(hours: ActiveHours, now: datetime) -> bool:
    """Is ``now`` inside the window (its opening instant included, its closing
    one not)? Yes when the window's next boundary is a close."""
    return next_close(hours, now) < next_open(hours, now)
