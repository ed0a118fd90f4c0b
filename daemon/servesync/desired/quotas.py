"""Per-user quotas (``serving.quotas``): which of a user's valid models fit.

A pass over a validated :class:`~servesync.desired.specs.DesiredState`, after
per-file validation (quotas span files, so they are not part of a file's
cached checks) and after :func:`~servesync.desired.validating.recheck_held`.
Which models fit depends on the order they were admitted in, which only the
records know: the caller (``Reconciler.read`` from its store; ``servesync
validate`` from the state file) hands it in as plain data, :class:`Admitted`,
so this module never imports converge. Pure: no I/O, no clock.

What a model takes (:func:`usage`): one model, its replicas (``num_replicas``,
or autoscaling's ``max_replicas``) and its GPUs (GPUs per replica, from
:func:`~servesync.desired.specs.replica_gpus`, x those replicas); nothing at
all when ``enabled: false``. Each version of a model with ``versions`` is
counted as a model of its own (it is its own application, with its own
replicas and GPUs).

The count (stable: the verdicts do not change between ticks while the
records and the files do not), per user:

1. first what runs: each admitted (recorded) model still declared counts
   what it keeps of its recorded version, the lesser of that and its new
   spec in each quota; a held model (its file has errors) counts its whole
   recorded version, and so does a model's old shape (plain while its
   ``model_id`` is now declared with ``versions``, or a version while it is
   now plain: the planner keeps it serving until the new shape serves), so
   reshaping never doubles a quota; a model stopped or being deleted counts
   nothing;
2. then, one by one, each admitted model's growth beyond that, oldest
   admission first (``created_at``, then the model key, both fixed at
   admission), and then each new model, by file path, then document order;
   each must fit in what the ones before it left.

So a model only needs room for what it adds; a new model never displaces an
admitted one; and lowering a quota below what is in use stops nothing: what
runs keeps running, edits that do not grow a model apply, growth and new
models are refused. A refused document gets one 422 per quota it exceeds
(naming the quota, the ask and what is left for it, on the field's line) and
is no longer valid: a new model is not deployed; a recorded one is held at
its last good version, like any invalid document, and that version counts.
Only the refused model is held
(:attr:`~servesync.desired.specs.DocumentResult.quota_refused`), not the rest
of its file. Every other user, and this user's models that fit, are
untouched.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from typing import Any

from servesync.config import Quota, Quotas
from servesync.desired.specs import (
    DesiredState,
    DocumentResult,
    FileResult,
    ModelName,
    ModelSpec,
    base_suffix,
    replica_gpus,
    version_of,
)
from servesync.desired.validating import cap_issues
from servesync.errors import Issue, IssueCode

DIMENSIONS = ("models", "replicas", "gpus")
"""The quotas, in the order a refusal reports them."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model (or a user's models together) takes from a quota."""

    models: int = 0
    replicas: int = 0
    gpus: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.models + other.models, self.replicas + other.replicas,
                     self.gpus + other.gpus)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.models - other.models, self.replicas - other.replicas,
                     self.gpus - other.gpus)

    def least(self, other: Usage) -> Usage:
        """The smaller of the two in each quota."""
        return Usage(min(self.models, other.models), min(self.replicas, other.replicas),
                     min(self.gpus, other.gpus))


def usage(serving: Mapping[str, Any], *, enabled: bool) -> Usage:
    """What a model takes, from its serving JSON (:meth:`ModelSpec.serving_json`
    or a record's ``spec``): autoscaling counts at ``max_replicas``."""
    if not enabled:
        return Usage()
    auto = serving.get("autoscaling")
    replicas = int(auto["max_replicas"]) if isinstance(auto, Mapping) \
        else int(serving.get("num_replicas") or 0)
    return Usage(models=1, replicas=replicas, gpus=replicas * replica_gpus(serving))


@dataclass(frozen=True, slots=True)
class Admitted:
    """A recorded model as the quota pass sees it (built by converge from its record)."""

    name: ModelName
    source_file: str  # the file it was recorded from (is it held?)
    order: tuple[str, ...]  # sorts in admission order: (created_at, model_key)
    spec: Mapping[str, Any]  # the recorded serving JSON: what keeps running while held
    running: bool  # the recorded spec holds resources (enabled; not stopped, not deleting)

    @property
    def usage(self) -> Usage:
        return usage(self.spec, enabled=self.running)


