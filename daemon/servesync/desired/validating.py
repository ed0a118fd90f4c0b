"""Validate the desired-state tree: schema, then the rules only code can check.

Called by the daemon's tick and by ``servesync validate``. Reads the tree via
:mod:`servesync.desired.loading` (and, for the real-path check of local model
sources, the storage root); writes nothing.

Per document: load issues (YAML syntax, aliases, tags) stop there; otherwise
the JSON Schema ``serving-model`` (the single source of truth for structure)
runs, then the semantic rules: ``model_source`` location (:mod:`paths`),
``min_replicas <= max_replicas``, GPUs against the platform, the config's
allow and deny lists for ``engine_kwargs`` and ``env`` (:mod:`allowlists`),
and finally duplicate ``model_id``s and ``aliases`` per user across the tree.
A document with no issue becomes a :class:`~servesync.specs.ModelSpec`.

Revocation (``DesiredState.revoked``): a document refused *only* by a 403 on
its ``model_source`` (the path rules, the folder walk included) names a model
the planner stops rather than holds at its last-known-good spec, since that
spec reads the same refused source. :func:`recheck_held` does the same for a
model held for any other reason: its *recorded* source and LoRA path are
checked again, and it is revoked if one fails. Every other issue keeps the hold.

jsonschema keyword -> issue class:

=====================================================  ======================
``minimum``, ``exclusiveMinimum``, ``maximum``,         422 unprocessable
``exclusiveMaximum`` (replicas, GPUs, CPUs, autoscaling)  (right shape, bad value)
every other keyword (``required``, ``additionalProperties``,
``type``, ``pattern``, ``const``, ``not``, ...)         400 invalid
=====================================================  ======================

Semantic rules: path escape, another user's folder, hub ids when the config
forbids them, engine_kwargs keys and env names the config does not allow (or
denies) -> 403; min > max, GPUs on a cpu platform, 0 GPUs on a GPU platform
-> 422; issue 10's resource and rollout knobs (:mod:`knobs`: memory, GPU
type and capability, rollout bounds) -> 403 or 422; a ``schedule`` whose
``stop_after`` is 0 or too long, whose time zone is unknown or whose window is
empty (:mod:`schedules`) -> 422; the same ``model_id``
twice for one user, or the same alias in two documents of one user -> 409
on every document that declares it (naming the first :data:`MAX_PLACES`
other places and how many more). Both documents are refused, as for a
duplicate ``model_id``: which model keeps the alias is then decided by what
runs, not by file order: a recorded model held at its last good spec keeps
its aliases, a new one is not admitted (an alias's shape, including that it
never looks like a public id's ``<YYYYMMDDHHMM>``, is the schema's: 400).

Bounded work per file: a file shows at most :data:`MAX_FILE_ISSUES` issues,
then one "and N more" issue; a document is checked only until the file has
that many (at least until its first issue, which decides that it is invalid),
so a document with thousands of unknown keys costs no more than one with
twenty (every message is clipped by :class:`~servesync.errors.Issue` itself),
and a ``model_source`` (a version's too) of more than :data:`MAX_SOURCE_PARTS`
path parts is a 400 before its real path is resolved (a stat per part).

Safety net (:func:`_guarded`): an exception while checking one document (a
bug: every rule above reports, never raises) becomes a 400 on that document,
naming the exception's class only, and is logged; the rest of the tree is
validated as usual, so one tenant's file can never fail a tick for all.

Caching (:class:`ValidationCache`, held by the reconciler across ticks): a
file whose text, path (so its user folder) and the config are those of the
previous pass is neither parsed nor checked again; its documents' results are
reused. What depends on more than the file is not cached: each document's
``model_source`` is resolved again against the storage (the path rules and
the model folder's walk, itself cached on directory stamps by
:mod:`model_dirs`; one pass shares its lookups through
:func:`model_dirs.one_pass`), and a different answer checks the file afresh;
the cross-file checks (409 duplicates, revocation, :func:`recheck_held`) run
on every pass over the (cached) results.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import re
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from servesync import schemas
from servesync.config import Config
from servesync.desired import (
    allowlists,
    knobs,
    loading,
    lora,
    model_dirs,
    model_paths,
    schedules,
    versioning,
)
from servesync.desired.loading import LoadedFile, RawDocument
from servesync.desired.specs import (
    LINED_FIELDS,
    VERSION_SEPARATOR,
    Autoscaling,
    DesiredState,
    DocumentResult,
    FileResult,
    ModelName,
    ModelSpec,
)
from servesync.errors import Issue, IssueCode, SourceError
from servesync.redaction import describe, kind, quote, scrub_pointer

SCHEMA = "serving-model"
RANGE_KEYWORDS = frozenset({"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"})
MAX_FILE_ISSUES = 20  # issues shown per file, then one "and N more"
MAX_PLACES = 3  # other places a 409 names
MAX_SOURCE_PARTS = 64  # '/'-separated parts of a model_source

log = logging.getLogger(__name__)


class _Lines(Protocol):
    """Where a document's fields are written: a :class:`RawDocument`, or the
    view of one of its versions (:class:`versioning.VersionView`)."""

    @property
    def line(self) -> int: ...

    def line_of(self, pointer: str) -> int: ...


class ValidationCache:
    """The previous pass's parsed documents and per-document results, by file.

    Holds the text each file had (to tell it unchanged by comparing, not by
    trusting a time stamp) and what checking it gave; entries of files gone
    from the tree are dropped at the end of each pass, and all results when
    the config changes. ``checked`` counts the documents actually checked
    (for tests). Not thread-safe: one per reconciler."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[str, tuple[RawDocument, ...]]] = {}
        self._files: dict[str, tuple[LoadedFile, tuple[_Checked, ...]]] = {}
        self._results: dict[str, FileResult] = {}
        self._config: Config | None = None
        self.reads = loading.Reads()  # texts of unchanged files aren't read again
        self.checked = 0

    def parse(self, text: str, rel: str) -> tuple[RawDocument, ...]:
        """:func:`loading.parse_text`, or the same documents as last time for the same text."""
        hit = self._texts.get(rel)
        if hit is not None and hit[0] == text:
            return hit[1]
        docs = loading.parse_text(text, rel=rel)
        self._texts[rel] = (text, docs)
        return docs

    def _begin(self, config: Config) -> None:
        if config != self._config:
            self._config, self._files, self._results = config, {}, {}

    def _get(self, f: LoadedFile) -> tuple[_Checked, ...] | None:
        """Last pass's checks of ``f`` if its text is unchanged: :meth:`parse`
        then handed back the very same documents. Not ``==`` on the parsed
        data: YAML ``true`` and ``1`` parse to values Python calls equal, and
        the schema does not (``num_replicas: true`` is a 400)."""
        hit = self._files.get(f.path)
        if hit is None or hit[0].documents is not f.documents or hit[0] != f:
            return None
        return hit[1]

    def _put(self, f: LoadedFile, checked: tuple[_Checked, ...]) -> None:
        self._files[f.path] = (f, tuple(replace(c, issues=list(c.issues)) for c in checked))

    def _result(self, f: LoadedFile, build: Callable[[LoadedFile], FileResult], *,
                reused: bool, conflicted: bool) -> FileResult:
        """The file's result: last pass's when its checks were reused and no
        other file conflicts with it (409s are per pass), else built anew."""
        if not reused:
            self._results.pop(f.path, None)
        got = self._results.get(f.path) if not conflicted else None
        if got is None:
            got = build(f)
            if not conflicted:
                self._results[f.path] = got
        return got

    def _end(self, files: tuple[LoadedFile, ...]) -> None:
        paths = {f.path for f in files}
        for table in (self._texts, self._files, self._results):
            for gone in [rel for rel in table if rel not in paths]:
                del table[gone]


