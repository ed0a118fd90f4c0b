"""Desired-state sources against real directories, real git repos and real gpg."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servesync.config import Config, SourceConfig
from servesync.desired.sources import DirectorySource, GitSource, Source, open_source
from servesync.errors import SourceError
from tests.support.gitrepos import GpgKey, commit_file, git, init_repo, make_key

DOC = "users/alice/m.yaml"


def _config(tmp_path: Path, **source: object) -> Config:
    return Config(source=SourceConfig(**source), state_dir=str(tmp_path / "state"))  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_directory_source_reads_the_folder_as_is(tmp_path: Path) -> None:
    (tmp_path / "tree" / "users").mkdir(parents=True)
    src = open_source(_config(tmp_path, path=str(tmp_path / "tree")))
    assert isinstance(src, DirectorySource)
    snap = src.refresh()
    assert (snap.root, snap.revision, snap.error) == (tmp_path / "tree", None, None)
    assert src.watch_paths() == (tmp_path / "tree",)


def test_directory_source_with_subpath_and_missing_folder(tmp_path: Path) -> None:
    src = open_source(_config(tmp_path, path=str(tmp_path / "tree"), subpath="ds"))
    with pytest.raises(SourceError, match="not found"):
        src.refresh()
    (tmp_path / "tree" / "ds" / "users").mkdir(parents=True)
    assert src.refresh().root == tmp_path / "tree" / "ds"


def test_directory_source_without_users_folder_is_an_error_not_an_empty_tree(
    tmp_path: Path,
) -> None:
    (tmp_path / "tree").mkdir()  # e.g. the mount point of a share that is not mounted
    src = open_source(_config(tmp_path, path=str(tmp_path / "tree")))
    with pytest.raises(SourceError, match="no users/ folder"):
        src.refresh()
    (tmp_path / "tree" / "users").mkdir()
    assert src.refresh().root == tmp_path / "tree"


def test_local_working_copy_follows_commits_not_the_working_tree(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_file(repo, DOC, "v: 1\n")
    src = open_source(_config(tmp_path, path=str(repo)))
    assert isinstance(src, GitSource)
    snap = src.refresh()
    assert snap.revision == first and snap.error is None
    assert snap.root == tmp_path / "state" / "source"
    assert (snap.root / DOC).read_text() == "v: 1\n"
    assert snap.watch_paths == ((repo / ".git").resolve(),)

    (repo / DOC).write_text("v: dirty\n")
    (repo / "users/alice/untracked.yaml").write_text("x: 1\n")
    assert src.refresh().revision == first
    assert (snap.root / DOC).read_text() == "v: 1\n"
    assert not (snap.root / "users/alice/untracked.yaml").exists()

    second = commit_file(repo, DOC, "v: 2\n")
    snap = src.refresh()
    assert snap.revision == second
    assert (snap.root / DOC).read_text() == "v: 2\n"
    assert not (snap.root / "users/alice/untracked.yaml").exists()


def test_commits_on_another_branch_are_ignored(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_file(repo, DOC, "v: 1\n")
    src = open_source(_config(tmp_path, path=str(repo), branch="main"))
    assert src.refresh().revision == first
    git(repo, "switch", "--quiet", "-c", "other")
    commit_file(repo, DOC, "v: other\n")
    snap = src.refresh()
    assert snap.revision == first
    assert (snap.root / DOC).read_text() == "v: 1\n"


def test_stray_files_in_the_private_checkout_are_cleaned(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    commit_file(repo, DOC, "v: 1\n")
    src = open_source(_config(tmp_path, path=str(repo)))
    root = src.refresh().root
    (root / "users/alice/planted.yaml").write_text("x: 1\n")
    commit_file(repo, DOC, "v: 2\n")
    src.refresh()
    assert not (root / "users/alice/planted.yaml").exists()


def test_remote_is_fetched_on_poll_interval_and_on_force_fetch(tmp_path: Path) -> None:
    remote = init_repo(tmp_path / "remote.git", bare=True)
    work = init_repo(tmp_path / "work")
    first = commit_file(work, DOC, "v: 1\n")
    git(work, "push", "--quiet", str(remote), "main")
    clock = Clock()
    cfg = _config(tmp_path, git_url=f"file://{remote}", poll_interval_s=15.0)
    src = open_source(cfg, clock=clock)
    assert src.watch_paths() == ()
    assert src.refresh().revision == first

    second = commit_file(work, DOC, "v: 2\n")
    git(work, "push", "--quiet", str(remote), "main")
    clock.now += 5
    assert src.refresh().revision == first  # not due yet: no network
    src.force_fetch()
    snap = src.refresh()
    assert snap.revision == second and (snap.root / DOC).read_text() == "v: 2\n"

    third = commit_file(work, DOC, "v: 3\n")
    git(work, "push", "--quiet", str(remote), "main")
    clock.now += 15
    assert src.refresh().revision == third


def test_git_failure_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    remote = init_repo(tmp_path / "remote.git", bare=True)
    work = init_repo(tmp_path / "work")
    first = commit_file(work, DOC, "v: 1\n")
    git(work, "push", "--quiet", str(remote), "main")
    src = open_source(_config(tmp_path, git_url=f"file://{remote}"))
    assert src.refresh().revision == first
    shutil.rmtree(remote)
    src.force_fetch()
    snap = src.refresh()
    assert snap.revision == first
    assert snap.error is not None and "keeping" in snap.error
    assert (snap.root / DOC).read_text() == "v: 1\n"


def test_no_good_snapshot_ever_raises(tmp_path: Path) -> None:
    src = open_source(_config(tmp_path, git_url=f"file://{tmp_path}/missing.git"))
    with pytest.raises(SourceError):
        src.refresh()


def test_restart_reuses_the_private_checkout(tmp_path: Path) -> None:
    remote = init_repo(tmp_path / "remote.git", bare=True)
    work = init_repo(tmp_path / "work")
    first = commit_file(work, DOC, "v: 1\n")
    git(work, "push", "--quiet", str(remote), "main")
    cfg = _config(tmp_path, git_url=f"file://{remote}")
    assert open_source(cfg).refresh().revision == first
    shutil.rmtree(remote)
    snap = open_source(cfg).refresh()  # a new daemon process, remote unreachable
    assert snap.revision == first and snap.error is not None


def test_subpath_is_the_root_and_a_tip_without_it_is_refused(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_file(repo, "ds/" + DOC, "v: 1\n")
    src = open_source(_config(tmp_path, path=str(repo), subpath="ds"))
    snap = src.refresh()
    assert snap.root == tmp_path / "state" / "source" / "ds"
    git(repo, "rm", "--quiet", "-r", "ds")
    git(repo, "commit", "--quiet", "-m", "drop")
    snap = src.refresh()
    assert snap.revision == first
    assert snap.error is not None and "no folder 'ds'" in snap.error


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GpgKey, GpgKey]]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (Debian package gnupg)")
    base = tmp_path_factory.mktemp("gpg")
    trusted = make_key(base / "trusted", "Trusted <trusted@example.invalid>")
    stranger = make_key(base / "stranger", "Stranger <stranger@example.invalid>")
    yield trusted, stranger
    trusted.close()
    stranger.close()


def signed_source(tmp_path: Path, keys: str) -> tuple[Path, Path, Source]:
    """A repository whose source takes only tips signed by ``keys`` (exported
    public keys, in the trusted keys file): (that file, the repo, the source)."""
    keyfile = tmp_path / "trusted.asc"
    keyfile.write_text(keys)
    repo = init_repo(tmp_path / "repo")
    cfg = _config(tmp_path, path=str(repo), verify_signatures=True, trusted_keys_file=str(keyfile))
    return keyfile, repo, open_source(cfg)


def test_signatures_only_trusted_tips_are_taken(
    tmp_path: Path, keys: tuple[GpgKey, GpgKey]
) -> None:
    trusted, stranger = keys
    _, repo, src = signed_source(tmp_path, trusted.export())

    unsigned_first = commit_file(repo, DOC, "v: 0\n")
    with pytest.raises(SourceError, match=f"tip {unsigned_first[:12]} of main is not signed"):
        src.refresh()  # never a good snapshot: nothing to fall back to

    good = commit_file(repo, DOC, "v: 1\n", sign_with=trusted)
    snap = src.refresh()
    assert (snap.revision, snap.error) == (good, None)
    home = tmp_path / "state" / "gnupg"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700

    unsigned = commit_file(repo, DOC, "v: 2\n")
    snap = src.refresh()
    assert snap.revision == good
    assert snap.error == (
        f"tip {unsigned[:12]} of main is not signed by a trusted key; keeping {good[:12]}"
    )
    assert (snap.root / DOC).read_text() == "v: 1\n"

    foreign = commit_file(repo, DOC, "v: 3\n", sign_with=stranger)
    snap = src.refresh()
    assert snap.revision == good and snap.error is not None and foreign[:12] in snap.error

    good2 = commit_file(repo, DOC, "v: 4\n", sign_with=trusted)
    snap = src.refresh()
    assert (snap.revision, snap.error) == (good2, None)
    assert (snap.root / DOC).read_text() == "v: 4\n"


def test_removing_a_key_from_the_file_revokes_it(
    tmp_path: Path, keys: tuple[GpgKey, GpgKey]
) -> None:
    trusted, stranger = keys
    keyfile, repo, src = signed_source(tmp_path, trusted.export() + stranger.export())
    by_stranger = commit_file(repo, DOC, "v: 1\n", sign_with=stranger)
    assert src.refresh().revision == by_stranger
    keyfile.write_text(trusted.export())
    commit_file(repo, DOC, "v: 2\n", sign_with=stranger)
    snap = src.refresh()
    assert snap.revision == by_stranger and snap.error is not None


def test_adding_the_signers_key_to_the_file_takes_the_refused_tip(
    tmp_path: Path, keys: tuple[GpgKey, GpgKey]
) -> None:
    trusted, stranger = keys
    keyfile, repo, src = signed_source(tmp_path, trusted.export())
    good = commit_file(repo, DOC, "v: 1\n", sign_with=trusted)
    assert src.refresh().revision == good
    by_stranger = commit_file(repo, DOC, "v: 2\n", sign_with=stranger)
    snap = src.refresh()
    assert snap.revision == good and snap.error is not None
    assert src.refresh().revision == good  # the refusal is cached while nothing changes

    keyfile.write_text(trusted.export() + stranger.export())
    snap = src.refresh()
    assert (snap.revision, snap.error) == (by_stranger, None)


def test_a_tip_without_users_is_refused_not_taken_as_empty(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_file(repo, DOC, "v: 1\n")
    src = open_source(_config(tmp_path, path=str(repo)))
    assert src.refresh().revision == first
    git(repo, "mv", "users", "people")  # a half-done move: every model would be deleted
    git(repo, "commit", "--quiet", "-m", "move")
    snap = src.refresh()
    assert snap.revision == first and (snap.root / DOC).read_text() == "v: 1\n"
    assert snap.error is not None and "has no users/ folder" in snap.error
    commit_file(repo, "users", "not a folder\n")  # users as a file is no better
    assert "has no users/ folder" in (src.refresh().error or "")


def test_a_repository_never_holding_users_gives_no_snapshot(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    commit_file(repo, "README.md", "hello\n")
    with pytest.raises(SourceError, match="has no users/ folder"):
        open_source(_config(tmp_path, path=str(repo))).refresh()


def test_a_git_snapshot_carries_its_commit_time_a_folder_none(tmp_path: Path) -> None:
    """The committer time (not the author's), in UTC, read when the tip is checked out."""
    repo = init_repo(tmp_path / "repo")
    (repo / "users" / "alice").mkdir(parents=True)
    (repo / DOC).write_text("v: 1\n")
    git(repo, "add", DOC)
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", "one",
        env={"GIT_AUTHOR_DATE": "2020-01-01T00:00:00+00:00",
             "GIT_COMMITTER_DATE": "2026-11-23T05:12:34+01:00"})
    snap = open_source(_config(tmp_path, path=str(repo))).refresh()
    assert snap.committed_at == datetime(2026, 11, 23, 4, 12, 34, tzinfo=UTC)
    again = open_source(_config(tmp_path, path=str(repo))).refresh()  # a restart: adopted
    assert (again.revision, again.committed_at) == (snap.revision, snap.committed_at)
    (tmp_path / "tree" / "users").mkdir(parents=True)
    assert open_source(_config(tmp_path, path=str(tmp_path / "tree"))).refresh().committed_at \
        is None