Valid = tuple[str, int, int, int, ModelSpec]
"""A valid model of one user: its file's path, its document's index and
position in the file's documents, and its spec (a version's, for a model
with ``versions``), after the spec's ``id``: :class:`QuotaCache` compares
specs by identity (see there)."""

Row = tuple[Admitted, str | None]
"""A recorded model of one user and, when it is not declared (valid) now, why
it still counts: ``"held"`` (its file or document has errors), ``"reshaped"``
(its other shape is declared), else None (it counts nothing)."""

_Key = tuple[Quota, tuple[Valid, ...], tuple[Row, ...]]
_Refused = dict[tuple[str, int], tuple[Issue, ...]]  # (path, document position) -> 422s
_Positions = Mapping[tuple[int, int], tuple[Issue, ...]]  # (file, document position) -> 422s


@dataclass(frozen=True, slots=True)
class _Pass:
    """One whole pass's inputs and refusals (:meth:`QuotaCache.unchanged`)."""

    files: tuple[FileResult, ...]
    revoked: Mapping[ModelName, str]
    admitted: tuple[Admitted, ...]
    quotas: Quotas
    refused: _Positions


class QuotaCache:
    """The previous pass's verdicts, per user, with the inputs they came from.

    First, the whole pass: when every file's result is the very same object
    as last pass's (:class:`~servesync.desired.validating.ValidationCache`
    hands back an unchanged file's; results are frozen), and the revocations,
    the recorded models (equal, and, from ``Reconciler``'s memo, the same
    objects) and the quotas are equal, last pass's refusals are this pass's:
    an idle tick counts nobody and costs a comparison per file and record.
    Else, per user: a user's verdicts depend only on that user's quota, valid
    models (:data:`Valid`) and recorded models (:data:`Row`): a user whose
    inputs are all the same as last pass's gets last pass's verdicts, without
    counting again; so a pass counts only the users whose quota, files or
    records changed. The quota and the rows are compared with ``==`` (plain
    values; the same objects as last tick compare by identity first, so that
    is cheap); the specs by
    identity, their ``id`` being part of :data:`Valid` (the cache holds the
    old specs, so no new object can have an old one's ``id``), since the
    field lines a 422 names are not part of a spec's ``==``, and an unchanged
    file's spec is the very same object
    (:class:`~servesync.desired.validating.ValidationCache`). ``counted``
    counts the users actually counted (for tests). Not thread-safe: one per
    reconciler."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[_Key, _Refused]] = {}
        self._last: _Pass | None = None
        self.counted = 0

    def unchanged(self, desired: DesiredState, admitted: tuple[Admitted, ...], quotas: Quotas
                  ) -> _Positions | None:
        """Last pass's refusals when its inputs are the same as this pass's, else None."""
        last = self._last
        if last is None or len(last.files) != len(desired.files) \
                or not all(map(operator.is_, last.files, desired.files)):
            return None
        same = last.quotas == quotas and last.revoked == desired.revoked \
            and last.admitted == admitted
        if same:  # keep this pass's equal objects: identical next time
            self._last = replace(last, admitted=admitted)
        return last.refused if same else None

    def remember(self, desired: DesiredState, admitted: tuple[Admitted, ...], quotas: Quotas,
                 refused: _Positions) -> None:
        """This pass's inputs and refusals, for :meth:`unchanged`."""
        self._last = _Pass(desired.files, dict(desired.revoked), admitted, quotas, refused)

    def verdicts(self, user: str, key: _Key) -> _Refused:
        """``user``'s refusals for ``key``: last pass's when its key is equal."""
        hit = self._users.get(user)
        if hit is not None and hit[0] == key:
            self._users[user] = (key, hit[1])  # this pass's equal objects: identical next time
            return hit[1]
        self.counted += 1
        refused = _count(user, *key)
        self._users[user] = (key, refused)
        return refused

    def keep_only(self, users: Set[str]) -> None:
        """Forget the users not counted in this pass."""
        for gone in [user for user in self._users if user not in users]:
            del self._users[gone]


