"""Find and read the desired-state YAML files, keeping a line for every field.

Called by :mod:`servesync.desired.validating` (and so by the daemon's tick and by
``servesync validate``). Reads files under the tree; no other side effects.

What it does, per file:

* walks the tree: every ``*.yaml``/``*.yml`` under ``users/<user_id>/`` is a
  desired-state file. Any other YAML file, top-level ones included, is
  reported (400 "not under users/<user_id>/"), unread, so a model file put
  in the wrong place is never silently ignored; the issue names no user, so
  it holds back no model. Anything whose path has a component starting with
  ``.`` (``.git``, ``.github``, ``.pre-commit-config.yaml``) is repository
  tooling and ignored. Symlinks under ``users/`` are refused (403): a
  committed link could point at another user's folder or outside the tree;
  directory symlinks elsewhere are not followed.
* :func:`users_dir_problem` is the one check that a tree has a ``users/``
  folder, shared by the daemon's directory source (which refuses such a tree)
  and ``servesync validate`` (which reports it).
* refuses files over 256 KiB and files that are not UTF-8 (400).
* composes each YAML document with libyaml's parser and PyYAML's composer,
  refusing anchors and aliases (so alias bombs can't expand) and nesting deeper
  than :data:`MAX_DEPTH`, then builds plain Python values itself from the
  nodes (safe_load semantics: null/bool/int/float/str, mappings, sequences),
  recording the line of every mapping key and sequence item under its JSON
  pointer.
* a document that can't be read yields a :class:`RawDocument` with issues
  and no data; the documents beside it are still returned. After a syntax
  error the file is split at its ``---`` lines and each part composed alone.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
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

from servesync.errors import Issue, IssueCode
from servesync.redaction import quote

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 64
YAML_SUFFIXES = (".yaml", ".yml")
USER_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
USERS_DIR = "users"

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str"))
_DOC_START_RE = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_TRIVIAL_LINE_RE = re.compile(r"^\s*(#.*|%.*)?$")
_MARKER_LINE_RE = re.compile(r"^---\s*(#.*)?$")
_CONSTRUCTOR = SafeConstructor()


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One YAML document as read: plain data plus pointer -> line (1-based)."""

    index: int  # 0-based among the file's non-empty documents
    line: int  # line of the document's first node
    data: Any = None  # None when ``issues`` is not empty
    lines: Mapping[str, int] = field(default_factory=dict)
    issues: tuple[Issue, ...] = ()

    def line_of(self, pointer: str) -> int:
        """The line of ``pointer``, else of its nearest parent, else the document's."""
        while pointer:
            if pointer in self.lines:
                return self.lines[pointer]
            pointer = pointer.rsplit("/", 1)[0]
        return self.line


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """One file: its owner (from the path), file-level issues and documents."""

    path: str  # relative to the root, '/'-separated
    user_id: str | None
    issues: tuple[Issue, ...] = ()
    documents: tuple[RawDocument, ...] = ()


class _Refused(yaml.MarkedYAMLError):
    """A construct servesync refuses although YAML allows it."""


