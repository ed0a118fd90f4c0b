"""The notification outbox: durable appends, torn lines, compaction, restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from servesync.state.outbox import COMPACT_MIN_DONE, OUTBOX_FILE, Outbox


def test_entries_survive_a_reopen_in_order_and_done_ones_stay_done(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    a, b, c = box.add([("s1", {"n": 1}), ("s2", {"n": 2}), ("s1", {"n": 3})])
    box.done(a.id)
    again = Outbox(tmp_path)
    assert [e.id for e in again.pending()] == [b.id, c.id]
    assert again.first("s1") == c and again.first("s2") == b
    assert json.loads(c.body) == {"n": 3, "id": c.id}  # the id is in the body too
    assert stat.S_IMODE((tmp_path / OUTBOX_FILE).stat().st_mode) == 0o600


def test_a_torn_last_line_is_dropped_and_the_next_append_is_whole(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    (kept,) = box.add([("s", {"n": 1})])
    with (tmp_path / OUTBOX_FILE).open("ab") as f:
        f.write(b'{"add": {"id": "half')  # a write killed midway
    again = Outbox(tmp_path)
    assert [e.id for e in again.pending()] == [kept.id]
    (new,) = again.add([("s", {"n": 2})])
    assert [e.id for e in Outbox(tmp_path).pending()] == [kept.id, new.id]


def test_a_damaged_complete_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    (first,) = box.add([("s", {"n": 1})])
    with (tmp_path / OUTBOX_FILE).open("ab") as f:
        f.write(b"not json\n")
    (second,) = Outbox(tmp_path).add([("s", {"n": 2})])
    assert [e.id for e in Outbox(tmp_path).pending()] == [first.id, second.id]


def test_compaction_when_done_entries_dominate_keeps_the_pending_ones(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    entries = box.add([("s", {"n": i}) for i in range(COMPACT_MIN_DONE + 5)])
    for e in entries[:-2]:
        box.done(e.id)
    lines = (tmp_path / OUTBOX_FILE).read_text().splitlines()
    assert len(lines) < COMPACT_MIN_DONE  # rewritten, not 2 lines per entry
    assert [e.id for e in Outbox(tmp_path).pending()] == [e.id for e in entries[-2:]]
    assert stat.S_IMODE((tmp_path / OUTBOX_FILE).stat().st_mode) == 0o600


def test_marks_only_appends_are_compacted_too(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    (kept,) = box.add([("s", {"n": 1})])
    for i in range(500):  # models flapping with no sink named: marks lines only
        box.add((), marks={"svc-a": "RUNNING" if i % 2 else "FAILED", f"svc-{i}": None})
    assert len((tmp_path / OUTBOX_FILE).read_text().splitlines()) <= 64
    again = Outbox(tmp_path)
    assert again.marks() == {"svc-a": "RUNNING"} and again.marked
    assert [e.id for e in again.pending()] == [kept.id]


def test_an_outbox_without_marks_is_not_marked(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.add([("s", {"n": 1})])
    assert not Outbox(tmp_path).marked
    box.add((), marks={})
    assert Outbox(tmp_path).marked