def apply(desired: DesiredState, admitted: Iterable[Admitted], quotas: Quotas, *,
          cache: QuotaCache | None = None) -> DesiredState:
    """``desired`` with the documents whose models do not fit their user's quota
    refused (a 422 each); ``desired`` itself when every model fits. ``cache``:
    the previous pass's verdicts, reused for the users whose inputs did not
    change (the same verdicts as without it)."""
    if not quotas.active:
        return desired
    admitted = tuple(admitted)
    last = cache.unchanged(desired, admitted, quotas) if cache is not None else None
    if last is None:
        last = _count_users(desired, admitted, quotas, cache)
        if cache is not None:
            cache.remember(desired, admitted, quotas, last)
    return _refuse(desired, last) if last else desired


def _count_users(desired: DesiredState, admitted: tuple[Admitted, ...], quotas: Quotas,
                 cache: QuotaCache | None) -> _Positions:
    """Every limited user's refusals, by (file, document) position: counted,
    or, with ``cache``, last pass's for a user whose inputs are the same."""
    valid: dict[str, list[Valid]] = defaultdict(list)  # by user, in file then document order
    for f in desired.files:
        for di, d in enumerate(f.documents):
            if d.ok and d.spec is not None:
                for one in d.spec.expanded():  # each version counts as a model of its own
                    valid[one.user_id].append((f.path, d.index, di, id(one), one))
    recorded: dict[str, list[Admitted]] = defaultdict(list)
    for a in admitted:
        recorded[a.name[0]].append(a)
    refused: _Refused = {}
    counted = set()
    for user, models in valid.items():
        quota = quotas.for_user(user)
        if not quota.limited:
            continue
        declared = {one.name for *_, one in models}
        rows = _rows(desired, recorded.get(user, ()), declared)
        key = (quota, tuple(models), rows)
        counted.add(user)
        refused.update(cache.verdicts(user, key) if cache is not None else _count(user, *key))
    if cache is not None:
        cache.keep_only(counted)
    if not refused:
        return {}
    at = {f.path: fi for fi, f in enumerate(desired.files)}
    return {(at[path], di): issues for (path, di), issues in refused.items()}


def _rows(desired: DesiredState, recorded: Iterable[Admitted], declared: Set[ModelName]
          ) -> tuple[Row, ...]:
    """One user's recorded models, each with why it still counts when it is
    not declared (:data:`Row`). ``declared``: the user's valid models."""
    rows: list[Row] = []
    shapes: set[tuple[str, str, bool]] | None = None  # worked out only when needed
    for a in recorded:
        why = None
        if a.name in declared or a.name in desired.revoked:
            pass
        elif desired.holds(a.name, a.source_file):
            why = "held"  # held at its last good version: it keeps running
        else:
            if shapes is None:
                shapes = {_shape(name) for name in declared}
            why = "reshaped" if _reshaped(a.name, shapes) else None
        rows.append((a, why))
    return tuple(rows)


def _count(user: str, quota: Quota, models: tuple[Valid, ...], rows: tuple[Row, ...]
           ) -> _Refused:
    """One user's refusals: the count of the module's docstring."""
    where: dict[ModelName, Valid] = {}
    for model in models:
        where[model[-1].name] = model
    ledger = _Ledger(user, quota)
    asks: list[tuple[_Ask, tuple[str, int]]] = []
    for a, why in sorted(rows, key=lambda row: row[0].order):
        if a.name in where:
            path, _, di, _, one = where[a.name]
            asks.append((ledger.keep(one, a), (path, di)))
        elif why is not None:
            ledger.used += a.usage
            if why == "reshaped" and a.running:
                ledger.reshaping.add(base_suffix(a.name[1]))
    known = {a.name for a, _ in rows}
    for path, _, di, _, one in sorted((m for name, m in where.items() if name not in known),
                                   key=lambda m: (m[0], m[1])):
        asks.append((ledger.keep(one, None), (path, di)))
    refused: _Refused = {}
    for ask, at in asks:
        issues = ledger.grow(ask)
        if issues:
            refused[at] = issues
    return refused


def _shape(name: ModelName) -> tuple[str, str, bool]:
    """(user, ``model_id``, plain?) of a model or version name."""
    return name[0], base_suffix(name[1]), version_of(name[1]) is None