def validate_tree(root: Path, config: Config, *, revision: str | None = None,
                  cache: ValidationCache | None = None) -> DesiredState:
    """Load and validate every desired-state file under ``root`` (``cache``:
    the previous pass's, to skip the files that did not change).

    Raises :class:`SourceError` when ``root`` is not a directory; everything
    wrong inside the tree is reported as issues, never raised."""
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    files = loading.load_tree(root) if cache is None else \
        loading.load_tree(root, parse=cache.parse, reads=cache.reads)
    return validate_loaded(files, config, revision=revision, cache=cache)


def validate_loaded(
    files: Iterable[LoadedFile], config: Config, *, revision: str | None = None,
    cache: ValidationCache | None = None,
) -> DesiredState:
    """Validate already loaded files (the whole tree: conflicts span files)."""
    files = tuple(files)
    checked: dict[tuple[str, int], _Checked] = {}
    reused: set[str] = set()  # files whose results came from the cache
    if cache is not None:
        cache._begin(config)
    with model_dirs.one_pass():
        for f in files:
            hit = cache._get(f) if cache is not None else None
            if hit is not None and all(_unchanged(c, d, f, config)
                                       for c, d in zip(hit, f.documents, strict=True)):
                for c, d in zip(hit, f.documents, strict=True):
                    checked[(f.path, d.index)] = c  # shared: copied before any change below
                reused.add(f.path)
                continue
            found = len(f.issues)
            for d in f.documents:
                # room for one more than the file shows (so "and N more" has an N), and
                # always for one: a document's first issue decides that it is invalid
                checked[(f.path, d.index)] = c = _guarded(d, f, config,
                                                          max(1, MAX_FILE_ISSUES + 1 - found))
                found += len(c.issues)
            if cache is not None:
                cache.checked += len(f.documents)
                cache._put(f, tuple(checked[(f.path, d.index)] for d in f.documents))
    conflicted = set()
    for key, issue in itertools.chain(_conflicts(files, checked),
                                      _alias_conflicts(files, checked)):
        checked[key] = replace(checked[key], issues=[*checked[key].issues, issue])
        conflicted.add(key[0])
    revoked = {(f.user_id, c.model_id): c.revocation
               for f in files if f.user_id is not None and not f.issues
               for c in (checked[(f.path, d.index)] for d in f.documents)
               if c.model_id is not None and c.revocation is not None}

    def result(f: LoadedFile) -> FileResult:
        return _capped(FileResult(
            path=f.path,
            user_id=f.user_id,
            issues=f.issues,
            documents=tuple(checked[(f.path, d.index)].result(d) for d in f.documents),
            folder=f.folder,
        ), cut=any(checked[(f.path, d.index)].cut for d in f.documents),
            first={d.index for d in f.documents if d.stopped})

    if cache is None:
        results = tuple(result(f) for f in files)
    else:
        results = tuple(cache._result(f, result, reused=f.path in reused,
                                      conflicted=f.path in conflicted) for f in files)
        cache._end(files)
    return DesiredState(revision=revision, files=results, revoked=revoked)


