"""A model file's ``schedule:``: the calendar (the window's zone's wall clock:
weekdays, midnight, daylight-saving time; the DST edge cases are in
test_schedules_dst.py) and the checks
(400 for a shape, 422 for a value, each naming file, line and field)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from servesync.config import Config
from servesync.desired import schedules, validating
from servesync.desired.schedules import (
    ActiveHours,
    Schedule,
    duration_s,
    in_window,
    next_close,
    next_open,
    weekdays,
)
from servesync.errors import IssueCode

OFFICE = ActiveHours("08:00", "20:00", "Asia/Shanghai", ("mon-fri",))  # UTC+8, no DST
NIGHT = ActiveHours("22:00", "06:00", "UTC", ("fri",))  # opens Friday, closes Saturday
BERLIN = ActiveHours("08:00", "20:00", "Europe/Berlin")  # every day; DST on 2026-03-29


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("1d2h3m4s", 93784), ("h", None), ("", None), ("2h1d", None), ("1.5h", None),
    ("-1h", None), ("2H", None)])
def test_durations(text: str, seconds: int | None) -> None:
    assert duration_s(text) == seconds


def test_days_and_ranges_including_one_across_the_weekend() -> None:
    assert weekdays(("mon-fri",)) == (0, 1, 2, 3, 4)
    assert weekdays(("fri-mon",)) == (0, 4, 5, 6)
    assert weekdays(("mon", "wed", "sun")) == (0, 2, 6)


def test_weekday_window_in_a_named_zone() -> None:
    monday_0830_shanghai = utc(2026, 11, 23, 0, 30)
    assert in_window(OFFICE, monday_0830_shanghai)
    assert next_close(OFFICE, monday_0830_shanghai) == utc(2026, 11, 23, 12, 0)
    friday_2100_shanghai = utc(2026, 11, 27, 13, 0)
    assert not in_window(OFFICE, friday_2100_shanghai)
    assert next_open(OFFICE, friday_2100_shanghai) == utc(2026, 11, 30, 0, 0)  # Monday 08:00
    saturday = utc(2026, 11, 28, 4, 0)
    assert not in_window(OFFICE, saturday)


def test_the_opening_instant_is_inside_and_the_closing_one_outside() -> None:
    assert in_window(OFFICE, utc(2026, 11, 23, 0, 0))  # Monday 08:00:00 Shanghai
    assert not in_window(OFFICE, utc(2026, 11, 22, 23, 59, 59))
    assert not in_window(OFFICE, utc(2026, 11, 23, 12, 0))  # 20:00:00
    assert in_window(OFFICE, utc(2026, 11, 23, 11, 59, 59))


def test_a_window_across_midnight_closes_the_next_day() -> None:
    assert NIGHT.overnight
    assert in_window(NIGHT, utc(2026, 11, 27, 23, 0))  # Friday 23:00
    assert in_window(NIGHT, utc(2026, 11, 28, 5, 59))  # Saturday 05:59
    assert not in_window(NIGHT, utc(2026, 11, 28, 6, 0))
    assert not in_window(NIGHT, utc(2026, 11, 28, 23, 0))  # Saturday night: not a listed day
    assert next_open(NIGHT, utc(2026, 11, 28, 6, 0)) == utc(2026, 12, 4, 22, 0)
    assert next_close(NIGHT, utc(2026, 11, 27, 23, 0)) == utc(2026, 11, 28, 6, 0)


def test_the_window_follows_the_wall_clock_across_daylight_saving_time() -> None:
    # Berlin is UTC+1 before 2026-03-29 and UTC+2 from then on: 08:00 local moves in UTC
    assert next_open(BERLIN, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 6, 0)
    assert next_close(BERLIN, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 28, 19, 0)
    assert next_open(BERLIN, utc(2026, 3, 27, 12, 0)) == utc(2026, 3, 28, 7, 0)
    assert in_window(BERLIN, utc(2026, 3, 29, 6, 30))  # 08:30 CEST
    assert not in_window(BERLIN, utc(2026, 3, 28, 6, 30))  # 07:30 CET
    # and back in October (UTC+1 again from 2026-10-25)
    assert next_close(BERLIN, utc(2026, 10, 25, 12, 0)) == utc(2026, 10, 25, 19, 0)
    assert next_close(BERLIN, utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 24, 18, 0)


def test_a_schedule_round_trips_through_json() -> None:
    schedule = Schedule("1h30m", OFFICE)
    assert Schedule.from_json(schedule.to_json()) == schedule
    assert schedule.stop_after_s == 5400
    assert Schedule.from_json(None) is None


def check(tree: Path, config: Config, schedule: str) -> list[tuple[int, str, int, str]]:
    (tree / "users" / "alice" / "a.yaml").write_text(
        "model_id: a\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
        f"schedule:\n{schedule}")
    state = validating.validate_tree(tree, config)
    return [(int(i.code), i.pointer, i.line, i.message) for i in state.issues()]


@pytest.mark.parametrize(("schedule", "code", "pointer", "line", "words"), [
    ("  stop_after: 2 hours\n", IssueCode.INVALID, "/schedule/stop_after", 5, "does not match"),
    ("  stop_after: 0s\n", IssueCode.UNPROCESSABLE, "/schedule/stop_after", 5, "from 1 s"),
    ("  stop_after: 400d\n", IssueCode.UNPROCESSABLE, "/schedule/stop_after", 5, "366 days"),
    ("  active_hours: {start: '08:00', end: '20:00', timezone: Mars/Olympus}\n",
     IssueCode.UNPROCESSABLE, "/schedule/active_hours/timezone", 5, "IANA"),
    ("  active_hours: {start: '08:00', end: '08:00', timezone: UTC}\n",
     IssueCode.UNPROCESSABLE, "/schedule/active_hours/end", 5, "empty"),
    ("  active_hours: {start: '8am', end: '20:00', timezone: UTC}\n",
     IssueCode.INVALID, "/schedule/active_hours/start", 5, ""),
    ("  active_hours:\n    days: [weekdays]\n    start: '08:00'\n    end: '20:00'\n"
     "    timezone: UTC\n", IssueCode.INVALID, "/schedule/active_hours/days/0", 6, ""),
    ("  active_hours: {start: '08:00', end: '20:00'}\n",
     IssueCode.INVALID, "/schedule/active_hours/timezone", 5, "missing required"),
    ("  stop: 2h\n", IssueCode.INVALID, "/schedule/stop", 5, "unknown field"),
    ("  active_hours: {start: '08:00', end: '20:00', timezone: posix/Asia/Shanghai}\n",
     IssueCode.UNPROCESSABLE, "/schedule/active_hours/timezone", 5, "IANA"),
    ("  active_hours: {start: '08:00', end: '20:00', timezone: right/UTC}\n",
     IssueCode.UNPROCESSABLE, "/schedule/active_hours/timezone", 5, "IANA"),
    ("  active_hours: {start: '08:00', end: '20:00', timezone: localtime}\n",
     IssueCode.UNPROCESSABLE, "/schedule/active_hours/timezone", 5, "IANA"),
    ("  active_hours:\n    days: [mon, mon]\n    start: '08:00'\n    end: '20:00'\n"
     "    timezone: UTC\n", IssueCode.INVALID, "/schedule/active_hours/days", 6, "repeated"),
    ("  active_hours:\n    days: [sat, mon-fri,\n      fri-sun]\n    start: '08:00'\n"
     "    end: '20:00'\n    timezone: UTC\n", IssueCode.UNPROCESSABLE,
     "/schedule/active_hours/days/2", 7, "'fri-sun' lists fri, sat again (already in 'mon-fri')"),
])
def test_bad_schedules_name_file_line_field_and_class(
        desired_tree: Path, cpu_config: Config, schedule: str, code: IssueCode, pointer: str,
        line: int, words: str) -> None:
    found = check(desired_tree, cpu_config, schedule)
    assert [(c, p, n) for c, p, n, _ in found] == [(int(code), pointer, line)], found
    assert words in found[0][3]


def test_only_the_databases_own_zone_names_pass_and_no_other_reaches_zoneinfo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Membership first: a tenant's string that is not one of the names never
    reaches ``ZoneInfo`` (which opens a file named by it)."""
    names = schedules.zone_names()
    assert {"UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York"} <= names
    assert not any(n.startswith(("posix/", "right/")) for n in names)
    assert not names & {"localtime", "posixrules", "Factory"}
    opened: list[str] = []
    monkeypatch.setattr(schedules, "ZoneInfo", opened.append)
    for hostile in ("../../etc/passwd", "/etc/passwd", "posix/Asia/Shanghai",
                    "right/Europe/Berlin", "Asia/../../etc/passwd", "utc", ""):
        assert not schedules.known_zone(hostile), hostile
    assert schedules.known_zone("Asia/Shanghai")
    assert opened == []


def test_a_valid_schedule_reaches_the_spec_and_not_its_hash(
        desired_tree: Path, cpu_config: Config) -> None:
    assert check(desired_tree, cpu_config, "  stop_after: 1h30m\n  active_hours:\n"
                 "    days: [mon-fri, sun]\n    start: '22:00'\n    end: '06:00'\n"
                 "    timezone: Asia/Shanghai\n") == []
    (spec,) = validating.validate_tree(desired_tree, cpu_config).specs
    assert spec.schedule == Schedule("1h30m", ActiveHours("22:00", "06:00", "Asia/Shanghai",
                                                          ("mon-fri", "sun")))
    assert "schedule" not in spec.serving_json()
    assert spec.to_json()["schedule"]["stop_after"] == "1h30m"
    check(desired_tree, cpu_config, "  stop_after: 2h\n")
    (other,) = validating.validate_tree(desired_tree, cpu_config).specs
    assert other.spec_hash() == spec.spec_hash()  # changing the schedule restarts nothing
