"""The recorded state: round trips, one write per call, no idle writes, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from servesync.converge.records import Event, EventKind, GatewayRecord, ModelRecord, State
from servesync.errors import ServesyncError
from servesync.state import atomicio
from servesync.state import store as store_module
from servesync.state.store import JOURNAL_FILE, STATE_FILE, StateFileError, Store


def record(key: str = "svc-alice-20250101-120000-ab12", **changes: Any) -> ModelRecord:
    rec = ModelRecord(
        model_key=key,
        user_id="alice",
        suffix="chat",
        prefix="alice-202501011200",
        app_name=key,
        spec_hash="0123456789abcdef",
        spec={"model_source": "/private/alice/m", "num_replicas": 1, "env": {"A": "b"}},
        state=State.DEPLOYING,
        source_file="users/alice/chat.yaml",
        attempted_revision="f" * 40,
        created_at="2025-01-01T12:00:00Z",
        updated_at="2025-01-01T12:00:00Z",
        events=(Event(at="2025-01-01T12:00:00Z", kind=EventKind.SUBMITTED, revision="f" * 40),),
    )
    return replace(rec, **changes)


def stat_id(path: Path) -> tuple[int, int, int]:
    """The identity of the state file and its journal (0s when absent)."""
    ident = 0, 0, 0
    for p in (path, path.with_name(JOURNAL_FILE)):
        if p.exists():
            st = p.stat()
            ident = (ident[0] ^ st.st_ino, ident[1] ^ st.st_mtime_ns, ident[2] + st.st_size)
    return ident


def test_models_round_trip_through_reopen(tmp_path: Path) -> None:
    a, b = record("svc-a"), record("svc-b", state=State.RUNNING, applied_hash="x")
    store = Store(tmp_path)
    store.put_many([b, a])
    assert store.models() == {"svc-a": a, "svc-b": b}
    assert list(Store(tmp_path).models()) == ["svc-a", "svc-b"]
    assert Store(tmp_path).get("svc-b") == b


def test_put_replaces_the_whole_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(record(error_summary="boom"))
    store.put(record(error_summary=None, state=State.RUNNING))
    got = Store(tmp_path).get(record().model_key)
    assert got is not None
    assert (got.state, got.error_summary) == (State.RUNNING, None)
    assert len(Store(tmp_path).models()) == 1


def test_get_and_delete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many([record("svc-a"), record("svc-b")])
    assert store.get("svc-missing") is None
    store.delete("svc-a")
    assert list(Store(tmp_path).models()) == ["svc-b"]


def test_gateway_and_meta_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.gateway() == GatewayRecord()
    assert store.meta() == {}
    gw = GatewayRecord(members=(("alice-1-chat", "svc-a"),), deployed_at="2025-01-01T00:00:00Z")
    store.set_gateway(gw)
    store.set_meta(tick=3, revision="abc")
    store.set_meta(tick=4, last_tick_at="2025-01-01T00:00:30Z")
    again = Store(tmp_path)
    assert again.gateway() == gw
    assert again.meta() == {"tick": 4, "revision": "abc", "last_tick_at": "2025-01-01T00:00:30Z"}


def test_put_many_is_one_disk_write(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many(record(f"svc-{i}") for i in range(25))
    assert store.disk_writes == 1
    assert len(Store(tmp_path).models()) == 25


def test_batch_groups_a_tick_into_one_write(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.batch():
        store.put(record("svc-a"))
        store.set_gateway(GatewayRecord(deployed_at="t"))
        store.set_meta(tick=1)
        assert store.get("svc-a") == record("svc-a")  # reads see the batch
    assert store.disk_writes == 1
    assert Store(tmp_path).meta() == {"tick": 1}


def test_batch_that_raises_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.set_meta(tick=1)
    with pytest.raises(RuntimeError), store.batch():
        store.set_meta(tick=2)
        raise RuntimeError("tick failed")
    assert store.meta() == {"tick": 1}
    assert Store(tmp_path).meta() == {"tick": 1}


def test_unchanged_writes_do_not_touch_the_disk(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many([record("svc-a"), record("svc-b")])
    store.set_gateway(GatewayRecord(deployed_at="t"))
    store.set_meta(tick=1)
    path = tmp_path / STATE_FILE
    before, writes = stat_id(path), store.disk_writes
    time.sleep(0.01)
    store.put_many([record("svc-b"), record("svc-a")])
    store.put(record("svc-a"))
    store.set_gateway(GatewayRecord(deployed_at="t"))
    store.set_meta(tick=1)
    store.delete("svc-missing")
    assert stat_id(path) == before
    assert store.disk_writes == writes
    store.set_meta(tick=2)
    assert stat_id(path) != before


def test_new_store_does_not_create_the_file_until_a_write(tmp_path: Path) -> None:
    Store(tmp_path / "state").models()
    assert not (tmp_path / "state" / STATE_FILE).exists()


@pytest.mark.parametrize(
    "content",
    [b"{\"models\": {\"1\": ", b"[1, 2]", b"\x00\x00\x00", b'{"models": {"1": {"model_key": 1}}}'],
    ids=["truncated", "not-a-mapping", "binary", "bad-record"],
)
def test_corrupt_file_is_a_clear_error_not_an_empty_start(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with pytest.raises(StateFileError) as info:
        Store(tmp_path)
    assert isinstance(info.value, ServesyncError)
    assert str(tmp_path / STATE_FILE) in str(info.value)
    assert info.value.path == tmp_path / STATE_FILE
    assert (tmp_path / STATE_FILE).read_bytes() == content  # left for the operator


def test_state_file_is_private_json(tmp_path: Path) -> None:
    Store(tmp_path).put(record())
    path = tmp_path / STATE_FILE
    assert path.stat().st_mode & 0o077 == 0
    assert json.loads(path.read_bytes())["models"]


def test_open_removes_temp_files_of_a_killed_writer(tmp_path: Path) -> None:
    Store(tmp_path).put(record())
    leftover = tmp_path / f".{STATE_FILE}.tmp-123-deadbeef"
    leftover.write_bytes(b"{half")
    assert Store(tmp_path).get(record().model_key) == record()
    assert not leftover.exists()


WRITER = r"""
import sys
from pathlib import Path
from typing import Any
from servesync.converge.records import ModelRecord, State
from servesync.state.store import Store

