"""The walk of local model folders (servesync.desired.model_dirs), through
model_paths.resolve_model_source, with real folders and real symlinks.

Layout under tmp_path/private (the storage root): hf/ with a hub-cache style
model (snapshot files are symlinks to ../../blobs), alice's home with her own
files, bob's home with his tokenizer and weights, datasets/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servesync.desired import model_dirs
from servesync.desired.model_paths import Rejection, resolve_model_source
from servesync.errors import IssueCode

MODEL = "users/alice/models/m"  # the folder under test, relative to the storage root
FILES = ("config.json", "tokenizer.json", "model.safetensors")


def _files(folder: Path, names: tuple[str, ...] = FILES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"{name} of {folder.name}\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "private"
    _files(root / "hf" / "org" / "model")
    blobs = root / "hf" / "models--org--m" / "blobs"
    snapshot = root / "hf" / "models--org--m" / "snapshots" / "rev1"
    _files(blobs, ("b1", "b2"))
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/b1")
    (snapshot / "model.safetensors").symlink_to("../../blobs/b2")
    _files(root / "users" / "alice" / "shared")
    _files(root / "users" / "bob" / "secret")
    _files(root / "datasets" / "d")
    return root


def check(root: Path, source: str = f"$HOME/{MODEL.split('/', 2)[2]}") -> str | Rejection:
    return resolve_model_source(source, user_id="alice", storage_root=str(root))


# Each entry: (path under the model folder, what it is). "file" and "dir" are real;
# "-> x" is a symlink to x: relative to the storage root unless x starts with "/" or "."
# ("-> ROOT": the storage root itself).
Entries = tuple[tuple[str, str], ...]

GOOD: list[tuple[str, Entries]] = [
    ("real files", (("config.json", "file"), ("model.safetensors", "file"))),
    ("a real sub-folder", (("config.json", "file"), ("sub", "dir"), ("sub/a.bin", "file"))),
    ("a file linked from hf/", (("tokenizer.json", "-> hf/org/model/tokenizer.json"),)),
    ("a file linked from my own home",
     (("tokenizer.json", "-> users/alice/shared/tokenizer.json"),)),
    ("a relative link staying in the folder", (("a", "file"), ("b", "-> ./a"))),
    ("a folder linked from my home, walked", (("shared", "-> users/alice/shared"),)),
    ("a folder linked from hf/, walked", (("base", "-> hf/org/model"),)),
    ("a dangling link inside my home", (("later.bin", "-> users/alice/not-yet"),)),
    ("a link loop inside the folder", (("sub", "dir"), ("sub/up", "-> ..")),),
    ("a link to my home itself", (("home", "-> users/alice"),)),
]


def _make(root: Path, entries: Entries) -> Path:
    folder = root / MODEL
    folder.mkdir(parents=True)
    for rel, what in entries:
        path = folder / rel
        if what == "file":
            path.write_text("x")
        elif what == "dir":
            path.mkdir()
        else:
            target = what.removeprefix("-> ")
            path.symlink_to(root if target == "ROOT" else
                            target if target[0] in "/." else root / target)
    return folder


@pytest.mark.parametrize("entries", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_folders_that_stay_inside_pass(root: Path, entries: Entries) -> None:
    _make(root, entries)
    assert check(root) == str(root / MODEL)


def test_a_hub_cache_snapshot_passes(root: Path) -> None:
    source = "$HOME/common/hf/models--org--m/snapshots/rev1"
    assert check(root, source) == str(root / "hf/models--org--m/snapshots/rev1")


@pytest.mark.parametrize("source", ["$HOME/models/not-yet", "$HOME/models/single.gguf"])
def test_a_missing_source_or_a_single_file_has_nothing_to_walk(root: Path, source: str) -> None:
    (root / "users/alice/models").mkdir(parents=True)
    (root / "users/alice/models/single.gguf").write_text("gguf")
    assert check(root, source) == source.replace("$HOME", str(root / "users/alice"))


# (id, entries, the entry the message names)
BAD: list[tuple[str, Entries, str]] = [
    ("tokenizer from bob (attack a)",
     (("config.json", "file"), ("tokenizer.json", "-> users/bob/secret/tokenizer.json")),
     "tokenizer.json"),
    ("weights from bob (attack a)",
     (("config.json", "file"), ("model.safetensors", "-> users/bob/secret/model.safetensors")),
     "model.safetensors"),
    ("deep inside", (("sub", "dir"), ("sub/deeper", "dir"), ("sub/deeper/x", "-> /etc/passwd")),
     "sub/deeper/x"),
    ("a folder linked from bob", (("weights", "-> users/bob/secret"),), "weights"),
    ("through a linked folder of mine", (("shared", "-> users/alice/shared"),
                                         ("z", "file")), "shared/leak"),
    ("datasets are no models", (("data", "-> datasets/d"),), "data"),
    ("the storage root itself", (("all", "-> ROOT"),), "all"),
    ("a dangling link into bob's folder", (("later.bin", "-> users/bob/not-yet"),), "later.bin"),
    ("a relative link climbing out", (("up", "-> ../../../bob/secret"),), "up"),
]


@pytest.mark.parametrize(("entries", "named"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_symlink_leading_out_is_refused_by_name(root: Path, entries: Entries,
                                                  named: str) -> None:
    if named == "shared/leak":  # a file in my shared folder that leads to bob's
        (root / "users/alice/shared/leak").symlink_to(root / "users/bob/secret/tokenizer.json")
    _make(root, entries)
    got = check(root)
    assert isinstance(got, Rejection), got
    assert got.code is IssueCode.FORBIDDEN
    assert got.message.startswith(f"{named} in {root / MODEL} is a symlink that leads out of")
    assert "bob" not in got.message  # names the entry, never where it leads
    assert "of secret" not in got.message  # never a file's contents


def test_too_deep_is_refused_with_the_bound(root: Path) -> None:
    deep = root / MODEL / "/".join(f"d{i}" for i in range(model_dirs.MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    got = check(root)
    assert isinstance(got, Rejection) and got.code is IssueCode.FORBIDDEN
    assert "more than 16 folders deep" in got.message
    deep.rmdir()  # one level less passes
    assert check(root) == str(root / MODEL)


def test_too_many_entries_is_refused_with_the_bound(root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_dirs.MAX_ENTRIES == 10_000
    monkeypatch.setattr(model_dirs, "MAX_ENTRIES", 5)
    folder = _make(root, tuple((f"f{i}", "file") for i in range(5)))
    assert check(root) == str(folder)
    (folder / "f5").write_text("x")
    got = check(root)
    assert isinstance(got, Rejection) and got.code is IssueCode.FORBIDDEN
    assert "more than 5 files and folders" in got.message


def test_an_unlistable_folder_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM could still open files in it by name. (Made unlistable by a fake
    scandir: the tests may run as root, which lists any folder.)"""
    folder = _make(root, (("sub", "dir"),))
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if Path(path) == folder / "sub":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(model_dirs.os, "scandir", scandir)
    got = check(root)
    assert isinstance(got, Rejection) and got.code is IssueCode.FORBIDDEN
    assert got.message == f"sub/ in {folder} cannot be listed (Permission denied), " \
        "so it cannot be checked"


