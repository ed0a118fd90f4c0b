"""``servesync validate --config`` and ``servesync plan`` give the same quota verdicts
before a merge: both count the models recorded in the config's state dir first.
Ray is the fake (tests/support/fakeray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import cli, wiring
from tests.support.fakeray import SettlingRay


def model(suffix: str, replicas: int) -> str:
    return (f"model_id: {suffix}\nmodel_source: $HOME/common/hf/tiny\n"
            f"num_replicas: {replicas}\ngpus_per_replica: 1\n")


@pytest.fixture
def cfg(tmp_path: Path, desired_tree: Path, storage_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> Path:
    """alice's z (3 GPUs) admitted and running; her quota is 4 GPUs."""
    monkeypatch.delenv("SERVESYNC_CONFIG", raising=False)
    ray = SettlingRay()  # one cluster for every command
    monkeypatch.setattr(wiring, "_applier", lambda config: ray)
    monkeypatch.setattr(wiring, "ONCE_POLL_S", 0.0)
    path = tmp_path / "servesync.yaml"
    path.write_text(
        f"source: {{path: {desired_tree}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"storage_root: {storage_root}\n"
        "serving: {accelerator_type: gpu, quotas: {default: {gpus: 4}}}\n")
    (desired_tree / "users" / "alice" / "z.yaml").write_text(model("z", 3))
    assert cli.main(["once", "--config", str(path), "--wait", "30"]) == 0
    return path


REFUSED_A = ("users/alice/a.yaml:4: 422 /gpus_per_replica: over user 'alice''s GPU quota "
             "(serving.quotas): asks 2 GPUs (2 replicas x 1); 1 of 4 left for it; not deployed")


def test_validate_and_plan_show_the_same_refusal(
        cfg: Path, tmp_path: Path, desired_tree: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (desired_tree / "users" / "alice" / "a.yaml").write_text(model("a", 2))  # sorts before z
    capsys.readouterr()
    state = tmp_path / "state"
    before = {p: p.stat().st_mtime_ns for p in state.rglob("*")}

    assert cli.main(["validate", "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [REFUSED_A]  # z, admitted first, keeps its place
    assert err.startswith("invalid: 2 files, 2 documents, 1 valid models; 1 errors in 1 files")

    assert cli.main(["plan", "--config", str(cfg)]) == 0  # nothing to do: a is refused
    out = capsys.readouterr().out
    assert out.splitlines() == [REFUSED_A, "noop: the cluster matches the desired state"]
    assert {p: p.stat().st_mtime_ns for p in state.rglob("*")} == before  # both only read

    (desired_tree / "users" / "alice" / "a.yaml").write_text(model("a", 1))  # fits: 4 of 4
    assert cli.main(["validate", "--config", str(cfg)]) == 0
    assert cli.main(["plan", "--config", str(cfg)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("create   alice-")


def test_validate_without_the_records_says_so(
        cfg: Path, tmp_path: Path, desired_tree: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (desired_tree / "users" / "alice" / "a.yaml").write_text(model("a", 2))
    (tmp_path / "state" / "state.json").write_text("{not json")  # unreadable as records
    capsys.readouterr()
    assert cli.main(["validate", "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert "state.json (not valid JSON" in err
    assert "quotas are judged as if no model were admitted yet" in err
    # by path alone a comes first, and the admitted z would look refused
    assert out.startswith("users/alice/z.yaml:4: 422 /gpus_per_replica:")


def test_validate_without_quotas_never_reads_the_state(
        tmp_path: Path, desired_tree: Path, storage_root: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVESYNC_CONFIG", raising=False)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{not json")
    path = tmp_path / "servesync.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nstorage_root: {storage_root}\n")
    (desired_tree / "users" / "alice" / "a.yaml").write_text(model("a", 50))
    assert cli.main(["validate", str(desired_tree), "--config", str(path)]) == 0
    assert "state.json" not in capsys.readouterr().err
