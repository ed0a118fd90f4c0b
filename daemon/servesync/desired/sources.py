"""Where the desired state comes from: a plain directory, or a git branch's tip.

Called by :mod:`servesync.daemon.loop` once per tick (``refresh()``), and by its
SIGHUP handler (``force_fetch()``). :func:`open_source` picks the kind:

* ``source.git_url`` set (a remote URL or a local repository path), or
  ``source.path`` is a git repository: :class:`GitSource`. Only *committed*
  content of ``source.branch``'s tip is applied, never a working tree: the
  daemon keeps a private clone in ``<state_dir>/source/``, fetches the branch
  into it and checks the tip out there (detached, ``reset --hard``,
  ``clean -ffdx``, symlinks checked out as plain files). A remote is fetched
  every ``poll_interval_s``; a local repository whenever its branch ref moved
  (read from its files, no network).
* otherwise :class:`DirectorySource`: ``config.source_root`` as it is.

A snapshot carries its revision (the commit SHA) and that commit's committer
time (:attr:`Snapshot.committed_at`, read from the private clone when the tip
is checked out), which the status files show; a plain folder has neither.

With ``verify_signatures`` a tip is checked out only if ``git verify-commit``
accepts it against a private keyring (``<state_dir>/gnupg``, mode 0700)
holding exactly the keys of ``trusted_keys_file``; a refused tip keeps the
last good revision and sets :attr:`Snapshot.error`.

Side effects: git subprocesses (fetch, checkout, verify-commit), gpg
subprocesses (import), and writes under ``<state_dir>/source`` and
``<state_dir>/gnupg``. A git failure never raises once a good snapshot
exists; before that it raises :class:`~servesync.errors.SourceError`.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import git

from servesync.config import Config, is_remote_url
from servesync.desired import loading
from servesync.desired.keyring import Keyring
from servesync.desired.watching import is_git_dir
from servesync.errors import SourceError
from servesync.redaction import redact_url

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 30.0  # a hung fetch must not outlive the systemd watchdog (60 s)
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GCM_INTERACTIVE": "never"}
_PRIVATE_CONFIG = {
    "core.symlinks": "false",  # a committed symlink becomes a plain file: no escape via links
    "core.hooksPath": "/dev/null",
    "advice.detachedHead": "false",
    "gc.auto": "0",
}


@dataclass(frozen=True)
class Snapshot:
    """One readable desired-state tree, as of one revision."""

    root: Path  # the folder holding users/
    revision: str | None  # commit SHA in git mode; None for a plain directory
    error: str | None = None  # why a newer tip was not taken (the tree is still usable)
    watch_paths: tuple[Path, ...] = ()
    committed_at: datetime | None = None  # the revision's committer time (UTC); None: a folder


class Source(Protocol):
    def refresh(self) -> Snapshot: ...

    def watch_paths(self) -> tuple[Path, ...]: ...

    def force_fetch(self) -> None: ...

    def poll_interval_s(self) -> float | None: ...  # how often to poll; None: watch instead


def open_source(config: Config, *, clock: Callable[[], float] = time.monotonic) -> Source:
    """The source described by ``config.source`` (no I/O beyond a few stat calls)."""
    src = config.source
    url = src.git_url
    if url is None and src.path and _is_repository(Path(src.path)):
        url = src.path
    if url is None:
        return DirectorySource(config.source_root)
    keyring = None
    if src.verify_signatures:
        keys = Path(src.trusted_keys_file) if src.trusted_keys_file else None
        keyring = Keyring(Path(config.state_dir) / "gnupg", keys)
    return GitSource(
        url=url,
        branch=src.branch,
        subpath=src.subpath,
        checkout_dir=Path(config.state_dir) / "source",
        poll_interval_s=src.poll_interval_s,
        keyring=keyring,
        clock=clock,
    )


class DirectorySource:
    """A plain folder: what is on disk is the desired state (revision None).

    The folder must hold ``users/``: without it (a wrong path, a share not
    mounted) refresh raises rather than report an empty desired state."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def refresh(self) -> Snapshot:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: desired-state folder not found")
        problem = loading.users_dir_problem(self.root)
        if problem is not None:
            # a wrong path or an unmounted share, not "no models": refuse rather
            # than let the planner delete every model (`servesync validate` agrees)
            raise SourceError(f"{self.root}: {problem}")
        return Snapshot(self.root, None, None, self.watch_paths())

    def watch_paths(self) -> tuple[Path, ...]:
        return (self.root,)

    def force_fetch(self) -> None:
        """Nothing to fetch: every refresh reads the folder."""

    def poll_interval_s(self) -> float | None:
        return None


