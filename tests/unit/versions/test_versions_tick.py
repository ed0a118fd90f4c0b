"""Weighted versions through the tick (fake Ray, real validation, store and
status files): each version its own application and record under one public
id; a weight change is a gateway update only; one version changed redeploys
only its application; a version that never runs gets no traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servesync import schemas
from servesync.config import Config
from servesync.converge.observed import AppStatus
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.state.store import Store
from tests.support.clock import FakeClock, at
from tests.support.fakeray import FakeRay, make_reconciler

FILE = """model_id: m
cpus_per_replica: 1
aliases: [chat]
versions:
  - name: stable
    model_source: $HOME/common/hf/tiny
    weight: {a}
  - name: canary
    model_source: $HOME/common/hf/{b}
    weight: {b_weight}
{extra}"""


def write(root: Path, a: int = 80, b_weight: int = 20, b: str = "tiny2", extra: str = "") -> None:
    (root / "users" / "alice" / "m.yaml").write_text(
        FILE.format(a=a, b_weight=b_weight, b=b, extra=extra))


def ticking(config: Config, tree: Path, clock: FakeClock | None = None
            ) -> tuple[Reconciler, FakeRay, Snapshot]:
    """A reconciler of ``tree`` on a fake Ray and clock (5 s a reading), and
    the snapshot it ticks on."""
    ray = FakeRay()
    rec = make_reconciler(config, ray, clock or FakeClock(at(0), step_s=5))
    return rec, ray, Snapshot(root=tree, revision="r1", error=None, watch_paths=())


def settle(rec: Reconciler, ray: FakeRay, snap: Snapshot, *, fail: str | None = None) -> None:
    """Tick until nothing is left to do; ``fail``: a version whose application
    Ray fails to start (DEPLOY_FAILED after each tick)."""
    for _ in range(12):
        result = rec.tick(snap)
        ray.settle()
        for name in list(ray.apps):
            if fail is not None and name.endswith(f".{fail}"):
                ray.apps[name] = AppStatus.DEPLOY_FAILED
        if result.settled and not result.actions:
            return
    raise AssertionError(f"not settled: {rec.store.models()}")


def status(config: Config, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (Path(config.status_dir) / "models" / f"{key}.json").read_text())
    schemas.validator("status-model").validate(doc)
    return doc


def by_version(rec: Reconciler) -> dict[str | None, Any]:
    return {r.version: r for r in rec.store.models().values()}


def test_versions_weights_and_one_version_changed(cpu_config: Config, desired_tree: Path,
                                                  storage_root: Path) -> None:
    (storage_root / "hf" / "tiny2").mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree)
    settle(rec, ray, snap)
    versions = by_version(rec)
    stable, canary = versions["stable"], versions["canary"]
    assert stable.public_id == canary.public_id == "alice-" + stable.prefix[6:] + "-m"
    stem = stable.model_key.rsplit(".", 1)[0]
    assert (stable.app_name, canary.app_name) == (f"{stem}.stable", f"{stem}.canary")
    assert stable.state is canary.state is State.RUNNING
    assert (stable.routed_weight, canary.routed_weight) == (80, 20)
    gateway = rec.store.gateway()
    assert gateway.members == tuple(sorted(((stable.public_id, stable.app_name),
                                            (canary.public_id, canary.app_name))))
    assert sorted(ray.weights) == [(canary.app_name, "canary", 20),
                                   (stable.app_name, "stable", 80)]
    assert ray.aliases == (("alice-chat", stable.public_id),)  # the model's name, once
    doc = status(cpu_config, stem)
    assert doc["state"] == "RUNNING" and doc["endpoint"]["aliases"] == ["alice-chat"]
    assert [(v["name"], v["state"], v["weight_asked"], v["weight_in_effect"], v["application"])
            for v in doc["versions"]] == [("canary", "RUNNING", 20, 20, canary.app_name),
                                          ("stable", "RUNNING", 80, 80, stable.app_name)]
    assert not (Path(cpu_config.status_dir) / "models" / f"{stable.model_key}.json").exists()
    index = json.loads((Path(cpu_config.status_dir) / "index.json").read_text())
    assert [m["model_key"] for m in index["models"]] == [stem]  # listed once

    # weights only: one gateway call, no deploy, the same spec hashes
    ray.calls.clear()
    write(desired_tree, a=50, b_weight=50)
    settle(rec, ray, snap)
    assert [c[0] for c in ray.calls] == ["gateway"]
    after = by_version(rec)
    assert after["stable"].spec_hash == stable.spec_hash
    assert after["canary"].spec_hash == canary.spec_hash
    assert (after["stable"].routed_weight, after["canary"].routed_weight) == (50, 50)
    assert [v["weight_in_effect"] for v in status(cpu_config, stem)["versions"]] == [50, 50]

    # one version's source changed: only its application is redeployed
    (storage_root / "hf" / "tiny3").mkdir()
    ray.calls.clear()
    deployed: list[str] = []
    plain_deploy = ray.deploy_model

    def deploy_model(spec: Any, *, app_name: str, public_id: str) -> None:
        deployed.append(app_name)
        plain_deploy(spec, app_name=app_name, public_id=public_id)

    ray.deploy_model = deploy_model  # type: ignore[method-assign]
    write(desired_tree, a=50, b_weight=50, b="tiny3")
    settle(rec, ray, snap)
    assert deployed == [canary.app_name]
    assert [c for c in ray.calls if c[0] != "gateway"] == [("deploy", canary.public_id)]
    assert by_version(rec)["stable"].spec_hash == stable.spec_hash


def test_a_version_that_fails_gets_no_traffic(cpu_config: Config, desired_tree: Path,
                                              storage_root: Path) -> None:
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree, b="missing")  # a path with no model: Ray fails to start it
    settle(rec, ray, snap, fail="canary")
    versions = by_version(rec)
    assert versions["canary"].state is State.FAILED
    assert versions["stable"].state is State.RUNNING
    gateway = rec.store.gateway()
    assert [app for _, app in gateway.members] == [versions["stable"].app_name]
    assert gateway.weights == ((versions["stable"].app_name, "stable", 100),)
    doc = status(cpu_config, versions["stable"].model_key.rsplit(".", 1)[0])
    assert doc["state"] == "DEGRADED"  # a version asking 20 does not serve
    assert [(v["name"], v["weight_in_effect"]) for v in doc["versions"]] == [
        ("canary", 0), ("stable", 100)]
    assert doc["versions"][0]["error"]


def test_a_restart_reads_the_versions_back(cpu_config: Config, desired_tree: Path,
                                           storage_root: Path) -> None:
    """The records (routed_weight) and the gateway's weights survive the state file."""
    (storage_root / "hf" / "tiny2").mkdir()
    clock = FakeClock(at(0), step_s=5)
    rec, ray, snap = ticking(cpu_config, desired_tree, clock)
    write(desired_tree)
    settle(rec, ray, snap)
    before = rec.store.models()
    store = Store(Path(cpu_config.state_dir))
    assert store.models() == before
    assert store.gateway() == rec.store.gateway()
    again = make_reconciler(cpu_config, ray, clock)
    ray.calls.clear()
    again.tick(snap)
    assert ray.calls == []  # nothing to do after a restart