store = Store(Path(sys.argv[1]))
gen = int(store.meta().get("gen", 0))
print("ready", flush=True)
while True:
    gen += 1
    recs = [
        ModelRecord(model_key=f"svc-{i}", user_id="u", suffix=f"m{i}", prefix="u-1",
                    app_name=f"svc-{i}", spec_hash=str(gen),
                    spec={"gen": gen, "blob": str(gen) * 20000}, state=State.RUNNING)
        for i in range(12)
    ]
    with store.batch():
        store.put_many(recs)
        store.set_meta(gen=gen)
"""


def loaded_generation(state_dir: Path) -> int:
    """The one generation the file holds; fails if records and meta disagree."""
    store = Store(state_dir)
    gen = int(store.meta().get("gen", 0))
    models = store.models()
    assert len(models) in (0, 12)
    for rec in models.values():
        assert rec.spec["gen"] == gen
        assert rec.spec["blob"] == str(gen) * 20000
    return gen


def test_kill_9_at_any_moment_leaves_old_or_new_file(tmp_path: Path) -> None:
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    last, deadline, rounds = 0, time.monotonic() + 30, 0
    while rounds < 40 and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        gen = loaded_generation(tmp_path)
        assert gen >= last  # never back to an older state
        last, rounds = gen, rounds + 1
    assert rounds >= 20
    assert last > rounds  # the writer really wrote while being killed


# --- privacy: the records hold env values ----------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: the modes below must come from servesync, not from the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_file_is_0600_across_rewrites_and_the_dir_0700(
        tmp_path: Path, open_umask: None) -> None:
    state_dir = tmp_path / "state"
    store = Store(state_dir)
    assert mode(state_dir) == 0o700
    for i in range(3):
        store.put(record(error_summary=f"boom {i}"))
        store.set_meta(tick=i)
        assert mode(state_dir / STATE_FILE) == 0o600
    assert store.disk_writes == 6
    assert '"A": "b"' in (state_dir / STATE_FILE).read_text()  # env values are kept here


def test_the_temp_file_is_0600_before_a_byte_is_written(
        tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        real_write = f.write

        def write(data: bytes) -> int:
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            return int(real_write(data))

        f.write = write
        return f

    monkeypatch.setattr(atomicio.os, "fdopen", fdopen)
    store = Store(tmp_path)
    store.put(record())  # the base file, through a temp file
    store.put(record(state=State.RUNNING))  # a journal line
    assert modes == [0o600]
    assert stat.S_IMODE((tmp_path / JOURNAL_FILE).stat().st_mode) == 0o600


def test_a_looser_state_file_of_an_older_servesync_is_tightened_at_open(
        tmp_path: Path) -> None:
    Store(tmp_path).put(record())
    (tmp_path / STATE_FILE).chmod(0o644)
    tmp_path.chmod(0o755)
    Store(tmp_path)
    assert (mode(tmp_path / STATE_FILE), mode(tmp_path)) == (0o600, 0o700)


@pytest.mark.parametrize(("status_dir", "expected"), [
    ("{tmp}/state/status", 0o711),  # the default layout: users must reach status/
    ("{tmp}/status", 0o700),
])
def test_the_state_dir_is_traversable_only_when_it_holds_the_status_dir(
        tmp_path: Path, open_umask: None, status_dir: str, expected: int) -> None:
    from servesync import wiring
    from servesync.config import Config

    cfg = Config(state_dir=str(tmp_path / "state"), status_dir=status_dir.format(tmp=tmp_path))
    assert wiring.state_dir_mode(cfg) == expected
    Store(tmp_path / "state", dir_mode=wiring.state_dir_mode(cfg))
    assert mode(tmp_path / "state") == expected


# --- the file's shape ------------------------------------------------------------------


def test_a_state_file_written_by_the_tinydb_store_loads_and_is_migrated(tmp_path: Path) -> None:
    """Older servesyncs kept the records through tinydb, keyed by document ids."""
    a, b = record("svc-a"), record("svc-b", state=State.RUNNING)
    gw = GatewayRecord(members=(("alice-1-chat", "svc-a"),), deployed_at="t")
    old = {"models": {"1": a.to_json(), "2": b.to_json()},
           "gateway": {"1": gw.to_json()}, "meta": {"1": {"tick": 9, "revision": "abc"}}}
    (tmp_path / STATE_FILE).write_text(json.dumps(old, indent=1))
    store = Store(tmp_path)
    assert store.models() == {"svc-a": a, "svc-b": b}
    assert (store.gateway(), store.meta()) == (gw, {"tick": 9, "revision": "abc"})
    store.set_meta(tick=10)
    assert store.disk_writes == 1
    data = json.loads((tmp_path / STATE_FILE).read_bytes())
    assert sorted(data) == ["epoch", "gateway", "meta", "models"]
    assert sorted(data["models"]) == ["svc-a", "svc-b"]  # now keyed by model key
    assert data["gateway"]["1"] == gw.to_json() and data["meta"]["1"]["tick"] == 10
    assert Store(tmp_path).models() == {"svc-a": a, "svc-b": b}


def test_a_write_re_encodes_only_what_changed_and_reads_never_reparse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    store.put_many(record(f"svc-{i}") for i in range(50))
    encoded: list[object] = []
    real = store_module.encode_json
    monkeypatch.setattr(store_module, "encode_json", lambda d: encoded.append(d) or real(d))
    monkeypatch.setattr(store_module.json, "loads", lambda *a, **k: pytest.fail("re-parsed"))
    for _ in range(3):
        assert len(store.models()) == 50 and store.get("svc-7") == record("svc-7")
    store.put(record("svc-7", state=State.RUNNING))
    assert [d["model_key"] for d in encoded if isinstance(d, dict)] == ["svc-7"]  # not the 49


# --- the journal -------------------------------------------------------------------------


def test_a_change_to_one_record_of_many_appends_one_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many(record(f"svc-{i:03d}") for i in range(200))
    base = (tmp_path / STATE_FILE).read_bytes()
    store.put(record("svc-007", state=State.RUNNING))
    with store.batch():
        store.delete("svc-008")
        store.set_meta(tick=3)
    assert (tmp_path / STATE_FILE).read_bytes() == base  # not rewritten
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    assert len(lines) == 2 and all(len(line) < 2000 for line in lines)
    assert json.loads(lines[1])["models"] == {"svc-008": None}
    again = Store(tmp_path)
    assert again.models() == store.models() and again.meta() == {"tick": 3}
    assert again.get("svc-007") == record("svc-007", state=State.RUNNING)
    assert again.get("svc-008") is None


def test_the_journal_is_compacted_when_it_outgrows_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "JOURNAL_MIN_BYTES", 4000)
    store = Store(tmp_path)
    store.put_many(record(f"svc-{i}") for i in range(3))
    epoch = json.loads((tmp_path / STATE_FILE).read_bytes())["epoch"]
    journal, sizes = tmp_path / JOURNAL_FILE, []
    for n in range(12):
        store.put(record("svc-1", spec={"n": n}))
        sizes.append(journal.stat().st_size if journal.exists() else 0)
    assert max(sizes) <= 4000 and 0 in sizes  # appended, compacted, appended...
    assert json.loads((tmp_path / STATE_FILE).read_bytes())["epoch"] != epoch
    assert Store(tmp_path).get("svc-1") == record("svc-1", spec={"n": 11})


def test_a_torn_last_line_is_dropped_and_the_next_write_compacts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many([record("svc-a"), record("svc-b")])
    store.put(record("svc-a", state=State.RUNNING))
    journal = tmp_path / JOURNAL_FILE
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"epoch": "x", "models": {"svc-b": {"mod')  # killed midway
    store = Store(tmp_path)
    assert store.get("svc-a") == record("svc-a", state=State.RUNNING)  # the complete line
    assert store.get("svc-b") == record("svc-b")
    store.set_meta(tick=1)
    assert not journal.exists()  # compacted: nothing appended after a torn line
    assert Store(tmp_path).models() == store.models()


def test_a_damaged_line_before_the_last_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(record("svc-a"))
    store.put(record("svc-a", state=State.RUNNING))
    store.put(record("svc-a", state=State.FAILED))
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"{not json\n" + lines[1])
    with pytest.raises(StateFileError) as info:
        Store(tmp_path)
    assert info.value.path == journal and "line 1" in str(info.value)


def test_journal_lines_of_another_base_are_ignored(tmp_path: Path) -> None:
    """A compaction killed after renaming the new base, before removing the
    journal: the old lines must not be replayed over the newer base."""
    store = Store(tmp_path)
    store.put(record("svc-a"))
    store.put(record("svc-a", state=State.RUNNING))
    stale = (tmp_path / JOURNAL_FILE).read_bytes()
    store.put(record("svc-a", state=State.FAILED))
    store._rewrite()  # a compaction (journal removed), then the stale journal is back
    (tmp_path / JOURNAL_FILE).write_bytes(stale)
    again = Store(tmp_path)
    assert again.get("svc-a") == record("svc-a", state=State.FAILED)
    again.set_meta(tick=1)
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_read_models_sees_the_journal_and_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_many([record("svc-a"), record("svc-b")])
    store.put(record("svc-a", state=State.RUNNING))  # a journal line
    store.delete("svc-b")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    assert store_module.read_models(tmp_path) == [record("svc-a", state=State.RUNNING)]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before


def test_a_failed_append_is_cut_back_so_no_line_is_glued_to_a_fragment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full midway through a journal line: the fragment is cut off, the
    error ends the write, and the next write's line is whole."""
    store = Store(tmp_path)
    store.put_many([record("svc-a"), record("svc-b")])
    store.put(record("svc-a", state=State.RUNNING))
    journal = tmp_path / JOURNAL_FILE
    good = journal.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "write", half_then_full)
    with pytest.raises(OSError):
        store.put(record("svc-b", state=State.RUNNING))
    monkeypatch.undo()
    assert journal.read_bytes() == good
    store.put(record("svc-c"))  # the retry carries svc-b's change too
    again = Store(tmp_path)
    assert again.models() == store.models()
    assert again.get("svc-b") == record("svc-b", state=State.RUNNING)


def test_a_complete_line_that_is_not_json_is_damage_not_a_torn_write(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(record("svc-a"))
    store.put(record("svc-a", state=State.RUNNING))
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes() + b'{"epoch": "x", "mod{"epoch"}\n')
    with pytest.raises(StateFileError) as info:
        Store(tmp_path)
    assert "line 2" in str(info.value)


def test_read_consistent_reads_again_when_a_compaction_lands_in_between(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    store.put(record("svc-a"))
    store.put(record("svc-a", state=State.RUNNING))  # in the journal
    real = store_module._read_or_none
    calls: list[Path] = []

    def compact_after_the_base(path: Path) -> bytes | None:
        calls.append(path)
        data = real(path)
        if len(calls) == 1:
            store._rewrite()  # the daemon compacts right after we read the old base
        return data

    monkeypatch.setattr(store_module, "_read_or_none", compact_after_the_base)
    base, journal = store_module.read_consistent(tmp_path)
    assert len(calls) == 4  # the first base and journal were read again
    assert journal is None and base is not None
    assert b'"RUNNING"' in base
