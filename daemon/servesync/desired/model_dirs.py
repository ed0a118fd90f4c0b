"""The walk of a local model folder, and the cache of its verdict.

Called by :mod:`servesync.desired.model_paths` for every local model_source,
on every validation (so every tick). Reads the file system (``lstat``,
``scandir``, ``readlink``); writes nothing. Knows nothing of users or
configs: it is given the folders a model may read (``roots``).

Why: vLLM reads the files *inside* the folder (``config.json``,
``tokenizer.json``, ``*.safetensors``), so a folder whose own real path is
fine can still hand it another user's files through symlinked entries.

Rules:

* The walk starts at the folder's real path and never follows a symlink by
  itself: each symlink entry is resolved (as ``os.path.realpath`` does, by
  hand: :class:`Resolver`) and must land at or under one of the roots (real
  paths). A symlink to a directory inside the roots is walked too (each
  directory once, so loops end); one leading out is refused before it is
  entered.
* Bounds: at most :data:`MAX_ENTRIES` (10,000) entries in all and
  :data:`MAX_DEPTH` (16) folder levels below the model folder; past either
  the folder is refused, since it could not be checked. Resolving the
  symlinks (walk or revalidation alike) may examine at most
  :data:`MAX_LOOKUPS` (20,000) path components per folder check, and follow
  at most :data:`MAX_HOPS` (40, the kernel's limit) symlinks per link: a link
  into a long chain of links in a very deep folder (outside the model folder,
  where the depth bound does not look) costs thousands. Past the budget the
  folder is refused ("too costly to check"), never passed, and that refusal
  is not cached (what made it costly may lie outside every folder walked).
* A directory that cannot be listed is refused: vLLM runs as the same user
  as servesync and could still open files in it by name.
* A source that does not exist (yet), or is not a directory (a single-file
  model), has nothing to walk: ``None``. It is looked at again next time.
* Messages name the entry relative to the model folder; never a resolved
  target (it could show another user's layout) and never a file's contents.

Cache, so an idle tick does not walk disks: keyed by (the folder's real path,
the roots), an entry keeps the (device, inode, mtime_ns, ctime_ns) of every
directory walked and the resolved target of every symlink met. Revalidation
``lstat``s those directories and re-resolves those symlinks (a symlink's
target can change without any walked directory changing, e.g. when a folder
it passes through is swapped); any difference walks again. A file replaced by
a symlink changes its directory's mtime and ctime; ctime is kept too because
anyone can set an mtime back (``touch -d``), but not a ctime. A walk that saw
a directory changed less than :data:`RACY_NS` (2 s) before it started is not
cached (as git's "racily clean" entries: a coarse file-system clock could
hide a change made right after the walk). LRU: at most
:data:`CACHE_ENTRIES` (16,384) folders and :data:`CACHE_ITEMS` (200,000)
stored paths in all.

One pass (:func:`one_pass`, a whole validation): the folder checks share
which paths are not symlinks, the roots' real paths and ``lstat`` answers
(walks excepted), so the storage root's own components are looked up once a
pass, not once a model, and a model folder once, not three times. Only facts that
cost a lookup either way are shared (a known path still spends one from each
check's budget), so every verdict is the one a lone check would give; what
changes during a pass is seen by the next.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

MAX_ENTRIES = 10_000
MAX_DEPTH = 16
MAX_LOOKUPS = 20_000  # path components examined resolving one folder's symlinks
MAX_HOPS = 40  # symlinks followed in one resolution (Linux's MAXSYMLINKS)
CACHE_ENTRIES = 16_384  # folders: above the 5,000 models a cluster is sized for
CACHE_ITEMS = 200_000
RACY_NS = 2_000_000_000
_now_ns = time.time_ns  # the walk's start; tests move it

_Stamp = tuple[str, int, int, int, int]  # real dir path, st_dev, st_ino, mtime_ns, ctime_ns
_Key = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Walk:
    """One walk's verdict (``problem``: None when every entry stays inside) and
    what a revalidation compares: the directories walked, the symlinks met."""

    problem: str | None
    dirs: tuple[_Stamp, ...]
    links: tuple[tuple[str, str], ...]  # (symlink path, its real target)
    cacheable: bool

    @property
    def size(self) -> int:
        return len(self.dirs) + len(self.links)


def check_folder(path: str, roots: Sequence[str], *, real: str | None = None) -> str | None:
    """Why vLLM must not read the model folder at ``path``, or None.

    ``roots``: the folders its entries may resolve into. ``path`` itself is
    assumed checked (its real path lies under a root); ``real``: that real
    path, when the caller has resolved it already."""
    if real is None:
        try:
            real = real_path(path)
        except TooCostly as e:
            return f"{path} has symlinks that take more than {e.args[0]:,} lookups to " \
                "resolve: too costly to check"
    try:
        if not stat.S_ISDIR(_lstat(real).st_mode):
            return None  # a single-file model: its real path is all there is
    except OSError:
        return None  # not there (yet): nothing to read
    real_roots = tuple(realpath(r) for r in roots)
    key = (real, real_roots)
    cached = _CACHE.get(key)
    if cached is not None:
        try:
            if unchanged(cached, Resolver()):
                return cached.problem
        except TooCostly:
            pass  # the links grew costly since: the walk below says so
    walk = walk_folder(real, real_roots, shown=path)
    if walk.cacheable:
        _CACHE.put(key, walk)
    else:
        _CACHE.drop(key)
    return walk.problem


def walk_folder(real: str, roots: Sequence[str], *, shown: str) -> Walk:
    """Walk the directory ``real`` (a real path) breadth-first; ``shown`` is how
    messages name the folder."""
    started = _now_ns()
    dirs: list[_Stamp] = []
    links: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    fresh = True  # no race seen: the result may be cached
    entries = 0
    resolver = Resolver()
    queue: deque[tuple[str, str, int]] = deque([(real, "", 0)])  # real path, shown rel, depth

    def done(problem: str | None) -> Walk:
        return Walk(problem, tuple(dirs), tuple(links), fresh)

    while queue:
        where, rel, depth = queue.popleft()
        try:
            st = os.lstat(where)  # before listing: a later change shows as a new stamp
        except FileNotFoundError:
            fresh = False  # gone while walking: nothing to read there; look again next time
            continue
        if not stat.S_ISDIR(st.st_mode):
            fresh = False
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        if depth > MAX_DEPTH:
            return done(f"{shown} is more than {MAX_DEPTH} folders deep (at {rel}): "
                        "too deep to check")
        dirs.append((where, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        if max(st.st_mtime_ns, st.st_ctime_ns) > started - RACY_NS:
            fresh = False
        try:
            with os.scandir(where) as it:
                listed = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            fresh = False
            continue
        except OSError as e:
            return done(f"{rel or './'} in {shown} cannot be listed ({e.strerror}), "
                        "so it cannot be checked")
        for entry in listed:
            entries += 1
            if entries > MAX_ENTRIES:
                return done(f"{shown} has more than {MAX_ENTRIES:,} files and folders: "
                            "too many to check")
            name = rel + entry.name
            if entry.is_symlink():
                try:
                    target = resolver.resolve(entry.path)
                except TooCostly:  # not cached: fixing it need not touch a folder walked
                    fresh = False
                    return done(f"{shown} has symlinks that take more than "
                                f"{resolver.budget:,} lookups to resolve: too costly to check")
                links.append((entry.path, target))
                if not any(_within(target, r) for r in roots):
                    return done(f"{name} in {shown} is a symlink that leads out of "
                                f"{' and '.join(r + '/' for r in roots)}")
                if os.path.isdir(target):
                    queue.append((target, name + "/", depth + 1))
            elif entry.is_dir(follow_symlinks=False):
                queue.append((entry.path, name + "/", depth + 1))
    return done(None)


def unchanged(walk: Walk, resolver: Resolver) -> bool:
    """Every directory walked has the same stamp, every symlink the same target.
    Raises :class:`TooCostly` when ``resolver`` runs out of lookups."""
    for where, dev, ino, mtime, ctime in walk.dirs:
        try:
            st = _lstat(where)
        except OSError:
            return False
        if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) != (dev, ino, mtime, ctime):
            return False
    return all(resolver.resolve(link) == target for link, target in walk.links)


class TooCostly(Exception):
    """The folder check ran out of :data:`MAX_LOOKUPS`."""


def real_path(path: str) -> str:
    """``os.path.realpath`` of an absolute ``path`` within one budget of
    :data:`MAX_LOOKUPS` (a model_source that is itself a link into a long chain
    of links must cost a tick no more than a folder does); :class:`TooCostly`."""
    known = _PASS.realdirs
    if known is None:
        resolved, _ = Resolver()._join("/", path, set(), [0])
        return os.path.normpath(resolved)
    # Within one_pass(): the parent folder is resolved once for all its
    # entries (a thousand model folders under hf/ share one).
    parent, name = os.path.split(os.path.normpath(path))
    resolver = Resolver()
    real_parent = known.get(parent)
    if real_parent is None:
        real_parent, ok = resolver._join("/", parent, set(), [0])
        real_parent = os.path.normpath(real_parent)
        if ok:
            known[parent] = real_parent
    resolved, _ = resolver._join(real_parent, name, set(), [0])
    return os.path.normpath(resolved)


class Resolver:
    """``os.path.realpath`` done by hand (``lstat``/``readlink``, one path
    component at a time), with a budget shared by one whole folder check.

    Every component examined is one lookup (``..`` and answers already known
    included, so the work done is bounded however the links are spelt); a
    ``readlink`` is one more. Past :data:`MAX_LOOKUPS`, :class:`TooCostly`.
    One resolution follows at most :data:`MAX_HOPS` symlinks (the kernel's
    ELOOP limit: vLLM could not open the path either); past that, or in a
    loop, the path is returned unresolved from that link on, as realpath
    does for a loop. Known answers are kept for the check's lifetime: which
    paths are not symlinks, and where each symlink leads (a hub snapshot's
    links all point into one ``blobs/`` folder)."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = MAX_LOOKUPS if budget is None else budget
        self.lookups = 0
        shared = _PASS.plain  # within one_pass(): shared by the pass's checks
        self._plain: set[str] = set() if shared is None else shared  # lstat: no symlink
        self._links: dict[str, str] = {}  # symlink path -> where it leads, resolved

    def _spend(self) -> None:
        self.lookups += 1
        if self.lookups > self.budget:
            raise TooCostly(self.budget)

    def resolve(self, link: str) -> str:
        """The real path of ``link``, an absolute path whose parent is a real path."""
        head, name = os.path.split(link)
        path, _ = self._join(head, name, set(), [0])
        return os.path.normpath(path)

    def _join(self, path: str, rest: str, pending: set[str],
              hops: list[int]) -> tuple[str, bool]:
        """posixpath._joinrealpath: ``path`` is real; returns (path, resolved)."""
        if rest.startswith("/"):
            path = "/"
        while rest:
            name, _, rest = rest.partition("/")
            if not name or name == ".":
                continue
            self._spend()
            if name == "..":
                path = os.path.dirname(path) or "/"
                continue
            new = path + name if path.endswith("/") else f"{path}/{name}"  # posixpath.join
            if new in self._plain:
                path = new
                continue
            known = self._links.get(new)
            if known is not None:
                path = known
                continue
            try:
                is_link = stat.S_ISLNK(_lstat(new).st_mode)
            except OSError:
                is_link = False
            if not is_link:
                self._plain.add(new)
                path = new
                continue
            if new in pending or hops[0] >= MAX_HOPS:  # a loop, or ELOOP for the kernel
                return os.path.join(new, rest), False
            hops[0] += 1
            self._spend()
            try:
                text = os.readlink(new)
            except OSError:  # swapped for a non-link meanwhile: take it as it stands
                path = new
                continue
            pending.add(new)
            path, ok = self._join(path, text, pending, hops)
            pending.discard(new)
            if not ok:
                return os.path.join(path, rest), False
            self._links[new] = path
        return path, True