# --- the cache ---------------------------------------------------------------------


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every os.scandir call the walk makes, with the walk's clock 10 s ahead (so
    folders made by the test are not "racily" fresh, and may be cached)."""
    model_dirs.clear_cache()
    calls: list[str] = []
    real_scandir, real_now = os.scandir, time.time_ns

    def counting(path: str) -> object:
        calls.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(model_dirs.os, "scandir", counting)
    monkeypatch.setattr(model_dirs, "_now_ns", lambda: real_now() + 10_000_000_000)
    yield calls
    model_dirs.clear_cache()


def _tick() -> None:
    """Let the file system's coarse clock move on (a jiffy), so a change made now
    gets a new ctime. In production RACY_NS covers this: a folder changed within
    2 s of a walk is not cached at all; the test moved the walk's clock instead."""
    time.sleep(0.02)


def test_a_second_validation_walks_nothing(root: Path, scans: list[str]) -> None:
    folder = _make(root, (("config.json", "file"), ("sub", "dir"), ("sub/a.bin", "file"),
                          ("tok.json", "-> hf/org/model/tokenizer.json")))
    assert check(root) == str(folder)
    assert sorted(scans) == [str(folder), str(folder / "sub")]
    scans.clear()
    for _ in range(3):
        assert check(root) == str(folder)
    assert scans == []


def test_a_file_replaced_by_a_symlink_out_is_caught_next_time(root: Path,
                                                              scans: list[str]) -> None:
    folder = _make(root, (("sub", "dir"), ("sub/model.safetensors", "file")))
    assert check(root) == str(folder)
    _tick()
    (folder / "sub/model.safetensors").unlink()
    (folder / "sub/model.safetensors").symlink_to(root / "users/bob/secret/model.safetensors")
    got = check(root)
    assert isinstance(got, Rejection) and got.message.startswith("sub/model.safetensors in")
    assert check(root) == got  # the refusal is cached too...
    _tick()
    (folder / "sub/model.safetensors").unlink()
    assert check(root) == str(folder)  # ...until the folder changes


def test_a_reset_mtime_does_not_hide_a_change(root: Path, scans: list[str]) -> None:
    folder = _make(root, (("model.safetensors", "file"),))
    before = os.stat(folder)
    assert check(root) == str(folder)
    _tick()
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(root / "users/bob/secret/model.safetensors")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -d, back in time
    assert os.stat(folder).st_mtime_ns == before.st_mtime_ns
    assert isinstance(check(root), Rejection)