RecordedSource = tuple[ModelName, str, str, object]
"""A recorded model: its name, its recorded source file, the model_source it was
deployed with (resolved: an absolute path or a hub id), and its recorded spec's
``lora`` (a mapping, or None)."""


def recheck_held(desired: DesiredState, recorded: Iterable[RecordedSource],
                 config: Config) -> DesiredState:
    """``desired``, with the held models whose recorded source or LoRA path now
    fails revoked.

    A model held at its last-known-good spec (its file or document has errors)
    runs from the source it was deployed with, which validation of the file as
    now written never sees; without this, breaking the file and then swapping
    the folder for a symlink would keep the model running. Likewise its
    recorded ``lora`` (the gateway lists adapters from that path): an operator
    who narrows ``serving.lora`` (prefix, a user's entry, the adapter limit) or
    removes it turns the file invalid, and the held spec must not keep the path
    the config no longer allows (:func:`lora.issues`: every problem, 403 or
    422, revokes). Models with a valid spec, not held, or already revoked are
    left to the planner."""
    revoked = dict(desired.revoked)
    names = {s.name for s in desired.specs}
    for name, source_file, source, recorded_lora in recorded:
        if name in names or name in revoked or not desired.holds(name, source_file):
            continue
        got = model_paths.resolve_model_source(
            source, user_id=name[0], storage_root=config.storage_root,
            allow_hub_ids=config.serving.allow_hub_ids)
        if isinstance(got, model_paths.Rejection) and got.code is IssueCode.FORBIDDEN:
            revoked[name] = f"model_source {source} (as last deployed; {source_file} " \
                            f"has errors): {got.message}"
            continue
        problem = next(lora.issues({"lora": recorded_lora}, config.serving, name[0], set()),
                       None)
        if problem is not None:
            revoked[name] = f"lora (as last deployed; {source_file} has errors): {problem[2]}"
    return desired if revoked == desired.revoked else replace(desired, revoked=revoked)


def cap_issues(result: FileResult) -> FileResult:
    """``result`` with at most :data:`MAX_FILE_ISSUES` issues shown, as every
    file: for a pass that adds issues after validation (quotas)."""
    return _capped(result, cut=False, first=set())


def _capped(result: FileResult, *, cut: bool, first: set[int]) -> FileResult:
    """``result`` with at most :data:`MAX_FILE_ISSUES` issues. Shown first: the file-level issues
    and those of the documents in ``first`` (where reading stopped), then the
    others in order; the rest are counted in one more issue, "and N more",
    which comes last (on the last invalid document, so no valid one is
    touched). ``cut``: some document was not checked to the end, so N is a
    lower bound."""
    issues = result.all_issues()
    if len(issues) <= MAX_FILE_ISSUES:
        return result
    room = MAX_FILE_ISSUES
    file_issues = tuple(result.issues[:room])
    room -= len(file_issues)
    dropped = list(result.issues[len(file_issues):])
    kept: dict[int, tuple[Issue, ...]] = {}
    for d in sorted(result.documents, key=lambda d: d.index not in first):
        kept[d.index] = tuple(d.issues[:room])
        room -= len(kept[d.index])
        dropped += d.issues[len(kept[d.index]):]
    if dropped:
        dropped.sort(key=lambda i: i.line)
        more = f"at least {len(dropped)}" if cut else str(len(dropped))
        summary = Issue(dropped[0].code, result.path, dropped[0].line, "",
                        f"and {more} more issues in this file, the first here "
                        f"(only {MAX_FILE_ISSUES} are shown)")
        last = max((d.index for d in result.documents if d.issues), default=None)
        if last is None:
            file_issues += (summary,)
        else:
            kept[last] += (summary,)
    documents = tuple(d if kept[d.index] == d.issues else replace(d, issues=kept[d.index])
                      for d in result.documents)
    return replace(result, issues=file_issues, documents=documents)