def test_a_version_whose_source_turns_forbidden_is_stopped_alone(
        cpu_config: Config, desired_tree: Path, storage_root: Path) -> None:
    """Its folder swapped for a symlink out of the roots: the file's 403 holds
    the model, and the version reading the refused place is stopped
    (``recheck_held``); the other version keeps serving, alone at 100."""
    canary_dir = storage_root / "hf" / "tiny2"
    canary_dir.mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree)
    settle(rec, ray, snap)
    canary_dir.rmdir()
    canary_dir.symlink_to("/etc")
    settle(rec, ray, snap)
    versions = by_version(rec)
    assert versions["canary"].state is State.STOPPED
    assert "model_source" in (versions["canary"].error_summary or "")
    assert versions["stable"].state is State.RUNNING
    assert rec.store.gateway().weights == ((versions["stable"].app_name, "stable", 100),)
    doc = status(cpu_config, versions["stable"].model_key.rsplit(".", 1)[0])
    assert [e["code"] for e in doc["validation_errors"]] == [403]


def test_a_plain_model_turned_into_versions_keeps_its_name_and_never_goes_dark(
        cpu_config: Config, desired_tree: Path, storage_root: Path) -> None:
    """The plain record keeps serving (and routed) until a version is RUNNING,
    then it is deleted; the versions take its public id. And back."""
    (storage_root / "hf" / "tiny2").mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    path = desired_tree / "users" / "alice" / "m.yaml"
    path.write_text("model_id: m\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n")
    settle(rec, ray, snap)
    (plain,) = rec.store.models().values()
    write(desired_tree)
    for _ in range(12):  # every tick, the name is routed by someone
        result = rec.tick(snap)
        assert [p for p, _ in rec.store.gateway().members] in (
            [plain.public_id], [plain.public_id] * 2, [plain.public_id] * 3)
        ray.settle()
        if result.settled and not result.actions:
            break
    versions = by_version(rec)
    assert set(versions) == {"stable", "canary"}  # the plain record is gone
    assert {r.public_id for r in versions.values()} == {plain.public_id}
    assert plain.app_name not in ray.apps

    path.write_text("model_id: m\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n")
    settle(rec, ray, snap)
    (back,) = rec.store.models().values()
    assert back.version is None and back.public_id == plain.public_id


