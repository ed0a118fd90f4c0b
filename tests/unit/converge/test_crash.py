"""kill -9 at random instants of real ticks (deploy, scale, delete), then restart.

A forked child runs the real Reconciler, Store and status files against a
file-backed fake Ray (tests/support/fileray.py) and is SIGKILLed after a
random delay; the parent checks what was left (records load, no orphan
application, no model with two), converges and checks that every declared
model runs with its spec, nothing else is deployed, and nothing that was
running is deployed again. The harness is tests/support/crashing.py; the
1,000-trial run is benchmarks/bench_crash.py.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from servesync.converge.records import ModelRecord, State
from servesync.state.store import Store
from tests.support.crashing import CrashWorld, KillWindow, child_converge_time

TRIALS = 200


@pytest.fixture
def world_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder in /dev/shm when there is one: a kill -9 (not a power cut) keeps
    what was written either way, and tmpfs makes each fsync'd write ~4x cheaper."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="servesync-crash-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_kill_9_at_random_instants_loses_and_duplicates_nothing(world_dir: Path) -> None:
    world = CrashWorld(world_dir)
    rng = random.Random(9)
    window = KillWindow(child_converge_time(world, rng))
    failures, mid_change = [], 0
    for n in range(TRIALS):
        result = world.trial(rng, max_delay_s=window.max_delay_s)
        window.update(result)
        mid_change += result.mid_change
        failures += [f"trial {n}: {v}" for v in result.violations]
    assert failures == []
    assert mid_change >= TRIALS // 4, f"only {mid_change} kills landed mid-change"


def test_the_checker_finds_an_orphan_when_deploys_skip_the_write_ahead(
        world_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same harness against a reconciler that records a deploy only after
    Ray took it: some kill lands in between and leaves an orphan application
    (the harness has teeth)."""
    put_many = Store.put_many

    def no_write_ahead(self: Store, records: Iterable[ModelRecord]) -> None:
        put_many(self, [r for r in records
                        if not (r.state is State.DEPLOYING and r.submitted_at is None)])

    monkeypatch.setattr(Store, "put_many", no_write_ahead)
    world = CrashWorld(world_dir)
    world.ray.answer_delay_s = 0.02  # Ray's answer takes a while: kills land in between
    rng = random.Random(3)
    window = child_converge_time(world, rng)
    found = []
    for _ in range(150):
        found += world.trial(rng, max_delay_s=window).violations
        if any("orphan" in v for v in found):
            break
    assert any("orphan" in v for v in found), found