@dataclass(slots=True)
class _Checked:
    model_id: str | None
    aliases: tuple[tuple[int, str], ...] = ()  # (index in the list, alias): every string
    # the document lists, valid or not (a 409 is decided on what is written)
    issues: list[Issue] = field(default_factory=list)
    spec: ModelSpec | None = None
    source_refusal: tuple[str, Issue] | None = None  # (model_source, its 403 path issue)

    @property
    def revocation(self) -> str | None:
        """Why the model stops, when the 403 on its model_source is its only issue."""
        if self.source_refusal is None or set(self.issues) != {self.source_refusal[1]}:
            return None
        source, issue = self.source_refusal
        return f"model_source {source}: {issue.message}"
    cut: bool = False  # checking stopped at the limit: there may be more issues
    source_checked: bool = False  # _check_source ran; its answer:
    source_got: str | Issue | None = None
    version_gots: tuple[str | Issue | None, ...] = ()  # each version's, as source_got

    def result(self, doc: RawDocument) -> DocumentResult:
        issues = tuple(sorted(set(self.issues), key=lambda i: (i.line, i.pointer, i.code)))
        return DocumentResult(index=doc.index, line=doc.line, model_id=self.model_id,
                              issues=issues, spec=None if issues else self.spec)


def _named(doc: RawDocument) -> _Checked:
    """A document's result with no issue yet: its model_id and aliases, as written."""
    data = doc.data
    model_id = data.get("model_id") if isinstance(data, dict) else None
    aliases = data.get("aliases") if isinstance(data, dict) else None
    return _Checked(model_id=model_id if isinstance(model_id, str) else None,
                    aliases=tuple((i, a) for i, a in enumerate(aliases)
                                  if isinstance(a, str)) if isinstance(aliases, list) else ())


def _guarded(doc: RawDocument, file: LoadedFile, config: Config, limit: int) -> _Checked:
    """:func:`_check`, with a bug it hits on one tenant's document turned into a
    400 on that document (held at its last good spec, as for any issue) rather
    than a failed pass for every tenant. The issue and the log name the
    exception's class and where it was raised, never its message: that may
    quote the document's values (an env value may be a secret)."""
    try:
        return _check(doc, file, config, limit)
    except Exception as error:  # the safety net: one document fails, not the tick
        name = type(error).__name__
        log.error("internal error validating %s (document at line %d): %s; traceback "
                  "(message not shown):\n%s", file.path, doc.line, name,
                  "".join(traceback.format_tb(error.__traceback__)).rstrip())
        out = _named(doc)
        out.issues.append(Issue(IssueCode.INVALID, file.path, doc.line, "",
                                f"this document could not be checked: internal error ({name}) "
                                "in the validator; the operator's log has the details. Until "
                                "a fix, change the document (e.g. a field's value or type)"))
        return out


def _unchanged(c: _Checked, doc: RawDocument, file: LoadedFile, config: Config) -> bool:
    """:func:`_same_source`; an internal error means "check the document again"
    (through :func:`_guarded`)."""
    try:
        return _same_source(c, doc, file, config)
    except Exception:  # checked again, under the safety net
        return False


def _too_many_parts(data: dict[str, Any], doc: _Lines, rel: str) -> Issue | None:
    """400 for a ``model_source`` of more than :data:`MAX_SOURCE_PARTS` parts:
    resolving it costs a stat per part."""
    source = data.get("model_source")
    if isinstance(source, str) and source.count("/") >= MAX_SOURCE_PARTS:
        return Issue(IssueCode.INVALID, rel, doc.line_of("/model_source"), "/model_source",
                     f"model_source has more than {MAX_SOURCE_PARTS} path parts")
    return None


