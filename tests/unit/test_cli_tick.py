"""``servesync once``, ``plan`` and ``status`` through the CLI, Ray replaced by the fake.

The real Ray path of the same commands is covered by tests/e2e; here the
exit codes, output and the state-dir lock are checked in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servesync import cli, wiring
from servesync.state.locking import StateLock
from tests.support.fakeray import SettlingRay
from tests.support.gitrepos import commit_file, init_repo

MODEL = "model_id: tiny\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"


@pytest.fixture
def setup(tmp_path: Path, desired_tree: Path, storage_root: Path,
          monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, SettlingRay]:
    (desired_tree / "users" / "alice" / "tiny.yaml").write_text(MODEL)
    cfg = tmp_path / "servesync.yaml"
    cfg.write_text(
        f"source: {{path: {desired_tree}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"storage_root: {storage_root}\nserving: {{accelerator_type: cpu}}\n"
    )
    ray = SettlingRay()
    monkeypatch.setattr(wiring, "_applier", lambda config: ray)
    monkeypatch.setattr(wiring, "ONCE_POLL_S", 0.0)
    return cfg, tmp_path / "state", ray


def test_plan_then_once_then_status(setup: tuple[Path, Path, SettlingRay],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _state, ray = setup
    assert cli.main(["plan", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("create   alice-") and "new model" in out
    assert ray.calls == []  # plan changes nothing

    assert cli.main(["once", "--config", str(cfg)]) == 1  # submitted, not yet converged
    assert cli.main(["once", "--config", str(cfg), "--wait", "30"]) == 0
    assert "converged" in capsys.readouterr().out

    assert cli.main(["plan", "--config", str(cfg)]) == 0
    assert "noop" in capsys.readouterr().out

    assert cli.main(["status", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "RUNNING" in table and "alice-" in table
    assert cli.main(["status", "--config", str(cfg), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert index["models"][0]["state"] == "RUNNING"


def test_once_is_refused_while_another_servesync_holds_the_state(
        setup: tuple[Path, Path, SettlingRay], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, state, ray = setup
    state.mkdir()
    with StateLock(state):
        assert cli.main(["once", "--config", str(cfg)]) == 2
    assert "another servesync" in capsys.readouterr().err
    assert ray.calls == []


def test_status_without_status_files_is_a_clear_error(
        setup: tuple[Path, Path, SettlingRay], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _, _ = setup
    assert cli.main(["status", "--config", str(cfg)]) == 2
    assert "index.json" in capsys.readouterr().err


def test_status_wait_times_out_when_not_running(
        setup: tuple[Path, Path, SettlingRay], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _, _ = setup
    assert cli.main(["once", "--config", str(cfg)]) == 1  # DEPLOYING
    capsys.readouterr()
    assert cli.main(["status", "--config", str(cfg), "--wait", "0.5"]) == 1
    assert "DEPLOYING" in capsys.readouterr().out


def test_plan_leaves_the_state_dir_untouched(
        setup: tuple[Path, Path, SettlingRay], tmp_path: Path, desired_tree: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg, state, _ray = setup
    repo = init_repo(tmp_path / "repo")  # a git source: the daemon's clone is in state/source
    commit_file(repo, "users/alice/tiny.yaml", MODEL)
    cfg.write_text(cfg.read_text().replace(str(desired_tree), str(repo)))
    assert cli.main(["once", "--config", str(cfg), "--wait", "30"]) == 0
    assert (state / "source" / ".git").is_dir()
    (state / ".state.json.tmp-4242-abcdef").write_text("{}")  # the daemon, mid-write

    def files() -> dict[str, int]:
        return {str(p.relative_to(state)): p.lstat().st_mtime_ns for p in state.rglob("*")}

    before = files()
    capsys.readouterr()
    assert cli.main(["plan", "--config", str(cfg)]) == 0
    assert "noop" in capsys.readouterr().out  # the recorded state was read
    assert files() == before
