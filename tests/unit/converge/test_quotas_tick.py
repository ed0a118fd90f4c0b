"""Quotas through whole ticks: the reconciler, the fake Ray, a real store and real
status files. A refused model is never deployed, an admitted one refused an update
keeps serving its last good version, other users never notice, and the status files
and metrics say why."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from jsonschema import Draft202012Validator

from servesync import schemas
from servesync.config import Config, Quota, Quotas, ServingConfig
from servesync.converge.reconciling import Reconciler, admissions
from servesync.converge.records import ModelRecord, State
from servesync.desired import quotas
from servesync.desired.sources import Snapshot
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import at
from tests.unit.status.test_metrics import read, value


def model(suffix: str, replicas: int) -> str:
    return (f"model_id: {suffix}\nmodel_source: $HOME/common/hf/tiny\n"
            f"num_replicas: {replicas}\ngpus_per_replica: 1\n")


class Cluster:
    """A GPU cluster config with quotas, a desired tree, the fake Ray and a reconciler."""

    def __init__(self, tmp_path: Path, storage_root: Path, desired_tree: Path,
                 quotas: Quotas) -> None:
        self.root = desired_tree
        self.config = Config(state_dir=str(tmp_path / "state"),
                             status_dir=str(tmp_path / "status"),
                             storage_root=str(storage_root),
                             serving=ServingConfig(accelerator_type="gpu", quotas=quotas))
        self.ray = FakeRay()
        self.clock = FakeClock(at(0), step_s=5)  # every reading 5 s on: settle windows pass
        self.rec: Reconciler = make_reconciler(self.config, self.ray, self.clock)
        self.revision = 0

    def write(self, rel: str, text: str | None) -> None:
        path = self.root / "users" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            path.unlink()
        else:
            path.write_text(text)

    def commit(self) -> Snapshot:
        self.revision += 1
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        return Snapshot(root=self.root, revision=f"r{self.revision}", error=None, watch_paths=())

    def converge(self) -> None:
        for _ in range(8):
            result = self.rec.tick(self.snapshot())
            self.ray.settle()
            if result.settled and not result.actions:
                return
        raise AssertionError(f"not settled: {self.rec.store.models()}")

    def records(self) -> dict[str, ModelRecord]:
        return {r.suffix: r for r in self.rec.store.models().values()}

    def index(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (Path(self.config.status_dir) / "index.json").read_text())
        return data

    def status(self, suffix: str) -> dict[str, object]:
        key = self.records()[suffix].model_key
        data: dict[str, object] = json.loads(
            (Path(self.config.status_dir) / "models" / f"{key}.json").read_text())
        return data


def test_over_quota_models_are_refused_and_the_rest_keep_converging(
        tmp_path: Path, storage_root: Path, desired_tree: Path) -> None:
    c = Cluster(tmp_path, storage_root, desired_tree,
                Quotas(default=Quota(gpus=3), users={"bob": Quota(gpus=8)}))
    c.write("alice/a.yaml", model("a", 2))
    c.write("bob/x.yaml", model("x", 4))  # over the default, within bob's own quota
    c.commit()
    c.converge()
    assert {s: r.state for s, r in c.records().items()} == {"a": State.RUNNING,
                                                           "x": State.RUNNING}
    bob_before = c.records()["x"]

    # alice adds b: 2 GPUs, 1 left. Refused; a and bob untouched.
    c.write("alice/b.yaml", model("b", 2))
    c.commit()
    c.ray.calls.clear()
    c.converge()
    assert set(c.records()) == {"a", "x"} and c.ray.calls == []
    (error,) = c.index()["errors"]  # type: ignore[misc]
    assert error == {"path": "users/alice/b.yaml", "line": 4, "code": 422,
                     "pointer": "/gpus_per_replica",
                     "message": "over user 'alice''s GPU quota (serving.quotas): asks 2 GPUs "
                                "(2 replicas x 1); 1 of 3 left for it; not deployed"}
    samples = read(c.config.status_dir)
    assert value(samples, "servesync_validation_errors", code="422") == 1
    assert value(samples, "servesync_ticks_total", outcome="degraded") >= 1

    # a grows to 3 and b goes: fits, a is updated
    c.write("alice/b.yaml", None)
    c.write("alice/a.yaml", model("a", 3))
    c.commit()
    c.converge()
    a = c.records()["a"]
    assert a.state is State.RUNNING and a.spec["num_replicas"] == 3
    assert c.index()["errors"] == [] and c.status("a")["validation_errors"] == []

    # a grows to 4: refused, a keeps serving its 3 replicas, its status file says why
    c.write("alice/a.yaml", model("a", 4))
    c.commit()
    c.ray.calls.clear()
    c.converge()
    assert c.ray.calls == []
    assert c.records()["a"] == a  # held: not a field changed
    status = c.status("a")
    Draft202012Validator(schemas.load("status-model")).validate(status)
    assert status["state"] == "RUNNING" and status["num_replicas"] == 3
    (error,) = status["validation_errors"]  # type: ignore[misc]
    assert (error["code"], error["line"], error["pointer"]) == (422, 4, "/gpus_per_replica")
    assert "asks 4 GPUs (4 replicas x 1); 3 of 3 left for it; its last good version keeps " \
        "serving" in error["message"]
    assert c.records()["x"] == bob_before  # the other user never noticed

    # idle ticks: the same verdict, nothing to do, nothing written
    writes = c.rec.store.disk_writes
    for _ in range(3):
        result = c.rec.tick(c.snapshot())
        assert result.actions == () and len(result.errors) == 1
    assert c.rec.store.disk_writes == writes


def test_a_lowered_quota_keeps_what_runs_and_refuses_new_models(
        tmp_path: Path, storage_root: Path, desired_tree: Path) -> None:
    c = Cluster(tmp_path, storage_root, desired_tree, Quotas(default=Quota(gpus=4)))
    c.write("alice/a.yaml", model("a", 2))
    c.write("alice/b.yaml", model("b", 2))
    c.commit()
    c.converge()
    before = c.records()
    assert {r.state for r in before.values()} == {State.RUNNING}

    # the operator lowers the quota (SIGHUP builds a new reconciler on the same state)
    c.config = replace(c.config, serving=replace(c.config.serving,
                                                 quotas=Quotas(default=Quota(gpus=1))))
    c.rec = make_reconciler(c.config, c.ray, c.clock)
    c.converge()
    assert c.records() == before and c.index()["errors"] == []

    c.write("alice/c.yaml", model("c", 1))
    c.write("alice/b.yaml", model("b", 1))  # a scale-down still applies
    c.commit()
    c.converge()
    assert set(c.records()) == {"a", "b"}
    assert c.records()["b"].spec["num_replicas"] == 1
    assert [e["path"] for e in c.index()["errors"]] == ["users/alice/c.yaml"]  # type: ignore[attr-defined]


def test_a_reshape_into_versions_counts_the_plain_model_until_it_is_deleted(
        tmp_path: Path, storage_root: Path, desired_tree: Path) -> None:
    """The reviewer's bypass: 4 GPUs of 4 as a plain model, then two versions of
    2 GPUs each. The plain model keeps serving until a version does, so the
    versions are refused (nothing deployed, the plain one serves on); versions
    that fit beside it roll in, and once it is deleted its room is theirs."""
    from tests.unit.desired.test_quotas import versions

    c = Cluster(tmp_path, storage_root, desired_tree, Quotas(default=Quota(gpus=4)))
    c.write("alice/m.yaml", model("m", 1).replace("gpus_per_replica: 1", "gpus_per_replica: 4"))
    c.commit()
    c.converge()
    plain = c.records()["m"]
    c.write("alice/m.yaml", versions("m", gpus=2))
    c.commit()
    c.ray.calls.clear()
    c.converge()
    assert c.records() == {"m": plain} and c.ray.calls == []
    (error,) = c.index()["errors"]  # type: ignore[misc]
    assert error["code"] == 422 and "0 of 4 left" in error["message"]  # type: ignore[index]

    c.write("alice/m.yaml", model("m", 1).replace("gpus_per_replica: 1", "gpus_per_replica: 2"))
    c.commit()
    c.converge()  # the plain model shrinks to 2 GPUs
    c.write("alice/m.yaml", versions("m", gpus=1))
    c.commit()
    c.converge()  # 2 + 1 + 1: fits while the plain one still serves; then it is deleted
    c.converge()
    assert {s: r.state for s, r in c.records().items()} == {"m@a": State.RUNNING,
                                                           "m@b": State.RUNNING}
    c.write("alice/m.yaml", versions("m", gpus=2))
    c.commit()
    c.converge()
    assert {s: r.spec["gpus_per_replica"] for s, r in c.records().items()} == {"m@a": 2,
                                                                               "m@b": 2}
    assert c.index()["errors"] == []


def test_an_idle_tick_counts_no_quota_and_a_commit_only_its_user(
        tmp_path: Path, storage_root: Path, desired_tree: Path) -> None:
    """The reconciler keeps the quota pass's cache (desired/quotas.QuotaCache)
    and hands it the same ``Admitted`` for a record that did not change."""
    c = Cluster(tmp_path, storage_root, desired_tree, Quotas(default=Quota(gpus=3)))
    c.write("alice/a.yaml", model("a", 2))
    c.write("bob/x.yaml", model("x", 2))
    c.commit()
    c.converge()
    counted = c.rec.quota_cache.counted
    c.rec.tick(c.snapshot())
    assert c.rec.quota_cache.counted == counted  # nothing changed: nobody counted
    c.write("alice/b.yaml", model("b", 2))  # over alice's quota
    c.commit()
    c.rec.tick(c.snapshot())
    assert c.rec.quota_cache.counted == counted + 1  # alice only
    assert [e["path"] for e in c.index()["errors"]] == ["users/alice/b.yaml"]  # type: ignore


def test_admissions_reuses_the_admitted_of_an_unchanged_record(
        tmp_path: Path, storage_root: Path, desired_tree: Path) -> None:
    c = Cluster(tmp_path, storage_root, desired_tree, Quotas(default=Quota(gpus=3)))
    c.write("alice/a.yaml", model("a", 1))
    c.write("alice/b.yaml", model("b", 1))
    c.commit()
    c.converge()
    memo: dict[str, tuple[ModelRecord, quotas.Admitted]] = {}
    records = c.rec.store.models()
    first = admissions(records.values(), memo)
    a, b = (records[k] for k in sorted(records))
    stopped = replace(b, state=State.STOPPED)
    second = admissions([a, stopped], memo)
    assert second[0] is first[0] and second[1] is not first[1]
    assert second == admissions([a, stopped])  # the same values as without the memo
    assert not second[1].running
    assert admissions([a], memo) == (first[0],) and set(memo) == {a.model_key}
