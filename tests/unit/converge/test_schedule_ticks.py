"""A model's schedule through the real Reconciler, Store and status files, on a
fake clock: a restarted daemon (a new Reconciler on the stored records)
neither stops early nor loses a stop; the status file says when and why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from servesync.config import Config
from servesync.converge import scheduling
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import ModelRecord, State
from servesync.desired.sources import Snapshot
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler

HOUR = timedelta(hours=1)
MODEL = """\
model_id: a
model_source: $HOME/common/hf/tiny
num_replicas: {replicas}
cpus_per_replica: 1
schedule:
{schedule}"""
STOP_AFTER = "  stop_after: 2h\n"
# 2026-01-06 (T0) is a Tuesday; the window is Shanghai's (UTC+8) office hours
OFFICE = ("  active_hours: {days: [mon-fri], start: '08:00', end: '20:00', "
          "timezone: Asia/Shanghai}\n")
TUESDAY_0900_SHANGHAI = datetime.fromisoformat("2026-01-06T01:00:00+00:00")


@pytest.fixture
def tree(cpu_config: Config, desired_tree: Path) -> tuple[Config, Path]:
    return cpu_config, desired_tree


def write(root: Path, schedule: str, replicas: int = 1) -> Snapshot:
    (root / "users" / "alice" / "a.yaml").write_text(
        MODEL.format(replicas=replicas, schedule=schedule))
    return Snapshot(root=root, revision=f"r{replicas}{len(schedule)}", error=None,
                    watch_paths=())


def settle(rec: Reconciler, ray: FakeRay, snap: Snapshot, clock: FakeClock) -> ModelRecord:
    """Tick (5 s apart, Ray settling in between) until nothing is in flight."""
    for _ in range(10):
        result = rec.tick(snap)
        ray.settle()
        clock.advance(5)
        if result.settled:
            (model,) = rec.store.models().values()
            return model
    raise AssertionError(f"not settled: {rec.store.models()}")


def restart(config: Config, old: Reconciler, ray: FakeRay, clock: FakeClock) -> Reconciler:
    old.store.close()
    return make_reconciler(config, ray, clock)


def status(config: Config, model: ModelRecord) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (Path(config.status_dir) / "models" / f"{model.model_key}.json").read_text())
    return data


def test_a_restart_neither_stops_early_nor_loses_the_stop(tree: tuple[Config, Path]) -> None:
    config, root = tree
    clock, ray = FakeClock(), FakeRay()
    snap = write(root, STOP_AFTER)
    first = make_reconciler(config, ray, clock)
    model = settle(first, ray, snap, clock)
    assert model.state is State.RUNNING and model.running_since is not None
    since = datetime.fromisoformat(model.running_since)
    assert status(config, model)["next_stop_at"] == scheduling.iso(since + 2 * HOUR)
    # the daemon restarts a minute before the stop: the new one does not stop it
    clock.now = since + 2 * HOUR - timedelta(minutes=1)
    second = restart(config, first, ray, clock)
    result = second.tick(snap)
    assert result.actions == ()
    assert result.requeue_after_s == 60.0  # and it looks again exactly when the stop is due
    # down across the stop time: the next daemon stops it at once
    clock.now = since + 3 * HOUR
    third = restart(config, second, ray, clock)
    model = settle(third, ray, snap, clock)
    assert model.state is State.STOPPED and model.schedule_stop == "stop_after"
    assert model.app_name not in ray.apps and ("delete", model.app_name) in ray.calls
    shown = status(config, model)
    assert shown["stopped_reason"] == "schedule" and shown["state"] == "STOPPED"
    assert shown["next_stop_at"] is None and shown["next_start_at"] is None
    events: list[dict[str, str]] = shown["events"]  # type: ignore[assignment]
    assert any(e["message"].startswith("schedule: stop_after 2h elapsed") for e in events)
    # a restart keeps it stopped
    ray.calls.clear()
    fourth = restart(config, third, ray, clock)
    assert fourth.tick(snap).actions == () and ray.calls == []
    # a commit that changes its spec starts it, and its clock starts again
    snap = write(root, STOP_AFTER, replicas=2)
    model = settle(fourth, ray, snap, clock)
    assert model.state is State.RUNNING and model.schedule_stop is None
    assert model.running_since is not None
    assert datetime.fromisoformat(model.running_since) > since + 3 * HOUR


def test_a_schedule_only_change_calls_no_ray(tree: tuple[Config, Path]) -> None:
    config, root = tree
    clock, ray = FakeClock(), FakeRay()
    rec = make_reconciler(config, ray, clock)
    model = settle(rec, ray, write(root, STOP_AFTER), clock)
    ray.calls.clear()
    clock.advance(HOUR.total_seconds())
    model = settle(rec, ray, write(root, "  stop_after: 3h\n"), clock)
    assert ray.calls == []
    assert model.state is State.RUNNING and model.spec["schedule"] == {"stop_after": "3h"}
    assert status(config, model)["schedule"] == {"stop_after": "3h"}


@pytest.mark.parametrize("restart_at_hour", [10, 21], ids=["inside", "outside"])
def test_active_hours_across_a_restart(tree: tuple[Config, Path], restart_at_hour: int) -> None:
    config, root = tree
    clock, ray = FakeClock(TUESDAY_0900_SHANGHAI), FakeRay()
    snap = write(root, OFFICE)
    first = make_reconciler(config, ray, clock)
    model = settle(first, ray, snap, clock)
    assert model.state is State.RUNNING
    assert status(config, model)["next_stop_at"] == "2026-01-06T12:00:00Z"  # 20:00
    # 20:00 Shanghai: the window closes, the model is stopped
    clock.now = datetime.fromisoformat("2026-01-06T12:00:00+00:00")
    model = settle(first, ray, snap, clock)
    assert model.state is State.STOPPED and model.schedule_stop == "active_hours"
    assert status(config, model)["next_start_at"] == "2026-01-07T00:00:00Z"  # 08:00
    # the daemon restarts the next day at restart_at_hour Shanghai time
    clock.now = datetime.fromisoformat("2026-01-06T16:00:00+00:00") + \
        timedelta(hours=restart_at_hour)
    second = restart(config, first, ray, clock)
    model = settle(second, ray, snap, clock)
    if restart_at_hour == 10:  # inside the window: it runs again
        assert model.state is State.RUNNING and model.schedule_stop is None
    else:
        assert model.state is State.STOPPED and model.app_name not in ray.apps
