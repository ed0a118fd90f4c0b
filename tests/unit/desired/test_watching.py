"""The file watcher against a real filesystem and a real git repository."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import watchfiles

from servesync.desired.watching import ChangeFilter, Watcher
from tests.support.gitrepos import commit_file, init_repo

WITHIN_S = 5.0  # generous: the benchmark reports the real figures (~0.1-0.2 s)


class Events:
    def __init__(self) -> None:
        self.count = 0
        self.fired = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.fired.set()


@pytest.fixture
def watch() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for w in started:
        w.stop()


def _start(started: list[Watcher], paths: list[Path], **kw: object) -> Events:
    events = Events()
    w = Watcher(paths, events, debounce_ms=50, **kw)  # type: ignore[arg-type]
    w.start()
    assert w.wait_started()
    started.append(w)
    return events


def test_a_file_write_triggers(tmp_path: Path, watch: list[Watcher]) -> None:
    events = _start(watch, [tmp_path])
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "m.yaml").write_text("a: 1\n")
    assert events.fired.wait(WITHIN_S)


def test_swap_files_and_ignored_dirs_do_not_trigger(tmp_path: Path, watch: list[Watcher]) -> None:
    (tmp_path / "state").mkdir()
    events = _start(watch, [tmp_path], ignore=[tmp_path / "state"])
    (tmp_path / ".m.yaml.swp").write_text("x")
    (tmp_path / "m.yaml~").write_text("x")
    (tmp_path / "state" / "records.json").write_text("{}")
    assert not events.fired.wait(0.5)
    (tmp_path / "m.yaml").write_text("a: 1\n")
    assert events.fired.wait(WITHIN_S)


def test_a_commit_in_a_watched_git_dir_triggers(tmp_path: Path, watch: list[Watcher]) -> None:
    repo = init_repo(tmp_path / "repo")
    commit_file(repo, "users/a/m.yaml", "v: 1\n")
    events = _start(watch, [repo / ".git"])
    (repo / "users/a/m.yaml").write_text("v: 2\n")  # the working tree is not watched
    assert not events.fired.wait(0.5)
    commit_file(repo, "users/a/m.yaml", "v: 2\n")
    assert events.fired.wait(WITHIN_S)


def test_missing_paths_are_skipped(tmp_path: Path) -> None:
    w = Watcher([tmp_path / "nope"], lambda: None)
    w.start()
    assert not w.wait_started(0.1)
    w.stop()


@pytest.mark.parametrize(
    ("rel", "wanted"),
    [
        ("users/a/m.yaml", True),
        ("users/a/.m.yaml.swp", False),
        ("users/a/4913", False),
        ("users/a/.#m.yaml", False),
        ("users/a/m.yaml~", False),
        (".git/refs/heads/main", True),
        (".git/refs/heads/main.lock", False),
        (".git/packed-refs", True),
        (".git/HEAD", True),
        (".git/logs/HEAD", True),
        (".git/objects/ab/cdef", False),
        (".git/index", False),
        ("state/records.json", False),
    ],
)
def test_change_filter(tmp_path: Path, rel: str, wanted: bool) -> None:
    flt = ChangeFilter([tmp_path], ignore=[tmp_path / "state"])
    assert flt(watchfiles.Change.modified, str(tmp_path / rel)) is wanted


def test_change_filter_knows_a_bare_repository(tmp_path: Path) -> None:
    bare = init_repo(tmp_path / "r.git", bare=True)
    flt = ChangeFilter([bare])
    assert flt(watchfiles.Change.modified, str(bare / "refs/heads/main"))
    assert not flt(watchfiles.Change.added, str(bare / "objects/ab/cdef"))