def _reshaped(name: ModelName, shapes: Set[tuple[str, str, bool]]) -> bool:
    """Is undeclared ``name`` the old shape of a model now declared (valid) in
    the other one (plain while its ``model_id`` now has ``versions``, or a
    version while it is now plain)? ``shapes``: :func:`_shape` of every valid
    model. The planner keeps it serving until the new shape serves, so it
    counts until it is deleted (``running``)."""
    user, model_id, plain = _shape(name)
    return (user, model_id, not plain) in shapes


@dataclass(frozen=True, slots=True)
class _Ask:
    spec: ModelSpec
    want: Usage  # what its spec takes
    held: Usage  # what its recorded version takes (nothing: new, or not running)
    floor: Usage  # counted already: the lesser of the two, in each quota
    per_replica: int  # GPUs per replica, for the message
    serving: bool  # its recorded version runs (and keeps running if refused)


class _Ledger:
    """One user's total: first what runs (each admitted model at the lesser of
    its recorded and its new spec, :meth:`keep`), then each model's growth in
    order (:meth:`grow`), so a model only needs room for what it adds."""

    def __init__(self, user: str, quota: Quota) -> None:
        self.user, self.quota, self.used = user, quota, Usage()
        self.reshaping: set[str] = set()  # model_ids whose old shape counts (it serves)

    def keep(self, spec: ModelSpec, recorded: Admitted | None) -> _Ask:
        """Count what ``spec`` keeps of its recorded version; its ask for later."""
        serving_json = spec.serving_json()
        want = usage(serving_json, enabled=spec.enabled)
        serving = recorded is not None and recorded.running
        held = recorded.usage if recorded is not None and serving else Usage()
        floor = want.least(held)
        self.used += floor
        return _Ask(spec, want, held, floor, replica_gpus(serving_json), serving)

    def grow(self, ask: _Ask) -> tuple[Issue, ...]:
        """Count the rest of ``ask`` if it fits and return no issue; else count
        its recorded version (which keeps running) and return a 422 per quota
        it exceeds."""
        issues = []
        for dim in DIMENSIONS:
            limit: int | None = getattr(self.quota, dim)
            if limit is None or getattr(ask.want, dim) <= getattr(ask.held, dim):
                continue  # no limit, or it does not grow here
            left = limit - (getattr(self.used, dim) - getattr(ask.floor, dim))  # for this model
            if getattr(ask.want, dim) > left:
                issues.append(self._issue(dim, ask, limit, max(0, left)))
        self.used += (ask.held if issues else ask.want) - ask.floor
        return tuple(issues)

    def _issue(self, dim: str, ask: _Ask, limit: int, left: int) -> Issue:
        spec, want = ask.spec, ask.want
        auto = spec.autoscaling is not None
        replicas = f"{want.replicas} replica{'s' if want.replicas != 1 else ''}" + \
            (" (autoscaling max_replicas)" if auto else "")
        pointer, what, asked = {
            "models": ("/model_id", "model", "1 more model"),
            "replicas": ("/autoscaling/max_replicas" if auto else "/num_replicas", "replica",
                         replicas),
            "gpus": ("/parallelism" if spec.parallelism else "/gpus_per_replica", "GPU",
                     f"{want.gpus} GPUs ({replicas} x {ask.per_replica})"),
        }[dim]
        outcome = "its last good version keeps serving" if ask.serving else "not deployed"
        notes = [f"version {spec.version}"] if spec.version is not None else []
        if spec.model_id in self.reshaping:
            notes.append(f"{spec.model_id!r} in its old shape serves, and counts, until the "
                         "new one does")
        version = f" ({'; '.join(notes)})" if notes else ""
        return Issue(IssueCode.UNPROCESSABLE, spec.source_file, spec.line_of(pointer),
                     spec.pointer_of(pointer),
                     f"over user {self.user!r}'s {what} quota (serving.quotas): asks {asked}; "
                     f"{left} of {limit} left for it{version}; {outcome}")


def _refuse(desired: DesiredState, refused: Mapping[tuple[int, int], tuple[Issue, ...]]
            ) -> DesiredState:
    files = list(desired.files)
    for fi in sorted({fi for fi, _ in refused}):
        f = files[fi]
        documents = tuple(
            d if (fi, di) not in refused else DocumentResult(
                index=d.index, line=d.line, model_id=d.model_id, issues=refused[(fi, di)],
                quota_refused=True)
            for di, d in enumerate(f.documents))
        files[fi] = cap_issues(replace(f, documents=documents))
    return replace(desired, files=tuple(files))
