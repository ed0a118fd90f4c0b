"""The tick executor against a fake applier, a real store and real files.

The fake stands in for Ray only here; the real Ray Serve LLM path is proven
by tests/e2e. What is checked: a converged tick calls no Ray mutation, a
restart (new Reconciler on the same state) redeploys nothing, transient and
permanent errors become QUEUED / FAILED, a bad file keeps the model serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servesync.config import Config
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.errors import PermanentError, TransientError
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import at


def stepping_clock() -> FakeClock:
    return FakeClock(at(0), step_s=5)  # every reading is 5 s later: settle windows pass


MODEL = """\
model_id: {suffix}
model_source: $HOME/common/hf/tiny
num_replicas: {replicas}
cpus_per_replica: 1
"""


@pytest.fixture
def env(cpu_config: Config, desired_tree: Path) -> tuple[Config, Path]:
    return cpu_config, desired_tree


def write(root: Path, suffix: str, replicas: int | str = 1) -> None:
    text = MODEL.format(suffix=suffix, replicas=replicas)
    (root / "users" / "alice" / f"{suffix}.yaml").write_text(text)


make = make_reconciler


def started(config: Config, root: Path) -> tuple[Reconciler, FakeRay, Snapshot]:
    """A reconciler of ``root`` on a fake Ray and a stepping clock, and the
    snapshot it ticks on."""
    ray = FakeRay()
    snap = Snapshot(root=root, revision="r1", error=None, watch_paths=())
    return make(config, ray, stepping_clock()), ray, snap


def converge(rec: Reconciler, ray: FakeRay, snap: Snapshot, ticks: int = 6) -> None:
    for _ in range(ticks):
        result = rec.tick(snap)
        ray.settle()
        if result.converged:
            return
    raise AssertionError(f"not converged: {rec.store.models()}")


def test_converges_then_idle_ticks_call_no_mutation(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    rec, ray, snap = started(config, root)
    converge(rec, ray, snap)
    (model,) = rec.store.models().values()
    assert model.state is State.RUNNING and model.applied_revision == "r1"
    assert [str(e.kind) for e in model.events] == [
        "ADMITTED", "DEPLOY_REQUESTED", "SUBMITTED", "ROUTING", "RUNNING"]
    assert ray.calls == [("deploy", model.public_id), ("gateway", model.public_id)]
    ray.calls.clear()
    for _ in range(3):
        assert rec.tick(snap).actions == ()
    assert ray.calls == []
    index = json.loads((Path(config.status_dir) / "index.json").read_text())
    assert index["models"][0]["state"] == "RUNNING"
    assert index["revision"] == "r1"


def test_restart_adopts_without_redeploy(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    ray, clock = FakeRay(), stepping_clock()
    snap = Snapshot(root=root, revision="r1", error=None, watch_paths=())
    first = make(config, ray, clock)
    converge(first, ray, snap)
    first.store.close()
    ray.calls.clear()
    again = make(config, ray, clock)
    result = again.tick(snap)
    assert result.converged and result.actions == ()
    assert ray.calls == []


def test_bad_edit_keeps_last_good_and_reports(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    ray, clock = FakeRay(), stepping_clock()
    rec = make(config, ray, clock)
    converge(rec, ray, Snapshot(root=root, revision="r1", error=None, watch_paths=()))
    ray.calls.clear()
    write(root, "a", replicas="many")
    result = rec.tick(Snapshot(root=root, revision="r2", error=None, watch_paths=()))
    assert not result.converged and result.actions == ()
    assert ray.calls == []
    assert any("num_replicas" in e for e in result.errors)
    (model,) = rec.store.models().values()
    assert model.state is State.RUNNING and model.applied_revision == "r1"
    index = json.loads((Path(config.status_dir) / "index.json").read_text())
    assert index["revision"] == "r2"
    assert index["errors"], index


def test_transient_error_queues_then_retries(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    rec, ray, snap = started(config, root)
    ray.fail_next = TransientError("GCS unavailable")
    result = rec.tick(snap)
    (model,) = rec.store.models().values()
    assert model.state is State.QUEUED and model.attempts == 1
    assert not result.settled
    converge(rec, ray, snap)
    assert rec.store.models()[model.model_key].state is State.RUNNING


def test_permanent_error_fails_until_new_spec(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    ray, clock = FakeRay(), stepping_clock()
    rec = make(config, ray, clock)
    ray.fail_next = PermanentError("engine kwarg rejected")
    result = rec.tick(Snapshot(root=root, revision="r1", error=None, watch_paths=()))
    (model,) = rec.store.models().values()
    assert model.state is State.FAILED and model.error_summary == "engine kwarg rejected"
    assert result.errors == ("create: engine kwarg rejected",)
    again = rec.tick(Snapshot(root=root, revision="r1", error=None, watch_paths=()))
    assert again.actions == () and ray.calls == []
    assert again.settled and not again.converged
    write(root, "a", replicas=2)
    converge(rec, ray, Snapshot(root=root, revision="r2", error=None, watch_paths=()))
    assert rec.store.models()[model.model_key].state is State.RUNNING


def test_delete_leaves_gateway_before_app(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    write(root, "b")
    ray, clock = FakeRay(), stepping_clock()
    rec = make(config, ray, clock)
    converge(rec, ray, Snapshot(root=root, revision="r1", error=None, watch_paths=()))
    b = next(m for m in rec.store.models().values() if m.suffix == "b")
    ray.calls.clear()
    (root / "users" / "alice" / "b.yaml").unlink()
    converge(rec, ray, Snapshot(root=root, revision="r2", error=None, watch_paths=()))
    kinds = [c[0] for c in ray.calls]
    assert kinds.index("gateway") < kinds.index("delete")
    assert ("delete", b.app_name) in ray.calls
    assert b.public_id not in ray.calls[kinds.index("gateway")][1]
    assert [m.suffix for m in rec.store.models().values()] == ["a"]


def test_crash_during_submit_leaves_a_record_that_is_resubmitted(
        env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    rec, ray, snap = started(config, root)
    ray.fail_next = RuntimeError("process killed mid-submit")  # not a servesync error
    with pytest.raises(RuntimeError):
        rec.tick(snap)
    (model,) = rec.store.models().values()
    assert model.state is State.DEPLOYING and ray.apps == {}
    converge(rec, ray, snap, ticks=10)
    assert list(rec.store.models()) == [model.model_key]  # same name, no second admission
    assert ("deploy", model.public_id) in ray.calls


def test_drift_is_redeployed_with_a_drift_event(env: tuple[Config, Path]) -> None:
    config, root = env
    write(root, "a")
    rec, ray, snap = started(config, root)
    converge(rec, ray, snap)
    (model,) = rec.store.models().values()
    del ray.apps[model.app_name]  # someone ran `serve delete`
    converge(rec, ray, snap)
    kinds = [str(e.kind) for e in rec.store.models()[model.model_key].events]
    # its missing application left the gateway: RUNNING again once routed again
    assert kinds[-4:] == ["DRIFT", "SUBMITTED", "ROUTING", "RUNNING"]


def settle(rec: Reconciler, ray: FakeRay, snap: Snapshot, ticks: int = 8) -> None:
    """Tick until nothing is in flight (converged is out of reach while a file is invalid)."""
    for _ in range(ticks):
        result = rec.tick(snap)
        ray.settle()
        if result.settled:
            return
    raise AssertionError(f"not settled: {rec.store.models()}")


def status_of(config: Config, key: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (Path(config.status_dir) / "models" / f"{key}.json").read_text())
    return data


@pytest.mark.parametrize("break_the_file", [False, True], ids=["file valid", "file broken"])
def test_a_folder_that_gains_a_symlink_out_is_stopped_then_restored(
        env: tuple[Config, Path], break_the_file: bool) -> None:
    """A RUNNING model whose folder gets a symlink to another user's weights is stopped
    on the next tick (out of the gateway, then deleted), with the reason in its status
    file; restored when the symlink is gone. ``file broken``: its file also has a YAML
    error, so the model is held at last-known-good, and its recorded source is what is
    checked (a broken file must not shield a swapped folder)."""
    config, root = env
    storage = Path(config.storage_root)
    folder = storage / "users" / "alice" / "models" / "m"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_text(name)
    (storage / "users" / "bob").mkdir(parents=True)
    (storage / "users" / "bob" / "weights.safetensors").write_text("bob's")
    doc = root / "users" / "alice" / "m.yaml"
    doc.write_text("model_id: m\nmodel_source: $HOME/models/m\ncpus_per_replica: 1\n")
    rec, ray, snap = started(config, root)
    converge(rec, ray, snap)
    (model,) = rec.store.models().values()
    ray.calls.clear()

    if break_the_file:
        doc.write_text("model_id: m\nmodel_source: [unclosed\n")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(storage / "users" / "bob" / "weights.safetensors")
    result = rec.tick(snap)
    stopping = rec.store.models()[model.model_key]
    assert stopping.state is State.DELETING
    assert ray.calls == [("gateway", "")]  # it leaves the gateway first
    summary = status_of(config, model.model_key)["error_summary"]
    assert isinstance(summary, str) and summary.startswith("stopped: model_source ")
    assert f"model.safetensors in {folder} is a symlink that leads out of" in summary
    assert "bob" not in summary
    assert any("model.safetensors" in e for e in result.errors) is not break_the_file
    ray.settle()
    settle(rec, ray, snap)
    assert ray.calls == [("gateway", ""), ("delete", model.app_name)]
    stopped = rec.store.models()[model.model_key]  # kept: same name when it comes back
    assert stopped.state is State.STOPPED and stopped.error_summary == summary
    status = status_of(config, model.model_key)
    assert (status["state"], status["error_summary"]) == ("STOPPED", summary)
    ray.calls.clear()
    assert rec.tick(snap).actions == () and ray.calls == []  # stopped is stable

    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_text("mine again")
    if break_the_file:
        doc.write_text("model_id: m\nmodel_source: $HOME/models/m\ncpus_per_replica: 1\n")
    converge(rec, ray, snap)
    back = rec.store.models()[model.model_key]
    assert back.state is State.RUNNING and back.error_summary is None
    assert ray.calls == [("deploy", model.public_id), ("gateway", model.public_id)]
    assert status_of(config, model.model_key)["error_summary"] is None
