"""Find and read the desired-state YAML files, keeping a line for every field.

Called by :mod:`servesync.desired.validating` (and so by the daemon's tick and by
``servesync validate``). Reads files under the tree; no other side effects.
Every file is untrusted input of one tenant: whatever its content, name or
place in the tree, it becomes documents or issues; nothing here raises
because of it, and the work per file is bounded (:data:`MAX_FILE_BYTES`,
:data:`MAX_DOCUMENTS`, :data:`MAX_NODES`, :data:`MAX_DEPTH`).

What it does, per file:

* walks the tree iteratively (no recursion, whatever the depth): every
  ``*.yaml``/``*.yml`` under ``users/<user_id>/`` is a desired-state file. Any
  other YAML file, top-level ones included, is reported (400 "not under
  users/<user_id>/"), unread, so a model file put in the wrong place is never
  silently ignored; the issue names no user, so it holds back no model.
  Anything whose path has a component starting with ``.`` (``.git``,
  ``.github``, ``.pre-commit-config.yaml``) is repository tooling and
  ignored. Symlinks under ``users/`` are refused (403): a committed link could
  point at another user's folder or outside the tree; directory symlinks
  elsewhere are not followed.
* a folder it cannot list (permissions, a path too long), a folder more than
  :data:`MAX_FOLDER_DEPTH` folders below ``users/<user_id>/``, and a file or
  folder whose name is not UTF-8 are each a 400 on that entry, unread. Such a
  folder is a :class:`LoadedFile` with ``folder=True`` and a path ending in
  ``/``: what it holds is unknown, so the planner keeps the models recorded
  from files under it (never deletes them). A name that is not UTF-8 is shown
  with backslash escapes (``m\\xff.yaml``), so issues, JSON output and status
  files stay valid UTF-8. A desired-state root that can't be listed raises
  :class:`~servesync.errors.SourceError`, like a missing one.
* :func:`users_dir_problem` is the one check that a tree has a ``users/``
  folder, shared by the daemon's directory source (which refuses such a tree)
  and ``servesync validate`` (which reports it).
* refuses files over 256 KiB and files that are not UTF-8 (400).
* composes the YAML documents with libyaml's parser and PyYAML's composer,
  refusing anchors and aliases (so alias bombs can't expand) and nesting deeper
  than :data:`MAX_DEPTH`, then builds plain Python values itself from the
  nodes (safe_load semantics: null/bool/int/float/str, mappings, sequences),
  recording the line of every mapping key and sequence item under its JSON
  pointer. Integers outside 64 bits and numbers beyond the float range are
  422 on their field (never converted: a 4,000-digit integer costs nothing).
  Mapping keys longer than :data:`MAX_KEY_CHARS` are 400.
* reading a file stops at its first YAML error (syntax, anchor, nesting), at
  document :data:`MAX_DOCUMENTS` + 1 and at node :data:`MAX_NODES` + 1: the
  documents before it are kept, and one last :class:`RawDocument` carries the
  400 and says where reading stopped. YAML can't be resynchronised reliably
  after a syntax error, and retrying part by part made one 256 KiB file cost
  seconds; the file is reported, so the models it declared keep their last
  good version (the planner holds files with issues).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from servesync.errors import Issue, IssueCode, SourceError
from servesync.redaction import quote

MAX_FILE_BYTES = 256 * 1024
RACY_NS = 2_000_000_000  # see Reads
MAX_DEPTH = 64  # YAML nesting of one document
MAX_DOCUMENTS = 100  # YAML documents per file, empty ones included
MAX_NODES = 10_000  # YAML nodes (mapping keys, values, list items) per file
MAX_KEY_CHARS = 256  # characters of one mapping key
MAX_FOLDER_DEPTH = 32  # folders below users/<user_id>/
YAML_SUFFIXES = (".yaml", ".yml")
USER_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
USERS_DIR = "users"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str"))
_CONTENT_LINE_RE = re.compile(  # a line that is not blank, a comment, a directive or a marker
    r"^(?![ \t\r]*(?:#.*)?$)(?!%)(?!(?:---|\.\.\.)[ \t\r]*(?:#.*)?$)", re.MULTILINE)
_MAX_STEP_BACK = 1000  # lines an error's line is moved back over, at most
_MAX_WALK_DEPTH = 2 + MAX_FOLDER_DEPTH  # users/<user_id>/ + the folders below
_MAX_INT_TEXT = 64  # significant characters: more is beyond 64 bits in any YAML base
_INT_RE = re.compile(  # YAML 1.1 integers, as PyYAML's resolver and constructor read them
    r"[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]*|[1-9][0-9_]*(?::[0-5]?[0-9])*)")
_CONSTRUCTOR = SafeConstructor()


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One YAML document as read: plain data plus path -> line (1-based).

    ``lines`` is keyed by the path's tokens (``("env", "X")`` for ``/env/X``),
    not by pointer strings: a pointer repeats every key above it, so deep
    documents with long keys would cost memory quadratic in their size."""

    index: int  # 0-based among the file's non-empty documents
    line: int  # line of the document's first node
    data: Any = None  # None when ``issues`` is not empty
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    issues: tuple[Issue, ...] = ()
    stopped: bool = False  # reading the file stopped here (the last document)

    def line_of(self, pointer: str) -> int:
        """The line of ``pointer``, else of its nearest parent, else the document's."""
        tokens = tuple(unescape(t) for t in pointer.split("/")[1:]) if pointer else ()
        for end in range(len(tokens), 0, -1):
            line = self.lines.get(tokens[:end])
            if line is not None:
                return line
        return self.line


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """One file (or an unreadable folder): its owner, file-level issues, documents.

    ``folder`` is True for a folder that could not be read (its path ends in
    ``/``): the models recorded from files under it are kept as they are."""

    path: str  # relative to the root, '/'-separated
    user_id: str | None
    issues: tuple[Issue, ...] = ()
    documents: tuple[RawDocument, ...] = ()
    folder: bool = False


