"""A tick against one tenant's hostile env values and a failing publisher
(review 2, findings 1 and 3): the status files keep being written for every
tenant, a publish failure never stops the tick's result and metrics, and
Ray's application message is scrubbed before it enters a record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servesync.config import Config, ServingConfig
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.ports import TickReport
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from tests.support.clock import FakeClock, at
from tests.support.fakeray import FakeRay, make_reconciler

HEAD = "model_id: {id}\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
OWN = "tenant-own-value-1"
OPERATOR = "operator-value-99"
PASSWORD = "pa55w0rd-xyz"


def write(tree: Path, user: str, model_id: str, extra: str = "") -> None:
    (tree / "users" / user).mkdir(parents=True, exist_ok=True)
    (tree / "users" / user / f"{model_id}.yaml").write_text(HEAD.format(id=model_id) + extra)


def ticks(rec: Reconciler, ray: FakeRay, snap: Snapshot, n: int) -> None:
    for _ in range(n):
        rec.tick(snap)
        ray.settle()


def states(rec: Reconciler) -> dict[str, State]:
    return {r.suffix: r.state for r in rec.store.models().values()}


def test_an_env_value_naming_a_status_field_stalls_no_tick(
        cpu_config: Config, desired_tree: Path) -> None:
    """bob's ``env: {OMP_NUM_THREADS: model_key}``: every tick still ends, and
    alice's next model is deployed, routed and published."""
    write(desired_tree, "alice", "chat")
    ray = FakeRay()
    rec = make_reconciler(cpu_config, ray, FakeClock(at(0), step_s=5))
    ticks(rec, ray, Snapshot(desired_tree, "r1"), 6)
    write(desired_tree, "bob", "x", "env: {OMP_NUM_THREADS: model_key}\n")
    write(desired_tree, "alice", "new")
    snap = Snapshot(desired_tree, "r2")
    results = []
    for _ in range(8):
        results.append(rec.tick(snap))
        ray.settle()
    assert not any(r.errors for r in results)
    assert results[-1].converged
    assert states(rec) == {"chat": State.RUNNING, "new": State.RUNNING, "x": State.RUNNING}
    status = Path(cpu_config.status_dir)
    keys = {r.model_key for r in rec.store.models().values()}
    assert {p.stem for p in (status / "models").glob("*.json")} == keys
    assert {p.stem for p in (status / "models").glob("*.html")} == keys
    index = json.loads((status / "index.json").read_text())
    assert index["revision"] == "r2" and {m["model_key"] for m in index["models"]} == keys


class FailingPublisher:
    """Raises in ``publish``; records what ``publish_metrics`` got."""

    def __init__(self) -> None:
        self.reports: list[TickReport] = []

    def publish(self, **kw: Any) -> None:
        raise KeyError("model_key")

    def publish_metrics(self, report: TickReport) -> None:
        self.reports.append(report)


def test_a_publish_failure_never_stops_the_tick(cpu_config: Config, desired_tree: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    write(desired_tree, "alice", "chat")
    ray, publisher = FakeRay(), FailingPublisher()
    rec = make_reconciler(cpu_config, ray, FakeClock(at(0), step_s=5))
    rec.publisher = publisher
    result = rec.tick(Snapshot(desired_tree, "r1"))
    assert result.requeue_after_s is not None  # the deploy is looked at again
    assert [e for e in result.errors if e.startswith("status files: KeyError")]
    assert [r.outcome for r in publisher.reports] == ["error"]
    assert "the status files could not be written" in caplog.text
    assert states(rec) == {"chat": State.DEPLOYING}


class QuotingRay(FakeRay):
    """A failed or unhealthy application's message quotes its config."""

    def observe(self) -> Observed:
        observed = super().observe()
        message = (f"input_value={{'V': '{OWN}', 'B': '{OPERATOR}'}} "
                   f"from https://bot:{PASSWORD}@git.example/x")
        return Observed({n: AppObservation(n, o.status, message, o.running_replicas)
                         if o.status in (AppStatus.DEPLOY_FAILED, AppStatus.UNHEALTHY) else o
                         for n, o in observed.apps.items()})


@pytest.mark.parametrize(("status", "state"), [(AppStatus.DEPLOY_FAILED, State.FAILED),
                                               (AppStatus.UNHEALTHY, State.DEGRADED)])
def test_rays_message_is_scrubbed_before_it_enters_the_record(
        tmp_path: Path, storage_root: Path, desired_tree: Path,
        status: AppStatus, state: State) -> None:
    config = Config(state_dir=str(tmp_path / "state"), status_dir=str(tmp_path / "status"),
                    storage_root=str(storage_root),
                    serving=ServingConfig(accelerator_type="cpu", replica_env={"K": OPERATOR}))
    write(desired_tree, "alice", "chat", f"env: {{VLLM_LOGGING_LEVEL: {OWN}}}\n")
    ray, clock = QuotingRay(), FakeClock(at(0), step_s=5)
    rec = make_reconciler(config, ray, clock)
    snap = Snapshot(desired_tree, "r1")
    ticks(rec, ray, snap, 6)
    (model,) = rec.store.models().values()
    ray.apps[model.app_name] = status
    for _ in range(4):
        clock.advance(60)  # past the settle window and the DEGRADED grace
        rec.tick(snap)
    (model,) = rec.store.models().values()
    assert model.state is state
    shown = json.dumps([model.error_summary, [e.to_json() for e in model.events]])
    assert "input_value={'V': '<redacted>', 'B': '<redacted>'} from https://***@" in shown
    for secret in (OWN, OPERATOR, PASSWORD):
        assert secret not in shown
    assert OWN in (tmp_path / "state" / "state.json").read_text()  # the planner's copy
