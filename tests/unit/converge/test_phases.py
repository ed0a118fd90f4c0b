"""A tick's writes come in phases: one store write per phase, the deploys of a
tick written ahead of their one batch call to Ray, and nothing written at all
(store or status files) by an idle tick. A real store, real status files,
the fake Ray."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from servesync.config import Config
from servesync.converge.ports import ModelDeploy
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError, TransientError
from servesync.state.store import Store
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import at

MODEL = "model_id: {name}\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
NAMES = ("a", "b", "c")


@pytest.fixture
def snap(cpu_config: Config, desired_tree: Path) -> Snapshot:
    for name in NAMES:
        (desired_tree / "users" / "alice" / f"{name}.yaml").write_text(MODEL.format(name=name))
    return Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=())


def reconciler(config: Config, ray: FakeRay) -> Reconciler:
    return make_reconciler(config, ray, FakeClock(at(0), step_s=5))


def store_of(rec: Reconciler) -> Store:
    assert isinstance(rec.store, Store)
    return rec.store


def status_files(config: Config) -> dict[Path, tuple[int, int]]:
    """The status files users read, with their identity. ``metrics.prom`` is
    left out: it is rewritten every tick by design (its last-tick time and tick
    counters are the daemon's liveness signal); ``metrics-models-<n>.prom`` are
    not: each is rewritten only when one of its models' numbers change."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in Path(config.status_dir).rglob("*")
            if p.is_file() and p.name != "metrics.prom"}


def test_a_first_tick_is_two_writes_and_one_batch(cpu_config: Config, snap: Snapshot) -> None:
    ray = FakeRay()
    rec = reconciler(cpu_config, ray)
    rec.tick(snap)
    assert ray.batches == [3]  # one run_many for the three
    assert store_of(rec).disk_writes == 2  # written ahead; then confirmed (with meta)
    models = rec.store.models().values()
    assert all(m.state is State.DEPLOYING and m.submitted_at for m in models)


def test_an_idle_tick_writes_no_file(cpu_config: Config, snap: Snapshot) -> None:
    ray = FakeRay()
    rec = reconciler(cpu_config, ray)
    for _ in range(8):
        result = rec.tick(snap)
        ray.settle()
        if result.converged and not result.actions:
            break
    assert result.converged
    writes, files = store_of(rec).disk_writes, status_files(cpu_config)
    # index.json, three model files, 16 metrics-models-<n>.prom; the status page:
    # index.html, three model pages, page.css, page.js
    assert len(files) == 26
    for _ in range(3):
        assert rec.tick(snap).actions == ()
    assert store_of(rec).disk_writes == writes
    assert status_files(cpu_config) == files  # not one status file rewritten


def test_bookkeeping_of_many_models_is_one_write(cpu_config: Config, desired_tree: Path) -> None:
    for name in NAMES:
        (desired_tree / "users" / "alice" / f"{name}.yaml").write_text(
            MODEL.format(name=name) + "enabled: false\n")
    rec = reconciler(cpu_config, FakeRay())
    result = rec.tick(Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=()))
    assert len(result.actions) == 3  # three admitted STOPPED: RecordOnly each
    assert store_of(rec).disk_writes == 1
    assert {m.state for m in rec.store.models().values()} == {State.STOPPED}


class CrashingRay(FakeRay):
    """The process dies inside the batch call, before Ray took anything."""

    def deploy_models(self, batch: Sequence[ModelDeploy]
                      ) -> Mapping[str, TransientError | PermanentError]:
        raise KeyboardInterrupt("killed between the write-ahead and run_many")


def test_a_crash_before_run_many_leaves_records_that_are_resubmitted(
        cpu_config: Config, snap: Snapshot) -> None:
    with pytest.raises(KeyboardInterrupt):
        reconciler(cpu_config, CrashingRay()).tick(snap)
    on_disk = Store(Path(cpu_config.state_dir)).models()  # what a restarted daemon reads
    assert len(on_disk) == 3
    assert all(m.state is State.DEPLOYING and m.submitted_at is None for m in on_disk.values())
    ray = FakeRay()
    rec = reconciler(cpu_config, ray)  # the restart
    result = rec.tick(snap)
    assert {str(a.kind) for a in result.actions} == {"retry"}
    assert ray.batches == [3] and sorted(ray.apps) == sorted(on_disk)  # same names
    assert all(m.submitted_at for m in rec.store.models().values())


class RefusingRay(FakeRay):
    """Ray Serve LLM refuses to build one model's config (pydantic, a ValueError)."""

    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None:
        if spec.suffix == "b":
            raise PermanentError("cannot build: ValidationError: max_model_len")
        super().deploy_model(spec, app_name=app_name, public_id=public_id)


def test_a_build_error_fails_only_its_model(cpu_config: Config, snap: Snapshot) -> None:
    ray = RefusingRay()
    rec = reconciler(cpu_config, ray)
    result = rec.tick(snap)
    states = {m.suffix: m.state for m in rec.store.models().values()}
    assert states == {"a": State.DEPLOYING, "b": State.FAILED, "c": State.DEPLOYING}
    assert ray.batches == [3] and len(ray.apps) == 2
    assert [e for e in result.errors if "ValidationError" in e]
    assert store_of(rec).disk_writes == 2


def test_a_transient_batch_error_queues_every_model(cpu_config: Config, snap: Snapshot) -> None:
    class DownRay(FakeRay):
        def deploy_models(self, batch: Sequence[ModelDeploy]
                          ) -> Mapping[str, TransientError | PermanentError]:
            raise TransientError("GCS unavailable")

    rec = reconciler(cpu_config, DownRay())
    rec.tick(snap)
    models = rec.store.models().values()
    assert {m.state for m in models} == {State.QUEUED}
    assert all(m.retry_at for m in models)