def _check(doc: RawDocument, file: LoadedFile, config: Config, limit: int) -> _Checked:
    """The document's issues (at most ``limit``, then ``cut``) and spec."""
    data = doc.data
    out = _named(doc)
    if doc.issues or file.user_id is None:
        out.issues.extend(doc.issues)
        return out
    out.issues.extend(itertools.islice(_schema_issues(doc, file.path), limit))
    if len(out.issues) >= limit:
        out.cut = True  # and the semantic checks, which only add issues, are skipped
        return out
    if not isinstance(data, dict):
        return out
    flagged = {i.pointer for i in out.issues}  # as Issue keeps them: scrubbed
    out.issues.extend(i for i in versioning.list_issues(data, doc, file.path)
                      if i.pointer not in flagged)
    found = versioning.versions(data)
    if found is not None and "model_source" not in data:
        _check_versions(out, data, found, doc, file, config, limit, flagged)
        return out
    too_long = None if "/model_source" in flagged else _too_many_parts(data, doc, file.path)
    if too_long is not None:
        flagged.add("/model_source")
        out.issues.append(too_long)
    got = None if "/model_source" in flagged else _check_source(data, doc, file, config)
    out.source_checked, out.source_got = "/model_source" not in flagged, got
    resolved = got if isinstance(got, str) else None
    if isinstance(got, Issue):
        out.issues.append(got)
        if got.code is IssueCode.FORBIDDEN:
            out.source_refusal = (str(data["model_source"]), got)
    out.issues.extend(itertools.islice(_semantic_issues(data, doc, file.path, config, flagged,
                                                                  str(file.user_id)),
                                       max(0, limit - len(out.issues))))
    out.cut = len(out.issues) >= limit
    if not out.issues and resolved is not None:
        out.spec = _build(data, doc, file, config, resolved)
    return out


def _check_versions(out: _Checked, data: dict[str, Any], found: list[dict[str, Any]],
                    doc: RawDocument, file: LoadedFile, config: Config, limit: int,
                    flagged: set[str]) -> None:
    """Check each version as the document it stands for (:func:`versioning.merged`),
    its issues pointing where each field is written; build the model's spec,
    with one spec per version, when all pass (as for a plain model: only a
    document with no issue at all, so no field the schema flagged, is built)."""
    gots: list[str | Issue | None] = []
    for i, version in enumerate(found):
        view = _version_view(doc, i, version)
        vdata = versioning.merged(data, version)
        local = view.local(flagged)
        too_long = None if "/model_source" in local else _too_many_parts(vdata, view, file.path)
        if too_long is not None:
            local.add("/model_source")
            out.issues.append(view.relocate(too_long))
        got = None if "/model_source" in local else _version_source(vdata, view, file, config)
        gots.append(got)
        if isinstance(got, Issue):
            out.issues.append(got)
        out.issues.extend(view.relocate(issue) for issue in itertools.islice(
            _semantic_issues(vdata, view, file.path, config, local, str(file.user_id)),
            max(0, limit - len(out.issues))))
    out.source_checked, out.version_gots = True, tuple(gots)
    out.cut = len(out.issues) >= limit
    if out.issues or not all(isinstance(got, str) for got in gots):
        return
    specs: list[ModelSpec] = []
    for i, (version, got) in enumerate(zip(found, gots, strict=True)):
        view = _version_view(doc, i, version)
        vdata = versioning.merged(data, version)
        vdata["model_id"] = f"{data.get('model_id')}{VERSION_SEPARATOR}{version['name']}"
        specs.append(replace(_build(vdata, view, file, config, str(got)),
                             version=version["name"], weight=int(version["weight"]),
                             field_pointers={p: view.pointer(p) for p in LINED_FIELDS
                                             if view.pointer(p) != p}))
    if specs:
        out.spec = replace(specs[0], suffix=str(data["model_id"]), model_source="",
                           resolved_source="", version=None, weight=None,
                           versions=tuple(specs))


def _version_view(doc: RawDocument, index: int,
                  version: dict[str, Any]) -> versioning.VersionView:
    return versioning.VersionView(doc, index, frozenset(
        k for k in version if k in versioning.OVERRIDES))


def _version_source(vdata: dict[str, Any], view: versioning.VersionView, file: LoadedFile,
                    config: Config) -> str | Issue | None:
    got = _check_source(vdata, view, file, config)
    return view.relocate(got) if isinstance(got, Issue) else got


# --- schema -------------------------------------------------------------------------


def _schema_issues(doc: RawDocument, rel: str) -> Iterator[Issue]:
    for error in schemas.validator(SCHEMA).iter_errors(doc.data):
        for pointer, message in _explain(error):
            code = IssueCode.UNPROCESSABLE if error.validator in RANGE_KEYWORDS \
                else IssueCode.INVALID
            yield Issue(code, rel, doc.line_of(pointer), pointer, message)