def test_a_folder_swapped_behind_a_symlink_is_caught(root: Path, scans: list[str]) -> None:
    """The link itself and every folder walked stay the same; only where the link
    leads changes: links are resolved again on every validation."""
    folder = _make(root, (("tokenizer.json", "-> users/alice/shared/tokenizer.json"),))
    assert check(root) == str(folder)
    shared = root / "users/alice/shared"
    shared.rename(root / "users/alice/old-shared")
    shared.symlink_to(root / "users/bob/secret")
    got = check(root)
    assert isinstance(got, Rejection) and got.message.startswith("tokenizer.json in")


def test_a_freshly_changed_folder_is_not_cached(root: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real clock, a folder changed less than 2 s ago is walked again."""
    model_dirs.clear_cache()
    calls: list[str] = []
    real_scandir = os.scandir

    def counting(path: str) -> object:
        calls.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(model_dirs.os, "scandir", counting)
    folder = _make(root, (("config.json", "file"),))
    check(root)
    check(root)
    assert calls == [str(folder), str(folder)]


def test_the_cache_is_bounded() -> None:
    cache = model_dirs._Cache(entries=2, items=5)

    def walk(n: int) -> model_dirs.Walk:
        return model_dirs.Walk(None, tuple((f"/d{i}", 0, i, 0, 0) for i in range(n)), (), True)

    for name in ("a", "b", "c"):
        cache.put((name, ()), walk(1))
    assert cache.get(("a", ())) is None and len(cache) == 2  # least recently used went
    cache.put(("d", ()), walk(4))  # 1 + 4 items: "b" goes
    assert cache.get(("b", ())) is None and cache.get(("c", ())) is not None
    cache.put(("e", ()), walk(6))  # bigger than the whole cache: not kept
    assert cache.get(("e", ())) is None


def test_resolving_links_by_their_folder_matches_realpath(tmp_path: Path) -> None:
    """The walk resolves links by hand, remembering what it learnt; the result is
    realpath's."""
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "real/f").write_text("x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    (tmp_path / "chain").symlink_to("alias/f")
    links = tmp_path / "links"
    links.mkdir()
    targets = ["../real/f", str(tmp_path / "alias/f"), "../alias/sub/..//f", "../chain",
               "../alias", "../missing/x", "../alias/missing/../f", "..", ".", "/",
               "../alias/sub/.", "loop-a", "loop-b"]
    for i, target in enumerate(targets):
        (links / f"l{i}").symlink_to(target)
    (links / "loop-a").symlink_to("loop-b")
    (links / "loop-b").symlink_to("loop-a")
    resolver = model_dirs.Resolver()  # one for all: what it learns is shared
    for link in sorted(links.iterdir()):
        got = resolver.resolve(str(link))
        if "loop" in os.readlink(link):  # unreadable (ELOOP): any name in the loop will do
            assert os.path.dirname(got) == str(links), link
        else:
            assert got == os.path.realpath(link), link


# --- the cost of resolving links ----------------------------------------------------


def _chain(root: Path, links: int, *, depth: int = 300, hops: int = 39) -> Path:
    """The hostile review's folder: ``links`` symlinks into a chain of ``hops``
    symlinks in a folder ``depth`` levels deep, outside the model folder (so the
    depth bound never sees it) but inside alice's home."""
    deep = root / "users/alice/c" / "/".join(["d"] * depth)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    prev = deep / "f"
    for i in range(hops):
        (deep / f"h{i}").symlink_to(prev)
        prev = deep / f"h{i}"
    folder = root / MODEL
    folder.mkdir(parents=True)
    for n in range(links):
        (folder / f"l{n}").symlink_to(prev)
    return folder


@pytest.fixture
def lstats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every os.lstat and os.readlink call of model_dirs; the walk's clock 10 s
    ahead (so the test's folders may be cached)."""
    model_dirs.clear_cache()
    calls: list[str] = []
    real_lstat, real_readlink, real_now = os.lstat, os.readlink, time.time_ns

    def lstat(path: str) -> os.stat_result:
        calls.append(str(path))
        return real_lstat(path)

    def readlink(path: str) -> str:
        calls.append(str(path))
        return real_readlink(path)

    monkeypatch.setattr(model_dirs.os, "lstat", lstat)
    monkeypatch.setattr(model_dirs.os, "readlink", readlink)
    monkeypatch.setattr(model_dirs, "_now_ns", lambda: real_now() + 10_000_000_000)
    yield calls
    model_dirs.clear_cache()


def test_links_into_a_deep_chain_are_refused_as_too_costly(root: Path,
                                                           lstats: list[str]) -> None:
    """50 links, each 40 hops through 300 folders: realpath did 12,000 lookups a
    link; the check stops at the budget and refuses (never passes silently)."""
    assert model_dirs.MAX_LOOKUPS == 20_000
    folder = _chain(root, 50)
    got = check(root)
    assert isinstance(got, Rejection) and got.code is IssueCode.FORBIDDEN
    assert got.message == f"{folder} has symlinks that take more than 20,000 lookups " \
        "to resolve: too costly to check"
    assert len(lstats) <= 20_000 + 100  # the budget, and a few stats of the walk itself
    lstats.clear()
    assert check(root) == got  # not cached (fixing it need not touch the folder)...
    assert len(lstats) <= 20_000 + 100  # ...and as bounded again


def test_differently_spelt_links_cannot_dodge_the_budget(root: Path, lstats: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What the resolver remembers makes repeated paths cheap, not free: each
    component still counts, so no spelling of the links escapes the budget."""
    monkeypatch.setattr(model_dirs, "MAX_LOOKUPS", 1_000)
    folder = _chain(root, 0, depth=40, hops=0)
    deep = str(root / "users/alice/c" / "/".join(["d"] * 40))
    for n in range(30):  # 30 x ~50 components, each spelt apart
        (folder / f"l{n}").symlink_to(deep + "/." * n + "/f")
    got = check(root)
    assert isinstance(got, Rejection) and "more than 1,000 lookups" in got.message
    assert len(lstats) <= 1_000 + 10
    for n in range(15, 30):
        (folder / f"l{n}").unlink()
    assert check(root) == str(folder)  # 15 x ~50 fits


def test_revalidating_a_passing_folder_is_bounded(root: Path, lstats: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached verdict is checked every tick by resolving every link again:
    with the same budget, and a check that grew too costly is refused, not
    passed."""
    folder = _chain(root, 3, depth=100, hops=5)
    assert check(root) == str(folder)
    first = len(lstats)
    lstats.clear()
    assert check(root) == str(folder)  # from the cache: re-resolves the links
    assert 0 < len(lstats) <= first
    resolvers: list[model_dirs.Resolver] = []

    class Counted(model_dirs.Resolver):
        def __init__(self) -> None:
            super().__init__()
            resolvers.append(self)

    monkeypatch.setattr(model_dirs, "Resolver", Counted)
    monkeypatch.setattr(model_dirs, "MAX_LOOKUPS", 50)  # the links now cost more than that
    got = check(root)
    assert isinstance(got, Rejection) and "more than 50 lookups" in got.message
    # the source path's own resolutions (cheap), then the revalidation gave up,
    # then the walk did: 51 lookups each, no more
    *sources, revalidation, walk = [r.lookups for r in resolvers]
    assert all(n < 51 for n in sources) and [revalidation, walk] == [51, 51]


def test_more_than_40_hops_is_left_unresolved_as_the_kernel_would(tmp_path: Path) -> None:
    prev = tmp_path / "f"
    prev.write_text("x")
    for i in range(45):
        (tmp_path / f"h{i}").symlink_to(prev.name)
        prev = tmp_path / f"h{i}"
    assert model_dirs.Resolver().resolve(str(tmp_path / "h39")) == str(tmp_path / "f")  # 40
    assert model_dirs.Resolver().resolve(str(tmp_path / "h44")) == str(tmp_path / "h4")
    with pytest.raises(OSError):  # and the kernel cannot open it either
        (tmp_path / "h44").read_text()


def test_a_model_source_that_is_itself_a_costly_link_is_refused(tmp_path: Path) -> None:
    """The source path is resolved within the same budget as a folder's entries."""
    from servesync.desired.model_paths import Rejection, resolve_model_source

    home = tmp_path / "private" / "users" / "alice"
    deep = home / "c" / "/".join(["d"] * 300)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    prev = deep / "f"
    for i in range(39):
        (deep / f"h{i}").symlink_to(prev)
        prev = deep / f"h{i}"
    (home / "src").symlink_to(prev)
    lookups = {"n": 0}
    real_lstat = os.lstat

    def counting(path: object, *args: object, **kwargs: object) -> os.stat_result:
        lookups["n"] += 1
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    import servesync.desired.model_dirs as md
    old = md.MAX_LOOKUPS
    md.MAX_LOOKUPS = 2_000
    try:
        os.lstat = counting  # type: ignore[assignment]
        got = resolve_model_source("$HOME/src", user_id="alice",
                                   storage_root=str(tmp_path / "private"), allow_hub_ids=True)
    finally:
        os.lstat = real_lstat  # type: ignore[assignment]
        md.MAX_LOOKUPS = old
    assert isinstance(got, Rejection) and "too costly to check" in got.message
    assert lookups["n"] <= 2_100
