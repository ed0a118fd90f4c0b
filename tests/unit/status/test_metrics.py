"""``metrics.prom`` and ``metrics-models-<n>.prom`` after real ticks (fake Ray,
real store, real files), parsed back with prometheus_client's own parser."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from servesync.config import Config
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.ports import TickReport
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState
from servesync.status.metrics import (
    METRICS_FILE,
    MODEL_SHARDS,
    Metrics,
    models_metrics_file,
    shard_of,
)
from tests.support.clock import FakeClock, at
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import record, spec

MODEL = """\
model_id: {suffix}
model_source: $HOME/common/hf/tiny
num_replicas: {replicas}
cpus_per_replica: 1
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def read(status_dir: Path | str) -> Samples:
    """Every sample of both files: (name, sorted labels) -> value."""
    names = [METRICS_FILE, *(models_metrics_file(n) for n in range(MODEL_SHARDS))]
    text = "".join((Path(status_dir) / name).read_text() for name in names)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class World:
    def __init__(self, config: Config, root: Path) -> None:
        self.config, self.root = config, root
        self.ray, self.clock = FakeRay(), FakeClock(at(0))
        self.rec: Reconciler = make_reconciler(config, self.ray, self.clock)

    def write(self, suffix: str, replicas: int | str = 1) -> None:
        (self.root / "users" / "alice" / f"{suffix}.yaml").write_text(
            MODEL.format(suffix=suffix, replicas=replicas))

    def tick(self, revision: str = "r1", error: str | None = None) -> Samples:
        self.clock.advance(5)
        self.rec.tick(Snapshot(self.root, revision, error))
        self.ray.settle()
        return read(self.config.status_dir)

    def converge(self, revision: str = "r1") -> Samples:
        for _ in range(6):
            samples = self.tick(revision)
            if value(samples, "servesync_ticks_total", outcome="converged"):
                return samples
        raise AssertionError("not converged")


@pytest.fixture
def world(cpu_config: Config, desired_tree: Path) -> Iterator[World]:
    old = os.umask(0o027)  # systemd's UMask for servesync.service
    try:
        yield World(cpu_config, desired_tree)
    finally:
        os.umask(old)


def test_a_converged_tick_reports_states_replicas_and_outcomes(world: World) -> None:
    world.write("a", replicas=2)
    samples = world.converge()
    (model,) = world.rec.store.models().values()
    who = {"user": "alice", "model": model.public_id}
    assert value(samples, "servesync_model_replicas_desired", **who) == 2
    assert value(samples, "servesync_model_replicas_running", **who) == 2
    assert value(samples, "servesync_replicas_desired") == 2
    assert value(samples, "servesync_models", state="RUNNING") == 1
    assert value(samples, "servesync_models", state="DEGRADED") == 0
    assert value(samples, "servesync_ray_reachable") == 1
    assert value(samples, "servesync_ticks_total", outcome="converged") == 1
    assert value(samples, "servesync_ticks_total", outcome="progressing") >= 1
    assert value(samples, "servesync_ticks_total", outcome="error") == 0
    ticks = sum(value(samples, "servesync_ticks_total", outcome=o)
                for o in ("converged", "progressing", "degraded", "error"))
    assert value(samples, "servesync_tick_duration_seconds_count") == ticks
    assert value(samples, "servesync_last_tick_duration_seconds") > 0
    now = world.clock.now.timestamp()
    assert value(samples, "servesync_last_tick_timestamp_seconds") == now
    assert value(samples, "servesync_last_converged_timestamp_seconds") == now
    assert value(samples, "servesync_last_successful_tick_timestamp_seconds") == now
    for code in ("400", "403", "409", "422"):
        assert value(samples, "servesync_validation_errors", code=code) == 0
    assert value(samples, "servesync_desired_revision_info", revision="r1") == 1
    mode = stat.S_IMODE((Path(world.config.status_dir) / METRICS_FILE).stat().st_mode)
    assert mode == 0o644  # readable by node_exporter despite UMask=0027
    assert not [p.name for p in Path(world.config.status_dir).iterdir()
                if p.name.startswith(".")]  # no staging file left


def test_ray_down_is_an_error_and_keeps_the_last_success(world: World) -> None:
    world.write("a")
    before = world.converge()
    world.ray.reachable = False
    samples = world.tick()
    assert value(samples, "servesync_ray_reachable") == 0
    assert value(samples, "servesync_ticks_total", outcome="error") == 1
    assert value(samples, "servesync_last_successful_tick_timestamp_seconds") == \
        value(before, "servesync_last_tick_timestamp_seconds")
    assert value(samples, "servesync_last_tick_timestamp_seconds") == \
        world.clock.now.timestamp()


def test_validation_errors_by_class_and_a_degraded_outcome(world: World) -> None:
    world.write("a")
    world.converge()
    world.write("a", replicas="many")  # 400: the model keeps its last good spec
    (world.root / "users" / "alice" / "b.yaml").write_text(  # 422: GPUs on a cpu platform
        MODEL.format(suffix="b", replicas=1) + "gpus_per_replica: 1\n")
    samples = world.tick()
    assert value(samples, "servesync_validation_errors", code="400") == 1
    assert value(samples, "servesync_validation_errors", code="422") == 1
    assert value(samples, "servesync_ticks_total", outcome="degraded") == 1


