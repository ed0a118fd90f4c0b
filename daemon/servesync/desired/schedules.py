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

The calendar is the zone's wall clock (:mod:`zoneinfo`, the IANA database):
each listed day's window is one interval of instants, from the first instant
the clock shows ``start`` (or a later time) on that day to the first it shows
``end`` (or later) on the closing day (:func:`_instant`). So a time the clock
skips (spring forward) is the instant it skips to (02:30 on a day that jumps
from 02:00 to 03:00 is 03:00; a window wholly in the skipped hour does not
open that day), and a time it shows twice (fall back) is its first showing
(the window runs once). :func:`in_window` is the one predicate, membership
in those intervals; :func:`next_open` and :func:`next_close` are the instants
after ``now`` where that predicate turns True and False, so the two can
never disagree (docs/ARCHITECTURE.md, "Scheduled stop").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from servesync.errors import IssueCode
from servesync.redaction import quote

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_STOP_AFTER_S = 366 * 86400
HORIZON_DAYS = 400  # a weekly window opens and closes within 8 days (15 across a DST gap)
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


def _wall(at: datetime, zone: ZoneInfo) -> datetime:
    """What ``zone``'s clock shows at the instant ``at`` (naive)."""
    return at.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(zone: ZoneInfo, day: date, hhmm: str) -> datetime:
    """The first instant (UTC) at which ``zone``'s clock shows ``hhmm`` on
    ``day`` or a later time: for a time shown twice (fall back) its first
    showing, for a time skipped (spring forward) the instant the clock skips
    to. Monotonic in the wall time, so a window's close is never before its
    open (in a skipped hour they may be equal: an empty window)."""
    h, m = hhmm.split(":")
    wall = datetime.combine(day, time(int(h), int(m)))
    early, late = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    if _wall(early, zone) == wall:
        return early  # an ordinary or a repeated time: its first showing
    if _wall(late, zone) == wall:
        return late
    # skipped: the clock shows less than ``wall`` at ``early`` and more at
    # ``late``; the jump (a whole second) is the first instant showing more
    lo, hi = early, late
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=2))
        if _wall(mid, zone) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=8192)
def _interval(hours: ActiveHours, day: date) -> tuple[datetime, datetime] | None:
    """The window opening on the local date ``day`` as [open, close) in UTC
    (possibly empty, in a skipped hour); None when ``day`` is not listed."""
    if day.weekday() not in weekdays(hours.days):
        return None
    zone = ZoneInfo(hours.timezone)
    close_day = day + timedelta(days=1) if hours.overnight else day
    return _instant(zone, day, hours.start), _instant(zone, close_day, hours.end)


def in_window(hours: ActiveHours, now: datetime) -> bool:
    """Is ``now`` inside the window (its opening instant included, its closing
    one not)? The one predicate :func:`next_open` and :func:`next_close` follow."""
    today = now.astimezone(ZoneInfo(hours.timezone)).date()
    for back in range(-1, 3):  # windows opening up to 2 days before (overnight, DST)
        span = _interval(hours, today - timedelta(days=back))
        if span is not None and span[0] <= now < span[1]:
            return True
    return False


def _next_flip(hours: ActiveHours, now: datetime, to: bool) -> datetime:
    """The first instant strictly after ``now`` where :func:`in_window` turns
    ``to``. The predicate only changes at a window's open or close, so those
    are walked in order (they are sorted: :func:`_instant` is monotonic and a
    window's end comes before the next day's start) and the predicate asked
    at each; an open inside another window or an empty window flips nothing."""
    state = in_window(hours, now)
    first = now.astimezone(ZoneInfo(hours.timezone)).date() - timedelta(days=2)
    for n in range(HORIZON_DAYS):
        span = _interval(hours, first + timedelta(days=n))
        for edge in span or ():
            if edge <= now:
                continue
            inside = in_window(hours, edge)
            if inside != state:
                if inside == to:
                    return edge
                state = inside
    raise AssertionError(f"{hours.describe()}: no boundary in {HORIZON_DAYS} days")


def next_open(hours: ActiveHours, now: datetime) -> datetime:
    """When the window next opens, strictly after ``now`` (UTC)."""
    return _next_flip(hours, now, True)


def next_close(hours: ActiveHours, now: datetime) -> datetime:
    """When the window next closes, strictly after ``now`` (UTC)."""
    return _next_flip(hours, now, False)
