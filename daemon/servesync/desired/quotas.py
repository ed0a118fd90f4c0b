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

from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from typing import Any

from servesync.config import Quota, Quotas
from servesync.desired.specs import (
    DesiredState,
    DocumentResult,
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


def apply(desired: DesiredState, admitted: Iterable[Admitted], quotas: Quotas) -> DesiredState:
    """``desired`` with the documents whose models do not fit their user's quota
    refused (a 422 each); ``desired`` itself when every model fits."""
    if not quotas.active:
        return desired
    where: dict[ModelName, tuple[int, int]] = {}  # valid model -> (file, document) position
    for fi, f in enumerate(desired.files):
        for di, d in enumerate(f.documents):
            if d.ok and d.spec is not None:
                for one in d.spec.expanded():  # each version counts as a model of its own
                    where[one.name] = (fi, di)
    recorded: dict[str, list[Admitted]] = defaultdict(list)
    for a in sorted(admitted, key=lambda a: a.order):
        recorded[a.name[0]].append(a)
    known = {a.name for rows in recorded.values() for a in rows}
    shapes = {_shape(name) for name in where}
    new: dict[str, list[ModelSpec]] = defaultdict(list)
    for name, (fi, di) in sorted(where.items(), key=lambda kv: (
            desired.files[kv[1][0]].path, desired.files[kv[1][0]].documents[kv[1][1]].index)):
        if name not in known:
            new[name[0]].append(_spec(desired, fi, di, name))
    refused: dict[tuple[int, int], tuple[Issue, ...]] = {}
    for user in sorted({name[0] for name in where}):
        quota = quotas.for_user(user)
        if not quota.limited:
            continue
        ledger = _Ledger(user, quota)
        asks: list[_Ask] = []
        for a in recorded.get(user, ()):
            if a.name in where:
                asks.append(ledger.keep(_spec(desired, *where[a.name], a.name), a))
            elif a.name not in desired.revoked and desired.holds(a.name, a.source_file):
                ledger.used += a.usage  # held at its last good version: it keeps running
            elif a.name not in desired.revoked and _reshaped(a.name, shapes):
                ledger.used += a.usage  # its old shape: serves until the new one does
                if a.running:
                    ledger.reshaping.add(base_suffix(a.name[1]))
        asks += [ledger.keep(spec, None) for spec in new.get(user, ())]
        for ask in asks:
            issues = ledger.grow(ask)
            if issues:
                refused[where[ask.spec.name]] = issues
    return _refuse(desired, refused) if refused else desired


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


def _spec(desired: DesiredState, fi: int, di: int, name: ModelName) -> ModelSpec:
    """The spec named ``name`` in document ``di`` of file ``fi``: the document's
    own, or one of its versions'."""
    spec = desired.files[fi].documents[di].spec
    assert spec is not None  # positions come from valid documents only
    return next(s for s in spec.expanded() if s.name == name)


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