def _explain(error: Any) -> Iterable[tuple[str, str]]:
    """(pointer, message) pairs for one jsonschema error, in the user's words
    (lazily: a mapping with thousands of unknown keys is explained only as far
    as the issues are shown).

    A value is shown only through :func:`~servesync.redaction.quote` (never
    jsonschema's ``error.message``, which prints the instance whole), and not
    at all for a document that is not a mapping: it may be a pasted secret."""
    pointer = _pointer(error.absolute_path)
    keyword, value, instance = error.validator, error.validator_value, error.instance
    if pointer == "/env" or pointer.startswith("/env/"):
        return _explain_env(pointer, keyword, value, instance, error)
    if keyword == "pattern" and (pointer == "/labels" or pointer.startswith("/labels/")):
        return [_explain_label(pointer, instance, name=pointer == "/labels")]
    if keyword == "required" and isinstance(instance, dict):
        return ((f"{pointer}/{loading.escape(k)}", f"missing required field {k!r}")
                for k in value if k not in instance)
    if keyword == "additionalProperties" and isinstance(instance, dict):
        return ((f"{pointer}/{loading.escape(k)}", _unknown(k, error.schema))
                for k in _extras(instance, error.schema))
    if keyword == "not" and isinstance(value, dict):
        fields = value.get("required") or []
        where = f"{pointer}/{loading.escape(fields[-1])}" if fields else pointer
        shown = f"{quote(instance)}: " if isinstance(instance, str) else _version_named(
            pointer, instance)
        return [(where, shown + schemas.message(error))]
    if keyword == "type" and not pointer:
        return [(pointer, f"a document must be a mapping of fields (field: value), "
                          f"not a {kind(instance)} (not shown)")]
    if keyword == "const":
        return [(pointer, f"must be {value!r}, not {quote(instance)}")]
    if keyword == "type":
        hint = "; quote it" if value == "string" and isinstance(instance, int | float) else ""
        return [(pointer, f"expected {value}, got {describe(instance)}{hint}")]
    if keyword == "pattern":
        return [(pointer, f"{quote(instance)} does not match {value}")]
    return [(pointer, schemas.message(error))]


def _version_named(pointer: str, instance: Any) -> str:
    """``version <name>: `` for an error on a whole version (``/versions/<i>``)
    whose name is a string, so its message says which version; else ``""``."""
    if re.fullmatch(r"/versions/\d+", pointer) and isinstance(instance, dict) \
            and isinstance(instance.get("name"), str):
        return f"version {quote(instance['name'])}: "
    return ""


def _explain_env(pointer: str, keyword: str, value: Any, instance: Any,
                 error: Any) -> Iterable[tuple[str, str]]:
    """Like :func:`_explain` but never quotes a value: env values may be secrets
    (status files and CI logs show these messages). Names are fine."""
    if keyword == "additionalProperties" and isinstance(instance, dict):
        return ((f"{pointer}/{loading.escape(k)}", _unknown(k, error.schema))
                for k in _extras(instance, error.schema))
    if keyword == "type":
        return [(pointer, f"expected {value}, got {kind(instance)} (value not shown)")]
    return [(pointer, f"invalid ({keyword}); value not shown")]


def _explain_label(pointer: str, instance: Any, *, name: bool) -> tuple[str, str]:
    """A label name (``propertyNames``: the error is on ``/labels``; pointed at
    the name) or value refused by its pattern, in words rather than the regex."""
    if name:
        return (f"{pointer}/{loading.escape(str(instance))}",
                f"label name {quote(instance)} is not in Kubernetes label syntax: at most 63 "
                "letters, digits, '-', '_', '.', starting and ending with a letter or digit, "
                "optionally behind a DNS-subdomain prefix and '/' (example.com/team)")
    return (pointer, f"label value {quote(instance)} is not in Kubernetes label syntax: "
                     "empty, or at most 63 letters, digits, '-', '_', '.', starting and "
                     "ending with a letter or digit")