def test_metrics_have_a_series_per_version(cpu_config: Config, desired_tree: Path,
                                          storage_root: Path) -> None:
    (storage_root / "hf" / "tiny2").mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree)
    settle(rec, ray, snap)
    public_id = by_version(rec)["stable"].public_id
    text = "".join(p.read_text() for p in Path(cpu_config.status_dir).glob("metrics-models-*"))
    for version in ("stable", "canary"):
        assert f'servesync_model_replicas_desired{{model="{public_id}@{version}",user="alice"}}' \
            in text


def test_weights_in_effect_never_give_a_version_at_0_a_share() -> None:
    from servesync.converge.weighting import in_effect

    assert in_effect([("x", "a", 1), ("y", "b", 0), ("z", "c", 0)]) == (
        ("x", "a", 100), ("y", "b", 0), ("z", "c", 0))
    assert in_effect([("x", "a", 0), ("y", "b", 0)]) == (("x", "a", 0), ("y", "b", 0))
    assert in_effect([("x", "a", 1), ("y", "b", 1), ("z", "c", 1), ("w", "d", 0)]) == (
        ("x", "a", 34), ("y", "b", 33), ("z", "c", 33), ("w", "d", 0))
    assert in_effect([]) == ()


def test_a_version_at_0_does_not_take_the_share_of_one_that_fails(
        cpu_config: Config, desired_tree: Path, storage_root: Path) -> None:
    """stable asks 100 and fails; canary asks 0 and serves: the gateway keeps
    the route (pins work) with canary at 0, and the status says why."""
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree, a=100, b_weight=0)
    settle(rec, ray, snap, fail="stable")
    versions = by_version(rec)
    assert versions["stable"].state is State.FAILED
    assert versions["canary"].state is State.RUNNING
    gateway = rec.store.gateway()
    assert [app for _, app in gateway.members] == [versions["canary"].app_name]
    assert gateway.weights == ((versions["canary"].app_name, "canary", 0),)
    doc = status(cpu_config, versions["canary"].model_key.rsplit(".", 1)[0])
    assert doc["state"] == "DEGRADED"
    assert [(v["name"], v["weight_in_effect"]) for v in doc["versions"]] == [
        ("canary", 0), ("stable", 0)]
    assert "no unpinned requests" in doc["error_summary"]