class _Pass(threading.local):
    plain: set[str] | None = None
    realpaths: dict[str, str] | None = None
    realdirs: dict[str, str] | None = None  # real_path's parents
    stats: dict[str, os.stat_result | OSError] | None = None


_PASS = _Pass()


@contextmanager
def one_pass() -> Iterator[None]:
    """Share, between the folder checks made inside the block (on this thread),
    which paths are not symlinks and the real paths of roots (see the module
    docstring). Nested blocks join the outer one."""
    if _PASS.plain is not None:
        yield
        return
    _PASS.plain, _PASS.realpaths, _PASS.realdirs, _PASS.stats = set(), {}, {}, {}
    try:
        yield
    finally:
        _PASS.plain = _PASS.realpaths = _PASS.realdirs = _PASS.stats = None


def _lstat(path: str) -> os.stat_result:
    """``os.lstat``, once per path within :func:`one_pass` (a model folder is
    resolved, checked and revalidated in one look). Walks always look afresh."""
    known = _PASS.stats
    if known is None:
        return os.lstat(path)
    got = known.get(path)
    if got is None:
        try:
            got = os.lstat(path)
        except OSError as e:
            got = e
        known[path] = got
    if isinstance(got, OSError):
        raise got
    return got


def realpath(path: str) -> str:
    """``os.path.realpath``, once per path within :func:`one_pass`."""
    known = _PASS.realpaths
    if known is None:
        return os.path.realpath(path)
    real = known.get(path)
    if real is None:
        real = known[path] = os.path.realpath(path)
    return real


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


class _Cache:
    """LRU of walks, bounded in folders and in stored paths; thread-safe."""

    def __init__(self, entries: int, items: int) -> None:
        self._entries, self._items = entries, items
        self._walks: OrderedDict[_Key, Walk] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: _Key) -> Walk | None:
        with self._lock:
            walk = self._walks.get(key)
            if walk is not None:
                self._walks.move_to_end(key)
            return walk

    def put(self, key: _Key, walk: Walk) -> None:
        with self._lock:
            self._pop(key)
            if walk.size > self._items:
                return
            self._walks[key] = walk
            self._size += walk.size
            while len(self._walks) > self._entries or self._size > self._items:
                self._pop(next(iter(self._walks)))

    def drop(self, key: _Key) -> None:
        with self._lock:
            self._pop(key)

    def clear(self) -> None:
        with self._lock:
            self._walks.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._walks)

    def _pop(self, key: _Key) -> None:
        old = self._walks.pop(key, None)
        if old is not None:
            self._size -= old.size


_CACHE = _Cache(CACHE_ENTRIES, CACHE_ITEMS)


def clear_cache() -> None:
    """Forget every cached verdict (tests; a config reload needs no call: the
    roots are part of the key)."""
    _CACHE.clear()