def _extras(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    props = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return (k for k in instance
            if k not in props and not any(re.search(p, k) for p in patterns))


def _unknown(key: str, schema: dict[str, Any]) -> str:
    props = list(schema.get("properties", {}))
    if not props and schema.get("patternProperties"):
        pattern = next(iter(schema["patternProperties"]))
        return f"name {quote(key)} does not match {pattern}"
    close = difflib.get_close_matches(key, props, n=1)
    return f"unknown field {quote(key)}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _pointer(path: Iterable[object]) -> str:
    return "".join(f"/{loading.escape(str(p))}" for p in path)


# --- semantics ----------------------------------------------------------------------


def _same_source(c: _Checked, doc: RawDocument, file: LoadedFile, config: Config) -> bool:
    """The document's model_source resolves as it did when ``c`` was checked."""
    found = versioning.versions(doc.data) if isinstance(doc.data, dict) else None
    if c.version_gots and found is not None and len(found) == len(c.version_gots):
        return all(
            got is None or _version_source(
                {"model_source": versioning.model_source(doc.data, v)},  # no merged copy
                _version_view(doc, i, v), file, config) == got
            for i, (v, got) in enumerate(zip(found, c.version_gots, strict=True)))
    return not c.source_checked or (
        isinstance(doc.data, dict)
        and _check_source(doc.data, doc, file, config) == c.source_got)


def _check_source(
    data: dict[str, Any], doc: _Lines, file: LoadedFile, config: Config,
) -> str | Issue | None:
    """The resolved model_source, or the issue saying why not (None: no string)."""
    source = data.get("model_source")
    if not isinstance(source, str) or file.user_id is None:
        return None
    got = model_paths.resolve_model_source(
        source, user_id=file.user_id, storage_root=config.storage_root,
        allow_hub_ids=config.serving.allow_hub_ids,
    )
    if isinstance(got, model_paths.Rejection):
        return Issue(got.code, file.path, doc.line_of("/model_source"), "/model_source",
                     got.message)
    return got


def _semantic_issues(
    data: dict[str, Any], doc: _Lines, rel: str, config: Config, flagged: set[str],
    user_id: str,
) -> Iterator[Issue]:
    def issue(code: IssueCode, pointer: str, message: str) -> Issue:
        return Issue(code, rel, doc.line_of(pointer), pointer, message)

    auto = data.get("autoscaling")
    if isinstance(auto, dict):
        low, high = auto.get("min_replicas", _default("autoscaling", "min_replicas")), \
            auto.get("max_replicas")
        if _is_int(low) and _is_int(high) and low > high:
            yield issue(IssueCode.UNPROCESSABLE, "/autoscaling/min_replicas",
                        f"min_replicas {low} is greater than max_replicas {high}")
    scaling = auto if isinstance(auto, dict) else {}
    for pointer, number in (("/num_replicas", data.get("num_replicas")),
                            ("/gpus_per_replica", data.get("gpus_per_replica")),
                            ("/autoscaling/min_replicas", scaling.get("min_replicas")),
                            ("/autoscaling/max_replicas", scaling.get("max_replicas"))):
        # JSON Schema's integer takes 1.0e+19: it must still become a 64-bit int
        if isinstance(number, float) and not loading.INT64_MIN <= number <= loading.INT64_MAX \
                and pointer not in flagged:
            yield issue(IssueCode.UNPROCESSABLE, pointer, f"{number:g} is out of range "
                        "(integers must fit in 64 bits: -2^63 to 2^63-1)")
    gpus = data.get("gpus_per_replica")
    serving = config.serving
    if _is_int(gpus) and serving.cpu_platform and gpus > 0:
        yield issue(IssueCode.UNPROCESSABLE, "/gpus_per_replica", f"this cluster has no GPUs "
                    f"(accelerator_type cpu): gpus_per_replica must be 0 or absent, not {gpus}")
    if _is_int(gpus) and not serving.cpu_platform and gpus == 0:
        yield issue(IssueCode.UNPROCESSABLE, "/gpus_per_replica", "gpus_per_replica must be at "
                    f"least 1 on this GPU cluster (accelerator_type {serving.accelerator_type})")
    for code, pointer, message in knobs.issues(data, serving, flagged,
                                                 config.sinks_of(user_id)):
        yield issue(code, pointer, message)
    for code, pointer, message in schedules.issues(data, flagged):
        yield issue(code, pointer, message)
    for code, pointer, message in lora.issues(data, serving, user_id, flagged):
        yield issue(code, pointer, message)
    for name, refusals in (("engine_kwargs", allowlists.engine_kwargs_refusals),
                           ("env", allowlists.env_refusals)):
        section = data.get(name)
        if not isinstance(section, dict):
            continue
        for refused in refusals(section, serving):
            pointer = f"/{name}/{loading.escape(refused.key)}"
            if scrub_pointer(pointer) not in flagged:  # e.g. an env name the schema refused (400)
                yield issue(IssueCode.FORBIDDEN, pointer, refused.message)


def _is_int(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and float(value).is_integer()


def _conflicts(
    files: tuple[LoadedFile, ...], checked: dict[tuple[str, int], _Checked]
) -> Iterator[tuple[tuple[str, int], Issue]]:
    """409 for every document of a user whose model_id another one declares too."""
    seen: dict[tuple[str, str], list[tuple[LoadedFile, RawDocument]]] = defaultdict(list)
    for f in files:
        for d in f.documents:
            model_id = checked[(f.path, d.index)].model_id
            if f.user_id is not None and model_id is not None:
                seen[(f.user_id, model_id)].append((f, d))
    for (user, model_id), where in seen.items():
        if len(where) < 2:
            continue
        # the first few places only: naming every other one made N duplicates cost N^2
        places = [f"{f.path}:{d.line_of('/model_id')}" for f, d in where[:MAX_PLACES + 1]]
        for f, d in where:
            here = f"{f.path}:{d.line_of('/model_id')}"
            others = [p for p in places if p != here][:MAX_PLACES] or [here]
            more = len(where) - 1 - len(others)
            tail = f" and {more} more place{'s' if more > 1 else ''}" if more > 0 else ""
            yield (f.path, d.index), Issue(
                IssueCode.CONFLICT, f.path, d.line_of("/model_id"), "/model_id",
                f"model_id {quote(model_id)} of user {user!r} is also declared at "
                f"{', '.join(others)}{tail}")


def _alias_conflicts(
    files: tuple[LoadedFile, ...], checked: dict[tuple[str, int], _Checked]
) -> Iterator[tuple[tuple[str, int], Issue]]:
    """409 for every document of a user that lists an alias another document of
    that user lists too (``uniqueItems`` refuses it twice in one list); 403
    for an alias whose name ``<user>-<alias>`` lies in another user's names
    (``alice``'s ``x-chat`` when a user ``alice-x`` has a folder)."""
    seen: dict[tuple[str, str], list[tuple[LoadedFile, RawDocument, int]]] = defaultdict(list)
    for f in files:
        if f.user_id is None:
            continue
        for d in f.documents:
            first: dict[str, int] = {}  # a repeat in one list is the schema's 400, not a 409
            for index, alias in checked[(f.path, d.index)].aliases:
                first.setdefault(alias, index)
            for alias, index in first.items():
                seen[(f.user_id, alias)].append((f, d, index))
    users = {f.user_id for f in files if f.user_id is not None}
    for (user, alias), where in seen.items():
        name = f"{user}-{alias}"
        owner = max((u for u in users if len(u) > len(user) and name.startswith(f"{u}-")),
                    key=len, default=None)
        if owner is not None:  # alice's "x-chat" would be alice-x-chat: user alice-x's name
            for f, d, i in where:
                pointer = f"/aliases/{i}"
                yield (f.path, d.index), Issue(
                    IssueCode.FORBIDDEN, f.path, d.line_of(pointer), pointer,
                    f"alias {quote(alias)} of user {user!r} would be called {name!r}, a name "
                    f"of user {owner!r} (every name starting {owner + '-'!r} is theirs): "
                    "choose another alias")
            continue
        if len(where) < 2:
            continue
        places = [(f"{f.path}:{d.line_of(f'/aliases/{i}')}", _declared(checked, f, d))
                  for f, d, i in where[:MAX_PLACES + 1]]
        for f, d, i in where:
            pointer = f"/aliases/{i}"
            here = f"{f.path}:{d.line_of(pointer)}"
            others = [f"{p} ({what})" for p, what in places if p != here][:MAX_PLACES]
            more = len(where) - 1 - len(others)
            tail = f" and {more} more place{'s' if more > 1 else ''}" if more > 0 else ""
            yield (f.path, d.index), Issue(
                IssueCode.CONFLICT, f.path, d.line_of(pointer), pointer,
                f"alias {quote(alias)} of user {user!r} is also declared at "
                f"{', '.join(others)}{tail}; each document is refused until one drops it "
                f"(a model already serving keeps its last good aliases)")


def _declared(checked: dict[tuple[str, int], _Checked], f: LoadedFile, d: RawDocument) -> str:
    model_id = checked[(f.path, d.index)].model_id
    return f"model_id {quote(model_id)}" if model_id is not None else "a document"


# --- building -----------------------------------------------------------------------


def _default(*path: str) -> Any:
    """A field's default, as the schema documents it."""
    node: Any = schemas.load(SCHEMA)
    for key in path:
        node = node["properties"][key]
    return node["default"]


def _build(data: dict[str, Any], doc: _Lines, file: LoadedFile, config: Config,
           resolved: str) -> ModelSpec:
    auto = data.get("autoscaling")
    scaling = None
    if isinstance(auto, dict):
        idle = auto.get("idle_timeout_s")
        scaling = Autoscaling(
            min_replicas=int(auto.get("min_replicas", _default("autoscaling", "min_replicas"))),
            max_replicas=int(auto["max_replicas"]),
            target_ongoing_requests=float(auto.get(
                "target_ongoing_requests", _default("autoscaling", "target_ongoing_requests"))),
            idle_timeout_s=None if idle is None else float(idle),
        )
    return ModelSpec(
        user_id=str(file.user_id),
        suffix=data["model_id"],
        model_source=data["model_source"],
        resolved_source=resolved,
        num_replicas=None if scaling else int(data.get("num_replicas",
                                                       _default("num_replicas"))),
        autoscaling=scaling,
        cpus_per_replica=float(data.get("cpus_per_replica", _default("cpus_per_replica"))),
        engine_kwargs=dict(data.get("engine_kwargs", {})),
        env=dict(data.get("env", {})),
        enabled=bool(data.get("enabled", _default("enabled"))),
        aliases=tuple(data.get("aliases", ())),
        source_file=file.path,
        line=doc.line,
        field_lines={pointer: doc.line_of(pointer) for pointer in LINED_FIELDS},
        schedule=schedules.Schedule.from_json(data.get("schedule")),
        **knobs.spec_fields(data, config.serving),
        lora=lora.spec_lora(data, config.serving),
    )
