"""Wake the daemon when the desired state may have changed (watchfiles, one thread).

Called by :mod:`servesync.daemon.loop` with the source's watch paths. A change
only *wakes* a tick, it carries no meaning: the tick reads the whole tree
again (level-based), and the interval tick repairs any missed event.

What counts as a change:

* in a plain directory: any file, except editor droppings (vim swap files
  and its ``4913`` probe, ``*~``, ``.#*`` emacs locks, JetBrains
  ``___jb_`` files, ``.DS_Store``) and anything under an ignored path (the
  daemon's own state dir);
* inside a git dir (a ``.git`` folder, or a watched path that is itself a
  git dir, bare or not): only ``HEAD``, ``packed-refs``, ``refs/**`` and
  ``logs/**`` (not ``*.lock``), the files a commit, fetch or branch switch
  rewrites. Object writes are ignored.

Side effects: one daemon thread running ``watchfiles.watch``; ``on_change``
is called from that thread and must be quick (the daemon only sets a flag).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

log = logging.getLogger(__name__)

_EDITOR_FILES = re.compile(
    r"(\.sw.|~|___jb_...___|\.tmp)$|^(\.#|4913$|\.DS_Store$|\.goutputstream-)"
)
_GIT_FILES = frozenset({"HEAD", "packed-refs"})
_GIT_DIRS = frozenset({"refs", "logs"})
_RESTART_DELAY_S = 1.0


def is_git_dir(path: Path) -> bool:
    """A git dir (``.git`` or a bare repository): HEAD, objects/ and refs/ inside."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


class ChangeFilter:
    """watchfiles filter: ``(change, path) -> bool``, True for a change worth a tick."""

    def __init__(self, roots: Iterable[Path], *, ignore: Iterable[Path] = ()) -> None:
        self._git_roots = tuple(r for r in roots if is_git_dir(r))
        self._ignore = tuple(ignore)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        if any(p == i or p.is_relative_to(i) for i in self._ignore):
            return False
        if _EDITOR_FILES.search(p.name):
            return False
        rel = self._git_relative(p)
        if rel is None:
            return True
        if not rel or rel[-1].endswith(".lock"):
            return False
        return rel[0] in _GIT_DIRS or (len(rel) == 1 and rel[0] in _GIT_FILES)

    def _git_relative(self, p: Path) -> tuple[str, ...] | None:
        for root in self._git_roots:
            if p.is_relative_to(root):
                return p.relative_to(root).parts
        if ".git" in p.parts:
            return p.parts[p.parts.index(".git") + 1 :]
        return None


class Watcher:
    """Calls ``on_change()`` (debounced) when a file under ``paths`` changes."""

    def __init__(
        self,
        paths: Iterable[Path],
        on_change: Callable[[], None],
        *,
        debounce_ms: int = 100,
        ignore: Iterable[Path] = (),
    ) -> None:
        self.paths = tuple(Path(p).absolute() for p in paths)
        self._on_change = on_change
        self._debounce_ms = debounce_ms
        self._ignore = tuple(Path(p).absolute() for p in ignore)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        """Start watching in a daemon thread; paths that don't exist are skipped (logged)."""
        existing = tuple(p for p in self.paths if p.exists())
        for missing in set(self.paths) - set(existing):
            log.warning("not watching %s: it does not exist (interval ticks still apply)", missing)
        if not existing or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(existing,), name="servesync-watch", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; it notices within one watchfiles step (50 ms)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_started(self, timeout: float = 5.0) -> bool:
        """True once the OS watches are in place (for tests and benchmarks)."""
        return self._started.wait(timeout)

    def _run(self, paths: tuple[Path, ...]) -> None:
        flt = ChangeFilter(paths, ignore=self._ignore)
        while not self._stop.is_set():
            try:
                self._watch(paths, flt)
            except Exception:
                log.exception("file watcher failed; restarting in %.0f s", _RESTART_DELAY_S)
                self._stop.wait(_RESTART_DELAY_S)

    def _watch(self, paths: tuple[Path, ...], flt: ChangeFilter) -> None:
        changes_iter = watchfiles.watch(
            *paths,
            watch_filter=flt,
            debounce=self._debounce_ms,
            step=min(50, self._debounce_ms),
            stop_event=self._stop,
            rust_timeout=200,
            yield_on_timeout=True,
            raise_interrupt=False,
        )
        for changes in changes_iter:
            self._started.set()
            if not changes:
                continue
            log.debug("change under watched paths: %s", sorted(p for _, p in changes)[:5])
            try:
                self._on_change()
            except Exception:
                log.exception("on_change callback failed")