class _Refused(yaml.MarkedYAMLError):
    """A construct servesync refuses although YAML allows it."""


class _TooMany(_Refused):
    """The file has more nodes than :data:`MAX_NODES`."""


class _Loader(Composer, CParser, Resolver):
    """libyaml's parser under PyYAML's composer, which we can intercept."""

    def __init__(self, text: str) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self.nodes = 0
        self.start_line0 = 0  # where the document being read (or the next one) begins

    def compose_document(self) -> Node | None:
        self.start_line0 = _line0(self.get_event(), "start_mark", self.start_line0)
        node = self.compose_node(None, None)
        self.start_line0 = _line0(self.get_event(), "end_mark", self.start_line0)
        self.anchors = {}
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        mark: Any = getattr(event, "start_mark", None)
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(None, None, "anchors and aliases (&name, *name) are not allowed", mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooMany(None, None, f"more than {MAX_NODES:,} YAML nodes (keys, values, "
                           "list items) in one file", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line0(event: Any, mark: str, default: int) -> int:
    """0-based line of an event's start or end mark (``default`` if it has none)."""
    found = getattr(getattr(event, mark, None), "line", None)
    return found if isinstance(found, int) else default


def escape(key: str) -> str:
    """Escape one JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """The key one JSON pointer token names (RFC 6901)."""
    return token.replace("~1", "/").replace("~0", "~")


def user_of(rel: str) -> str | None:
    """The user id a relative path names (``users/<id>/...``), if valid."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0] == USERS_DIR and USER_ID_RE.fullmatch(parts[1]):
        return parts[1]
    return None


def _is_yaml(name: str) -> bool:
    return name.lower().endswith(YAML_SUFFIXES)


def shown_name(name: str) -> str | None:
    """``name`` with backslash escapes when it is not UTF-8 (as read from the
    file system, with surrogate escapes), else None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One entry of the tree to judge: a file, a symlink, or an entry not read."""

    rel: str  # '/'-separated; a folder's ends with '/'
    is_symlink: bool = False
    problem: str | None = None  # why it is not read (a 400 on it)


_KEPT = "the models in it keep their last good version"


def iter_candidates(root: Path) -> Iterator[Candidate]:
    """Every file, link and unread entry to judge, sorted by path.

    Iterative (an explicit stack), so no tree shape can exhaust Python's
    recursion limit; folders deeper than :data:`MAX_FOLDER_DEPTH` below
    ``users/<user_id>/`` are reported, not listed. Raises
    :class:`SourceError` only when ``root`` itself can't be listed."""
    found: list[Candidate] = []
    stack: list[tuple[str, int]] = [("", 0)]  # (relative folder + '/', its depth)
    while stack:
        prefix, depth = stack.pop()
        try:
            with os.scandir(os.path.join(root, prefix)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if not prefix:
                raise SourceError(f"{root}: cannot read the desired-state folder: "
                                  f"{e.strerror or e}") from e
            found.append(Candidate(prefix, problem=f"cannot read this folder: "
                                   f"{e.strerror or e}; {_KEPT}"))
            continue
        under_users = prefix.startswith(USERS_DIR + "/")
        for entry in entries:
            found.extend(_judge(entry, prefix, depth, under_users, stack))
    yield from sorted(found, key=lambda c: c.rel)


def _judge(entry: os.DirEntry[str], prefix: str, depth: int, under_users: bool,
           stack: list[tuple[str, int]]) -> Iterator[Candidate]:
    """The candidates one folder entry yields; folders to list go on ``stack``."""
    name = entry.name
    if name.startswith("."):
        return
    rel = prefix + name
    bad_name = shown_name(name)
    try:
        is_dir, is_link = entry.is_dir(), entry.is_symlink()
    except OSError as e:
        if under_users or _is_yaml(name):
            yield Candidate(prefix + (bad_name or name), problem=f"cannot read: "
                            f"{e.strerror or e}; {_KEPT}")
        return
    if is_dir and is_link:
        if under_users or rel == USERS_DIR:
            yield Candidate(prefix + (bad_name or name), is_symlink=True)
    elif is_dir and bad_name is not None:
        yield Candidate(prefix + bad_name + "/", problem="folder name is not UTF-8 (shown "
                        "with backslash escapes): not read; rename it")
    elif is_dir and depth + 1 > _MAX_WALK_DEPTH:
        where = f"{MAX_FOLDER_DEPTH} folders below {USERS_DIR}/<user_id>/" if under_users \
            else f"{_MAX_WALK_DEPTH} folders"
        yield Candidate(rel + "/", problem=f"folder nested deeper than {where}: not read; "
                        f"{_KEPT}")
    elif is_dir:
        stack.append((rel + "/", depth + 1))
    elif _is_yaml(name) and bad_name is not None:
        yield Candidate(prefix + bad_name, problem="file name is not UTF-8 (shown with "
                        "backslash escapes): not read; rename it")
    elif _is_yaml(name):
        yield Candidate(rel, is_symlink=is_link)


def users_dir_problem(root: Path) -> str | None:
    """Why ``root`` can't be a desired-state tree (it has no ``users/`` folder), or None.

    Without ``users/`` the path is most likely wrong (a typo, a share that is
    not mounted), not "no models": the daemon refuses such a tree rather than
    let the planner delete every model, and ``servesync validate`` fails it."""
    if (root / USERS_DIR).is_dir():
        return None
    return f"no {USERS_DIR}/ folder in the desired-state folder"


def _file_issue(rel: str, code: IssueCode, message: str, *, folder: bool = False
                ) -> LoadedFile:
    return LoadedFile(path=rel, user_id=user_of(rel),
                      issues=(Issue(code, rel, 0, "", message),), folder=folder)


Parser = Callable[[str, str], tuple[RawDocument, ...]]
"""``(text, rel) -> documents``: :func:`parse_text`, or a cache in front of it."""


def _parse(text: str, rel: str) -> tuple[RawDocument, ...]:
    return parse_text(text, rel=rel)


class Reads:
    """The text of each file read before, with the stamp it had: (device,
    inode, size, mtime, ctime) from ``lstat``. A file whose stamp is unchanged
    is not opened again, so an idle pass costs one ``lstat`` a file.

    Git's "racily clean" rule: a file changed less than :data:`RACY_NS` before
    it was read is not kept (a write within the clock's granularity could
    leave the stamp as it was), so it is read again until it has been still
    for that long. Entries of files gone from the tree are dropped by
    :meth:`keep`."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[tuple[int, ...], str]] = {}
        self.now_ns = time.time_ns  # tests move it

    def get(self, rel: str, stamp: tuple[int, ...]) -> str | None:
        hit = self._texts.get(rel)
        return hit[1] if hit is not None and hit[0] == stamp else None

    def put(self, rel: str, stamp: tuple[int, ...], text: str, read_ns: int) -> None:
        if max(stamp[3], stamp[4]) > read_ns - RACY_NS:
            self._texts.pop(rel, None)
        else:
            self._texts[rel] = (stamp, text)

    def keep(self, rels: set[str]) -> None:
        for gone in [rel for rel in self._texts if rel not in rels]:
            del self._texts[gone]


def load_file(root: Path, rel: str, *, is_symlink: bool = False,
              parse: Parser = _parse, reads: Reads | None = None) -> LoadedFile:
    """Read one candidate file (``rel`` relative to ``root``) into documents."""
    parts = rel.split("/")
    if is_symlink and parts[0] == USERS_DIR:
        return _file_issue(rel, IssueCode.FORBIDDEN, "symlinks are not allowed under users/")
    if len(parts) < 3 or parts[0] != USERS_DIR:
        return _file_issue(rel, IssueCode.INVALID, "not under users/<user_id>/: ignored")
    if not USER_ID_RE.fullmatch(parts[1]):
        return _file_issue(rel, IssueCode.INVALID, f"folder {quote(parts[1])} is not a valid "
                           f"user id (^[a-z0-9][a-z0-9_-]{{0,31}}$)")
    try:
        text = _text(os.fspath(root), rel, reads)
    except _Unreadable as e:
        return _file_issue(rel, IssueCode.INVALID, str(e))
    except UnicodeDecodeError as e:
        return _file_issue(rel, IssueCode.INVALID, f"not UTF-8: {e.reason} at byte {e.start}")
    except OSError as e:
        return _file_issue(rel, IssueCode.INVALID, f"cannot read: {e.strerror or e}; "
                           "its models keep their last good version")
    return LoadedFile(path=rel, user_id=parts[1], documents=parse(text, rel))


class _Unreadable(Exception):
    """The file can't be read as a desired-state file (size, type)."""


def _text(root: str, rel: str, reads: Reads | None) -> str:
    """The file's text (UTF-8, BOM dropped), refusing non-regular files and
    reading at most the limit + 1 bytes; from ``reads`` when its stamp holds.

    What is read must be the very file the ``lstat`` saw (same device and
    inode) and lie where the walk found it: a folder of the path swapped for
    a symlink meanwhile (a tenant racing a plain-folder source) would
    otherwise let servesync read, and keep, another file under this name."""
    path = os.path.join(root, rel)
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _Unreadable(f"file is {info.st_size} bytes, over the {MAX_FILE_BYTES} byte limit")
    stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if reads is not None:
        known = reads.get(rel, stamp)
        if known is not None:
            return known
        read_ns = reads.now_ns()
    # Not following a link nor blocking on a FIFO swapped in since the lstat.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise _Unreadable("not a regular file")
        if (opened.st_dev, opened.st_ino) != stamp[:2] or not _opened_at(fd, root, rel):
            raise OSError(errno.EAGAIN, "it changed while being read (read again next pass)")
        data = f.read(MAX_FILE_BYTES + 1)
        stamp = (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns,
                 opened.st_ctime_ns)
    if len(data) > MAX_FILE_BYTES:
        raise _Unreadable(f"file is over the {MAX_FILE_BYTES} byte limit")
    text = data.decode("utf-8-sig")
    if reads is not None:
        reads.put(rel, stamp, text, read_ns)
    return text


def _opened_at(fd: int, root: str, rel: str) -> bool:
    """Whether ``fd`` is the file ``rel`` of ``root`` reached with no symlink
    on the way (the walk refuses linked folders under ``users/``): the
    kernel's name for it (``/proc/self/fd``) is the real root joined with
    ``rel``. True where ``/proc`` is missing (nothing to compare)."""
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return name == os.path.join(os.path.realpath(root), rel)


def load_tree(root: Path, *, parse: Parser = _parse,
              reads: Reads | None = None) -> tuple[LoadedFile, ...]:
    """Every candidate of the tree, loaded (or reported), in path order;
    ``parse`` turns a file's text into documents; ``reads``: the texts of the
    previous pass, to skip the files whose stamp is unchanged."""
    files = tuple(
        load_file(root, c.rel, is_symlink=c.is_symlink, parse=parse, reads=reads)
        if c.problem is None
        else _file_issue(c.rel, IssueCode.INVALID, c.problem, folder=c.rel.endswith("/"))
        for c in iter_candidates(root)
    )
    if reads is not None:
        reads.keep({f.path for f in files})
    return files


def parse_text(text: str, *, rel: str) -> tuple[RawDocument, ...]:
    """All non-empty documents of one file's text, in order. Never raises for bad YAML.

    Reading stops at the first YAML error, at document :data:`MAX_DOCUMENTS`
    + 1 or node :data:`MAX_NODES` + 1; the last document then carries the
    issue (no data), and nothing after it is read."""
    loader = _Loader(text)
    docs: list[RawDocument] = []
    seen = 0  # documents started, empty ones included
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                seen += 1
                if seen > MAX_DOCUMENTS:
                    loader.start_line0 = _line0(loader.peek_event(), "start_mark",
                                                loader.start_line0)
                    docs.append(_stopped(text, rel, len(docs), loader.start_line0, None,
                                         f"more than {MAX_DOCUMENTS} YAML documents in one "
                                         "file: this one and the rest are not read; split "
                                         "the file", say_where=False))
                    break
                node = loader.get_node()
            except _TooMany as e:  # not a YAML error: a limit of servesync's
                line, message = _describe(e, text)
                message = message.removeprefix("invalid YAML: ") + ": this document and the " \
                    "rest are not read; split the file"
                docs.append(_stopped(text, rel, len(docs), loader.start_line0, line, message,
                                     say_where=False))
                break
            except (yaml.YAMLError, ValueError) as e:
                line, message = _describe(e, text)
                docs.append(_stopped(text, rel, len(docs), loader.start_line0, line, message))
                break
            if node is not None and not _empty(node):
                docs.append(_document(node, len(docs), rel))
    finally:
        loader.dispose()
    return tuple(docs)


def _empty(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"
                            and node.value == "")


def _stopped(text: str, rel: str, index: int, start0: int, line: int | None,
             message: str, *, say_where: bool = True) -> RawDocument:
    """The document where reading stopped: its first content line, and the
    issue at ``line`` (None: that first line), moved off the next ``---`` or
    blank lines a parser reports an unterminated construct at. Regex scans
    and bounded loops only: this runs on files built to be slow."""
    lines = text.split("\n")

    def offset(line0: int) -> int:  # where 0-based line ``line0`` starts
        line0 = min(line0, len(lines))
        return len("\n".join(lines[:line0])) + 1 if line0 else 0

    limit = len(lines) if line is None else max(1, min(line, len(lines)))
    found = _CONTENT_LINE_RE.search(text, offset(start0))
    first = limit if found is None else min(limit, text.count("\n", 0, found.start()) + 1)
    line = first if line is None else limit
    for _ in range(_MAX_STEP_BACK):
        if line <= first or _CONTENT_LINE_RE.match(lines[line - 1]):
            break
        line -= 1
    if say_where and _CONTENT_LINE_RE.search(text, offset(line)):
        message += f"; reading stopped here: nothing after line {line} is read"
    issue = Issue(IssueCode.INVALID, rel, line, "", message)
    return RawDocument(index=index, line=min(first, line), issues=(issue,), stopped=True)


def _describe(error: Exception, text: str) -> tuple[int, str]:
    """(1-based line, message) of a YAML error."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        parts = [p for p in (error.context, error.problem) if p]
        line = mark.line + 1 if mark is not None else 1
        return line, "invalid YAML: " + "; ".join(parts)
    position = getattr(error, "position", None)
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
    return line, f"invalid YAML: {error}".splitlines()[0]


def _pointer(path: tuple[str, ...]) -> str:
    return "".join(f"/{escape(t)}" for t in path)


def _clipped(text: str, limit: int = 24) -> str:
    """``text`` as quoted in a message: at most ``limit`` characters and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-6:]} ({len(text):,} characters)"


class _Builder:
    """Turns a composed node tree into plain values, collecting issues and lines."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.lines: dict[tuple[str, ...], int] = {}
        self.issues: list[Issue] = []

    @staticmethod
    def line(node: Node) -> int:
        return int(node.start_mark.line) + 1

    def refuse(self, node: Node, path: tuple[str, ...], message: str,
               code: IssueCode = IssueCode.INVALID) -> None:
        self.issues.append(Issue(code, self.rel, self.line(node), _pointer(path), message))

    def build(self, node: Node, path: tuple[str, ...]) -> Any:
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self.refuse(node, path, f"YAML tag {_clipped(node.tag, 60)} is not allowed")
            items = []
            for i, item in enumerate(node.value):
                child = (*path, str(i))
                self.lines[child] = self.line(item)
                items.append(self.build(item, child))
            return items
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: tuple[str, ...]) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            self.refuse(node, path, f"YAML tag {_clipped(node.tag, 60)} is not allowed")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "str"):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "<collection>"
                self.refuse(key_node, path, f"mapping key {quote(shown)} must be a string "
                            "(quote it; merge keys << are not allowed)")
                continue
            key = str(key_node.value)
            if len(key) > MAX_KEY_CHARS:
                self.refuse(key_node, path, f"mapping key {quote(key)} is longer "
                            f"than {MAX_KEY_CHARS} characters")
                continue
            child = (*path, key)
            if key in out:
                self.refuse(key_node, child, f"duplicate key {quote(key)}")
                continue
            self.lines[child] = self.line(key_node)
            out[key] = self.build(value_node, child)
        return out

    def _scalar(self, node: Node, path: tuple[str, ...]) -> Any:
        if node.tag not in _SCALAR_TAGS:
            kind = _clipped(node.tag.removeprefix(_TAG), 60)
            self.refuse(node, path, f"YAML type {kind!r} is not allowed here; quote the "
                        "value if it is a string")
            return None
        text = str(node.value)
        if node.tag == _TAG + "int" and _INT_RE.fullmatch(text) \
                and _significant(text) > _MAX_INT_TEXT:
            return self._out_of_range(node, path, text)  # never converted: no huge ints
        try:
            value = _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        except OverflowError:  # a sexagesimal float: 1:00:...:00.5
            return self._out_of_range(node, path, text)
        except (ValueError, TypeError, LookupError, ArithmeticError):  # e.g. !!int "", !!bool x
            self.refuse(node, path, f"{_shown(path, quote(text))} is not a valid "
                        f"{node.tag.removeprefix(_TAG)}")
            return None
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT64_MIN <= value <= INT64_MAX:
            return self._out_of_range(node, path, text)
        if isinstance(value, float) and not math.isfinite(value):
            if text.replace("_", "").lower().lstrip("+-") in (".inf", ".nan"):
                self.refuse(node, path, "infinite or NaN numbers are not allowed")
            else:  # a literal too large for a float (1.0e+400, 10...0.0)
                self._out_of_range(node, path, text)
            return None
        return value

    def _out_of_range(self, node: Node, path: tuple[str, ...], text: str) -> None:
        if node.tag == _TAG + "int":
            self.refuse(node, path, f"the integer {_shown(path, _clipped(text))} is out of "
                        "range (integers "
                        "must fit in 64 bits: -2^63 to 2^63-1)", IssueCode.UNPROCESSABLE)
        else:
            self.refuse(node, path, f"the number {_shown(path, _clipped(text))} is out of range "
                        "(beyond ±1.8e308)", IssueCode.UNPROCESSABLE)


def _shown(path: tuple[str, ...], text: str) -> str:
    """``text``, or nothing of it under ``env``: env values may be secrets."""
    return "(value not shown)" if path[:1] == ("env",) else text


def _significant(text: str) -> int:
    """Characters of an integer's text that carry magnitude: without sign,
    ``_``, base prefix and leading zeros (and ``:`` of a sexagesimal's lead)."""
    value = text.replace("_", "").lstrip("+-")
    if value[:2].lower() in ("0b", "0x", "0o"):
        value = value[2:]
    return len(value.lstrip("0:"))


def _document(node: Node, index: int, rel: str) -> RawDocument:
    builder = _Builder(rel)
    try:
        data = builder.build(node, ())
    except (yaml.YAMLError, ValueError, TypeError) as e:  # a scalar its constructor rejects
        builder.refuse(node, (), f"invalid YAML value: {e}".splitlines()[0])
        data = None
    line = builder.line(node)
    if builder.issues:
        return RawDocument(index=index, line=line, lines=builder.lines,
                           issues=tuple(builder.issues))
    return RawDocument(index=index, line=line, data=data, lines=builder.lines)