def test_a_degraded_model_shows_fewer_replicas_running(world: World) -> None:
    world.write("a", replicas=2)
    world.converge()
    (model,) = world.rec.store.models().values()
    world.ray.replicas[model.app_name] = 1
    world.ray.apps[model.app_name] = AppStatus.UNHEALTHY
    world.tick()
    world.clock.advance(10)
    samples = world.tick()
    assert world.rec.store.models()[model.model_key].state is State.DEGRADED
    who = {"user": "alice", "model": model.public_id}
    assert value(samples, "servesync_model_replicas_desired", **who) == 2
    assert value(samples, "servesync_model_replicas_running", **who) == 1
    assert value(samples, "servesync_models", state="DEGRADED") == 1


def test_revision_change_time_survives_a_restart(world: World) -> None:
    world.write("a")
    first = world.converge("r1")
    changed = value(first, "servesync_desired_revision_changed_timestamp_seconds")
    assert changed == at(5).timestamp()  # the first tick saw r1
    samples = world.tick("r1")
    assert value(samples, "servesync_desired_revision_changed_timestamp_seconds") == changed
    # a restarted servesync (new publisher) reads the time back; the counters restart
    world.rec = make_reconciler(world.config, world.ray, world.clock)
    samples = world.tick("r1")
    assert value(samples, "servesync_desired_revision_changed_timestamp_seconds") == changed
    assert value(samples, "servesync_last_converged_timestamp_seconds") == \
        world.clock.now.timestamp()
    assert value(samples, "servesync_ticks_total", outcome="converged") == 1
    samples = world.tick("r2")
    assert value(samples, "servesync_desired_revision_changed_timestamp_seconds") == \
        world.clock.now.timestamp()
    assert value(samples, "servesync_desired_revision_info", revision="r2") == 1
    assert ("servesync_desired_revision_info", (("revision", "r1"),)) not in samples


def test_no_path_or_secret_in_the_file(world: World, tmp_path: Path) -> None:
    world.write("a")
    world.converge()
    text = (Path(world.config.status_dir) / METRICS_FILE).read_text()
    assert str(tmp_path) not in text and "/private" not in text and "hf/tiny" not in text


def test_a_removed_model_leaves_the_per_model_series(world: World) -> None:
    world.write("a")
    world.write("b")
    world.converge()
    (world.root / "users" / "alice" / "b.yaml").unlink()
    for _ in range(6):
        samples = world.tick()
    assert len({dict(k[1])["model"] for k in samples
                if k[0] == "servesync_model_replicas_desired"}) == 1


def test_five_thousand_models_are_written_quickly(tmp_path: Path) -> None:
    """Cardinality: two series a model. Measured: see the README."""
    records = {}
    apps = {}
    for i in range(5000):
        rec = replace(record(spec(f"m{i}", user=f"user{i % 500}")), model_key=f"k{i}",
                      app_name=f"k{i}")  # the 4 hex digits of a real key may collide
        records[rec.model_key] = rec
        apps[rec.app_name] = AppObservation(rec.app_name, AppStatus.RUNNING, "", 1)
    metrics = Metrics(tmp_path)
    report = TickReport(tick=1, outcome="converged", duration_s=1.0, records=records,
                        desired=DesiredState("r1", ()), observed=Observed(apps), revision="r1",
                        now=at(0))
    started = time.monotonic()
    metrics.update(report)
    metrics.write()
    took = time.monotonic() - started
    samples = read(tmp_path)
    assert sum(1 for k in samples if k[0] == "servesync_model_replicas_running") == 5000
    assert value(samples, "servesync_replicas_running") == 5000
    size = sum((tmp_path / models_metrics_file(n)).stat().st_size
               for n in range(MODEL_SHARDS))
    print(f"5,000 models: update+write {took:.3f} s, {size / 1e6:.2f} MB")
    assert took < 5.0


def test_stopped_models_ask_for_no_replicas(tmp_path: Path) -> None:
    rec = replace(record(spec("a", num_replicas=3)), state=State.STOPPED, enabled=False)
    metrics = Metrics(tmp_path)
    metrics.update(TickReport(tick=1, outcome="converged", duration_s=0.1,
                              records={rec.model_key: rec}, desired=DesiredState("r", ()),
                              observed=Observed(), revision="r", now=at(0)))
    metrics.write()
    samples = read(tmp_path)
    assert value(samples, "servesync_model_replicas_desired", user="alice",
                 model=rec.public_id) == 0
    assert value(samples, "servesync_models", state="STOPPED") == 1


def test_per_model_series_are_rewritten_only_when_they_change(world: World) -> None:
    """An idle tick rewrites metrics.prom (its last-tick time) but no
    per-model file; a scale rewrites only the shard of its user; every file
    is 0644."""
    status = Path(world.config.status_dir)
    world.write("a")
    world.converge()
    alice = models_metrics_file(shard_of("alice"))

    def identities() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in status.glob("*.prom")}

    before = identities()
    assert len(before) == 1 + MODEL_SHARDS
    world.tick()
    after = identities()
    assert after[METRICS_FILE] != before[METRICS_FILE]
    assert {k: v for k, v in after.items() if k != METRICS_FILE} == \
        {k: v for k, v in before.items() if k != METRICS_FILE}
    world.write("a", replicas=3)
    samples = world.tick()
    changed = {k for k, v in identities().items() if after[k] != v}
    assert changed == {METRICS_FILE, alice}
    (model,) = world.rec.store.models().values()
    assert value(samples, "servesync_model_replicas_desired", user="alice",
                 model=model.public_id) == 3
    for p in status.glob("*.prom"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
