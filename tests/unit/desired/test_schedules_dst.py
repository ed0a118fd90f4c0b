"""``active_hours`` across daylight-saving changes (America/New_York: clocks
jump 02:00 -> 03:00 on 2026-03-08 and fall back 02:00 -> 01:00 on 2026-11-01).

One predicate: on a fake clock moved a minute at a time across the change,
``in_window`` flips exactly at the instants ``next_open`` and ``next_close``
predicted from every earlier minute. A time the clock skips is the instant it
skips to (a window wholly in the skipped hour does not open that day); a time
it shows twice is its first showing (the window runs once)."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta

import pytest

from servesync.desired.schedules import ActiveHours, in_window, next_close, next_open
from tests.support.clock import FakeClock

NY = "America/New_York"
MINUTE = timedelta(minutes=1)
GAP = ActiveHours("02:15", "02:45", NY)  # wholly in the skipped hour
OPENS_IN_GAP = ActiveHours("02:30", "09:00", NY)
CLOSES_IN_GAP = ActiveHours("22:00", "02:30", NY)  # overnight
SATURDAY_NIGHT = ActiveHours("22:00", "02:30", NY, ("sat",))  # Sat 03-07 into Sun 03-08
TWICE_SHOWN = ActiveHours("01:10", "01:50", NY)  # wholly in the repeated hour
CLOSES_IN_REPEAT = ActiveHours("00:30", "01:30", NY)
OVERNIGHT_FALL = ActiveHours("22:00", "01:30", NY)
HALF_HOUR_GAP = ActiveHours("01:50", "02:20", "Australia/Lord_Howe")  # 02:00 -> 02:30
SPRING = datetime(2026, 3, 7, 5, 0, tzinfo=UTC)  # 03-07 00:00 EST
FALL = datetime(2026, 10, 31, 4, 0, tzinfo=UTC)  # 10-31 00:00 EDT
LORD_HOWE_SPRING = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)  # 10-03 22:30, the day before
SCAN = timedelta(days=3)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def flips(hours: ActiveHours, start: datetime) -> tuple[list[datetime], list[datetime]]:
    """(opens, closes) seen on a fake clock moved a minute at a time from
    ``start`` for :data:`SCAN` (every boundary here is on a whole minute)."""
    clock = FakeClock(start)
    opens: list[datetime] = []
    closes: list[datetime] = []
    was = in_window(hours, clock.now)
    while clock.now < start + SCAN:
        clock.advance(60)
        now = in_window(hours, clock.now)
        if now != was:
            (opens if now else closes).append(clock.now)
        was = now
    return opens, closes


@pytest.mark.parametrize("hours, start", [
    (GAP, SPRING), (OPENS_IN_GAP, SPRING), (CLOSES_IN_GAP, SPRING), (SATURDAY_NIGHT, SPRING),
    (TWICE_SHOWN, FALL), (CLOSES_IN_REPEAT, FALL), (OVERNIGHT_FALL, FALL),
    (HALF_HOUR_GAP, LORD_HOWE_SPRING)],
    ids=["gap", "opens-in-gap", "closes-in-gap", "saturday-night", "twice-shown",
         "closes-in-repeat", "overnight-fall", "half-hour-gap"])
def test_in_window_flips_exactly_where_next_open_and_next_close_said(
        hours: ActiveHours, start: datetime) -> None:
    opens, closes = flips(hours, start)
    assert opens and closes
    end = start + SCAN
    clock = FakeClock(start)
    while clock.now < end:
        for predicted, seen in ((next_open(hours, clock.now), opens),
                                (next_close(hours, clock.now), closes)):
            later = seen[bisect_right(seen, clock.now):]
            if later:
                assert predicted == later[0], (hours, clock.now)
            else:
                assert predicted > end, (hours, clock.now)
        clock.advance(60)


def test_a_window_wholly_in_the_skipped_hour_does_not_open_that_day() -> None:
    before = utc(2026, 3, 8, 6, 50)  # 01:50 EST
    assert next_open(GAP, before) == utc(2026, 3, 9, 6, 15)  # 03-09 02:15 EDT, not 03:15 EDT
    assert not any(in_window(GAP, utc(2026, 3, 8, 5) + n * MINUTE) for n in range(24 * 60))
    assert next_close(GAP, before) == utc(2026, 3, 9, 6, 45)


def test_a_window_opening_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    before = utc(2026, 3, 8, 6, 50)
    jump = utc(2026, 3, 8, 7, 0)  # 01:59:59 EST -> 03:00:00 EDT
    assert next_open(OPENS_IN_GAP, before) == jump
    assert in_window(OPENS_IN_GAP, jump)
    assert not in_window(OPENS_IN_GAP, jump - timedelta(seconds=1))
    assert next_close(OPENS_IN_GAP, jump) == utc(2026, 3, 8, 13, 0)  # 09:00 EDT


@pytest.mark.parametrize("hours", [CLOSES_IN_GAP, SATURDAY_NIGHT])
def test_a_window_closing_in_the_skipped_hour_closes_when_the_clock_jumps(
        hours: ActiveHours) -> None:
    saturday_2300 = utc(2026, 3, 8, 4, 0)  # 03-07 23:00 EST
    jump = utc(2026, 3, 8, 7, 0)
    assert in_window(hours, saturday_2300)
    assert next_close(hours, saturday_2300) == jump  # not 03:30 EDT
    assert in_window(hours, jump - timedelta(seconds=1))
    assert not in_window(hours, jump)


def test_a_window_in_the_repeated_hour_runs_once_at_its_first_showing() -> None:
    assert next_open(TWICE_SHOWN, utc(2026, 11, 1, 4, 0)) == utc(2026, 11, 1, 5, 10)  # EDT
    assert next_close(TWICE_SHOWN, utc(2026, 11, 1, 5, 10)) == utc(2026, 11, 1, 5, 50)
    assert not in_window(TWICE_SHOWN, utc(2026, 11, 1, 6, 20))  # 01:20 EST, shown again
    assert next_open(TWICE_SHOWN, utc(2026, 11, 1, 5, 50)) == utc(2026, 11, 2, 6, 10)


def test_a_window_closing_in_the_repeated_hour_closes_at_its_first_showing() -> None:
    for hours, opened in ((CLOSES_IN_REPEAT, utc(2026, 11, 1, 4, 30)),
                          (OVERNIGHT_FALL, utc(2026, 11, 1, 2, 0))):
        assert next_close(hours, opened) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
        assert not in_window(hours, utc(2026, 11, 1, 6, 0))  # 01:00 EST: not again
        assert not in_window(hours, utc(2026, 11, 1, 6, 29))


def test_a_half_hour_jump_is_found_to_the_second() -> None:
    jump = utc(2026, 10, 3, 15, 30)  # Lord Howe 02:00 (+10:30) -> 02:30 (+11:00)
    assert next_close(HALF_HOUR_GAP, utc(2026, 10, 3, 15, 20)) == jump  # 01:50: open
    assert in_window(HALF_HOUR_GAP, jump - timedelta(seconds=1))
    assert not in_window(HALF_HOUR_GAP, jump)