class _Loader(Composer, CParser, Resolver):
    """libyaml's parser under PyYAML's composer, which we can intercept."""

    def __init__(self, text: str) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        mark: Any = getattr(event, "start_mark", None)
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(None, None, "anchors and aliases (&name, *name) are not allowed", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def escape(key: str) -> str:
    """Escape one JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def user_of(rel: str) -> str | None:
    """The user id a relative path names (``users/<id>/...``), if valid."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0] == USERS_DIR and USER_ID_RE.fullmatch(parts[1]):
        return parts[1]
    return None


def _is_yaml(name: str) -> bool:
    return name.lower().endswith(YAML_SUFFIXES)


def iter_candidates(root: Path) -> Iterator[tuple[str, bool]]:
    """Yield ``(relative path, is_symlink)`` of the files and links to judge, sorted."""
    found: list[tuple[str, bool]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        under_users = prefix.startswith(USERS_DIR + "/")
        for d in list(dirnames):
            if d.startswith(".") or os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                if not d.startswith(".") and (under_users or prefix + d == USERS_DIR):
                    found.append((prefix + d, True))
        for name in filenames:
            if name.startswith(".") or not _is_yaml(name):
                continue
            found.append((prefix + name, os.path.islink(os.path.join(dirpath, name))))
    yield from sorted(found)


def users_dir_problem(root: Path) -> str | None:
    """Why ``root`` can't be a desired-state tree (it has no ``users/`` folder), or None.

    Without ``users/`` the path is most likely wrong (a typo, a share that is
    not mounted), not "no models": the daemon refuses such a tree rather than
    let the planner delete every model, and ``servesync validate`` fails it."""
    if (root / USERS_DIR).is_dir():
        return None
    return f"no {USERS_DIR}/ folder in the desired-state folder"


def _file_issue(rel: str, code: IssueCode, message: str) -> LoadedFile:
    return LoadedFile(path=rel, user_id=user_of(rel),
                      issues=(Issue(code, rel, 0, "", message),))


def load_file(root: Path, rel: str, *, is_symlink: bool = False) -> LoadedFile:
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
        text = _read(root / rel).decode("utf-8-sig")
    except _Unreadable as e:
        return _file_issue(rel, IssueCode.INVALID, str(e))
    except UnicodeDecodeError as e:
        return _file_issue(rel, IssueCode.INVALID, f"not UTF-8: {e.reason} at byte {e.start}")
    except OSError as e:
        return _file_issue(rel, IssueCode.INVALID, f"cannot read: {e.strerror or e}")
    return LoadedFile(path=rel, user_id=parts[1], documents=parse_text(text, rel=rel))


class _Unreadable(Exception):
    """The file can't be read as a desired-state file (size, type)."""


def _read(path: Path) -> bytes:
    """The file's bytes, refusing non-regular files and reading at most the limit + 1."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _Unreadable(f"file is {info.st_size} bytes, over the {MAX_FILE_BYTES} byte limit")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _Unreadable(f"file is over the {MAX_FILE_BYTES} byte limit")
    return data


def load_tree(root: Path) -> tuple[LoadedFile, ...]:
    """Every candidate file of the tree, loaded, in path order."""
    return tuple(load_file(root, rel, is_symlink=link) for rel, link in iter_candidates(root))


def parse_text(text: str, *, rel: str) -> tuple[RawDocument, ...]:
    """All non-empty documents of one file's text. Never raises for bad YAML."""
    try:
        nodes = _compose_all(text)
    except (yaml.YAMLError, ValueError):
        return _parse_parts(text, rel=rel)
    docs = (_document(n, i, rel) for i, n in enumerate(nodes))
    return tuple(docs)


def _compose_all(text: str) -> list[Node]:
    loader = _Loader(text)
    try:
        nodes: list[Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not _empty(node):
                nodes.append(node)
        return nodes
    finally:
        loader.dispose()


def _empty(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"
                            and node.value == "")


def _parse_parts(text: str, *, rel: str) -> tuple[RawDocument, ...]:
    """Slow path after an error: compose each ``---``-separated part alone."""
    starts = [0, *(m.start() for m in _DOC_START_RE.finditer(text) if m.start() > 0)]
    docs: list[RawDocument] = []
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        part = text[begin:end]
        if all(_TRIVIAL_LINE_RE.match(line) for line in part.splitlines()):
            continue
        offset = text.count("\n", 0, begin)
        try:
            nodes = _compose_all(part)
        except (yaml.YAMLError, ValueError) as e:
            line, message = _describe(e, part)
            line = offset + min(line, part.rstrip().count("\n") + 1)  # not the next '---'
            issue = Issue(IssueCode.INVALID, rel, line, "", message)
            first = offset + _first_content_line(part)
            docs.append(RawDocument(index=len(docs), line=min(first, line), issues=(issue,)))
            continue
        for node in nodes:
            docs.append(_document(node, len(docs), rel, line_offset=offset))
    return tuple(docs)


def _first_content_line(part: str) -> int:
    for number, line in enumerate(part.splitlines(), start=1):
        if not _TRIVIAL_LINE_RE.match(line) and not _MARKER_LINE_RE.match(line):
            return number
    return 1


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


class _Builder:
    """Turns a composed node tree into plain values, collecting issues and lines."""

    def __init__(self, rel: str, line_offset: int) -> None:
        self.rel = rel
        self.offset = line_offset
        self.lines: dict[str, int] = {}
        self.issues: list[Issue] = []

    def line(self, node: Node) -> int:
        return int(node.start_mark.line) + 1 + self.offset

    def refuse(self, node: Node, pointer: str, message: str) -> None:
        self.issues.append(Issue(IssueCode.INVALID, self.rel, self.line(node), pointer, message))

    def build(self, node: Node, pointer: str) -> Any:
        if isinstance(node, MappingNode):
            return self._mapping(node, pointer)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self.refuse(node, pointer, f"YAML tag {node.tag} is not allowed")
            items = []
            for i, item in enumerate(node.value):
                self.lines[f"{pointer}/{i}"] = self.line(item)
                items.append(self.build(item, f"{pointer}/{i}"))
            return items
        return self._scalar(node, pointer)

    def _mapping(self, node: MappingNode, pointer: str) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            self.refuse(node, pointer, f"YAML tag {node.tag} is not allowed")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "str"):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "<collection>"
                self.refuse(key_node, pointer, f"mapping key {quote(shown)} must be a string "
                            "(quote it; merge keys << are not allowed)")
                continue
            key = str(key_node.value)
            child = f"{pointer}/{escape(key)}"
            if key in out:
                self.refuse(key_node, child, f"duplicate key {quote(key)}")
                continue
            self.lines[child] = self.line(key_node)
            out[key] = self.build(value_node, child)
        return out

    def _scalar(self, node: Node, pointer: str) -> Any:
        if node.tag not in _SCALAR_TAGS:
            kind = node.tag.removeprefix(_TAG)
            self.refuse(node, pointer, f"YAML type {kind!r} is not allowed here; quote the "
                        "value if it is a string")
            return None
        value = _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        if isinstance(value, float) and not math.isfinite(value):
            self.refuse(node, pointer, "infinite or NaN numbers are not allowed")
            return None
        return value


def _document(node: Node, index: int, rel: str, *, line_offset: int = 0) -> RawDocument:
    builder = _Builder(rel, line_offset)
    try:
        data = builder.build(node, "")
    except (yaml.YAMLError, ValueError, TypeError) as e:  # a scalar its constructor rejects
        builder.refuse(node, "", f"invalid YAML value: {e}".splitlines()[0])
        data = None
    line = builder.line(node)
    if builder.issues:
        return RawDocument(index=index, line=line, lines=builder.lines,
                           issues=tuple(builder.issues))
    return RawDocument(index=index, line=line, data=data, lines=builder.lines)