class GitSource:
    """The committed tip of one branch, checked out in a private clone."""

    def __init__(
        self,
        *,
        url: str,
        branch: str,
        subpath: str,
        checkout_dir: Path,
        poll_interval_s: float,
        keyring: Keyring | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.branch = branch
        self.subpath = subpath.strip("/")
        self.checkout_dir = checkout_dir
        self._poll_s = poll_interval_s
        self.keyring = keyring
        self._clock = clock
        self._local = _is_local(url)
        self._lock = threading.Lock()
        self._force = threading.Event()
        self._repo: git.Repo | None = None
        self._last_fetch: float | None = None
        self._good: str | None = None  # the revision checked out and trusted
        self._good_at: datetime | None = None  # its committer time
        self._refused: tuple[str, str] | None = None  # (tip, why) not to retry every tick
        self._watch: tuple[Path, ...] | None = None

    @property
    def _remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def watch_paths(self) -> tuple[Path, ...]:
        """A local repository's git dir(s): a commit rewrites refs there. Remote: none."""
        if not self._local:
            return ()
        if self._watch is None:
            self._watch = self._git_dirs()
        return self._watch

    def _git_dirs(self) -> tuple[Path, ...]:
        try:
            repo = git.Repo(self.url)
        except (git.GitError, OSError) as e:
            log.warning("cannot open %s to watch it: %s", self.url, e)
            return ()
        dirs = [Path(repo.git_dir), Path(repo.common_dir)]
        return tuple(dict.fromkeys(d.resolve() for d in dirs))

    def force_fetch(self) -> None:
        """Fetch at the next refresh, and check a refused tip again (SIGHUP)."""
        self._refused = None
        self._force.set()

    def poll_interval_s(self) -> float | None:
        """A remote is polled; a local repository is watched (and read each refresh)."""
        return None if self._local else self._poll_s

    def refresh(self) -> Snapshot:
        with self._lock:
            error = self._update()
            if self._good is None:
                raise SourceError(error or f"no revision of {self.branch} is available yet")
            root = self.checkout_dir / self.subpath if self.subpath else self.checkout_dir
            return Snapshot(root, self._good, error, self.watch_paths(), self._good_at)

    def _update(self) -> str | None:
        """Fetch if due and take the tip if acceptable; the error text, if any."""
        try:
            repo = self._open()
            if self._fetch_due(repo):
                self._fetch(repo)
            tip = _rev(repo, self._remote_ref)
            if tip is None:
                raise SourceError(f"branch {self.branch!r} not found")
            if tip == self._good:
                self._refused = None
                return None
            if self.keyring is not None and self.keyring.ensure():
                self._refused = None  # new trusted keys: a refused tip may pass now
            if self._refused and self._refused[0] == tip:
                return self._refused[1]
            why = self._refusal(repo, tip)
            if why is not None:
                self._refused = (tip, why)
                log.warning("%s", why)
                return why
            self._checkout(repo, tip)
            return None
        except (git.GitError, OSError, ValueError, subprocess.SubprocessError, SourceError) as e:
            keeping = self._good[:12] if self._good else "nothing"
            why = (
                f"git source {redact_url(self.url)} ({self.branch}): {_brief(e)}; keeping {keeping}"
            )
            log.warning("%s", why)
            return why

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        self.checkout_dir.mkdir(parents=True, exist_ok=True)
        try:
            repo = git.Repo(self.checkout_dir)
        except git.InvalidGitRepositoryError:
            repo = git.Repo.init(self.checkout_dir)
        with repo.config_writer() as cw:
            for key, value in _PRIVATE_CONFIG.items():
                section, option = key.split(".")
                cw.set_value(section, option, value)
        if "origin" in [r.name for r in repo.remotes]:
            if repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
        else:
            repo.create_remote("origin", self.url)
        self._adopt_existing(repo)
        self._repo = repo
        return repo

    def _adopt_existing(self, repo: git.Repo) -> None:
        """After a restart, the checkout's HEAD is the last good revision, if still trusted."""
        if not repo.head.is_valid():
            return
        head = repo.head.commit.hexsha
        if self._refusal(repo, head) is None:
            self._checkout(repo, head)

    def _fetch_due(self, repo: git.Repo) -> bool:
        if self._force.is_set() or self._last_fetch is None:
            return True
        if self._local:
            return self._local_tip() != _rev(repo, self._remote_ref)
        return self._clock() - self._last_fetch >= self._poll_s

    def _local_tip(self) -> str | None:
        """The branch's SHA read from the local repository's files (no subprocess)."""
        try:
            src = git.Repo(self.url)
            return git.SymbolicReference.dereference_recursive(src, f"refs/heads/{self.branch}")
        except (git.GitError, OSError, ValueError):
            return None

    def _fetch(self, repo: git.Repo) -> None:
        self._force.clear()
        self._last_fetch = self._clock()
        refspec = f"+refs/heads/{self.branch}:{self._remote_ref}"
        opts = ["-c", f"safe.directory={self.url}"] if self._local else []
        repo.git.execute(
            ["git", *opts, "fetch", "--no-tags", "--quiet", "origin", refspec],
            env=_GIT_ENV,
            kill_after_timeout=GIT_TIMEOUT_S,
        )

    def _refusal(self, repo: git.Repo, sha: str) -> str | None:
        """Why ``sha`` must not be checked out, or None when it may."""
        keeping = self._good[:12] if self._good else "nothing"
        if self.keyring is not None:
            if self.keyring.ensure():
                self._refused = None
            if not self._verified(repo, sha):
                return (
                    f"tip {sha[:12]} of {self.branch} is not signed by a trusted key; "
                    f"keeping {keeping}"
                )
        tree = repo.commit(sha).tree
        if self.subpath:
            try:
                tree = tree.join(self.subpath)
            except KeyError:
                return (
                    f"tip {sha[:12]} of {self.branch} has no folder {self.subpath!r}; "
                    f"keeping {keeping}"
                )
        # As for a directory source: a tree without users/ is a mistake (a wrong
        # subpath, a half-done move), never "every model deleted".
        try:
            users = tree.join(loading.USERS_DIR)
        except KeyError:
            users = None
        if users is None or users.type != "tree":
            return f"tip {sha[:12]} of {self.branch} has no users/ folder; keeping {keeping}"
        return None

    def _verified(self, repo: git.Repo, sha: str) -> bool:
        assert self.keyring is not None
        try:
            repo.git.verify_commit(
                sha, env={**_GIT_ENV, **self.keyring.env()}, kill_after_timeout=GIT_TIMEOUT_S
            )
        except git.GitCommandError as e:
            log.debug("verify-commit %s: %s", sha[:12], _brief(e))
            return False
        return True

    def _checkout(self, repo: git.Repo, sha: str) -> None:
        repo.git.checkout("--force", "--detach", sha)
        repo.git.reset("--hard", sha)
        repo.git.clean("-ffdx", "--quiet")
        self._good_at = datetime.fromtimestamp(repo.commit(sha).committed_date, UTC)
        previous, self._good, self._refused = self._good, sha, None
        if previous != sha:
            log.info("desired state now at %s of %s", sha[:12], self.branch)


def _is_local(url: str) -> bool:
    return not is_remote_url(url) and Path(url).exists()


def _is_repository(path: Path) -> bool:
    return (path / ".git").exists() or is_git_dir(path)


def _rev(repo: git.Repo, ref: str) -> str | None:
    try:
        return git.SymbolicReference.dereference_recursive(repo, ref)
    except (ValueError, OSError):
        return None


def _brief(e: Any) -> str:
    """A one-line reason: git's stderr when there is one, with credentials blanked."""
    text = getattr(e, "stderr", "") or str(e)
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return redact_url(lines[-1] if lines else type(e).__name__)[:300]
