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
all when ``enabled: false``.

The order (stable: it never changes between ticks while the records and
files do not): a user's models are counted one by one, each against what
the ones before it left,

1. first the models already admitted (recorded), oldest admission first
   (``created_at``, then the model key, both fixed at admission);
2. then the new ones, by file path, then by document order in the file.

So a new model never displaces an admitted one. A model is refused when, in
some quota, it asks more than is left *and* more than its recorded version
already takes: a model keeps what it was admitted with, so an admitted model
that does not grow (unchanged, scaled down, only its engine_kwargs edited)
stays valid even when the operator lowers the quota below what is in use;
only growth and new models must fit. A refused document gets one 422 per
quota it exceeds (naming the quota, the ask and what is left, on the field's
line) and is no longer valid: a new model is not deployed; a recorded one is
held at its last good version, like any invalid document, and that version
counts in its place (as does every held model's). Only the refused model is
held (:attr:`~servesync.desired.specs.DocumentResult.quota_refused`), not the
rest of its file. Every other user, and this user's models that fit, are
untouched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from servesync.config import Quota, Quotas
from servesync.desired.specs import (
    DesiredState,
    DocumentResult,
    ModelName,
    ModelSpec,
    replica_gpus,
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
                where[d.spec.name] = (fi, di)
    recorded: dict[str, list[Admitted]] = defaultdict(list)
    for a in sorted(admitted, key=lambda a: a.order):
        recorded[a.name[0]].append(a)
    known = {a.name for rows in recorded.values() for a in rows}
    new: dict[str, list[ModelSpec]] = defaultdict(list)
    for name, (fi, di) in sorted(where.items(), key=lambda kv: (
            desired.files[kv[1][0]].path, desired.files[kv[1][0]].documents[kv[1][1]].index)):
        if name not in known:
            new[name[0]].append(_spec(desired, fi, di))
    refused: dict[tuple[int, int], tuple[Issue, ...]] = {}
    for user in sorted({name[0] for name in where}):
        quota = quotas.for_user(user)
        if not quota.limited:
            continue
        ledger = _Ledger(user, quota)
        for a in recorded.get(user, ()):
            if a.name in where:
                fi, di = where[a.name]
                issues = ledger.ask(_spec(desired, fi, di), a.usage if a.running else Usage(),
                                    serving=a.running)
                if issues:
                    refused[(fi, di)] = issues
            elif a.name not in desired.revoked and desired.holds(a.name, a.source_file):
                ledger.used += a.usage  # held at its last good version: it keeps running
        for spec in new.get(user, ()):
            issues = ledger.ask(spec, Usage(), serving=False)
            if issues:
                refused[where[spec.name]] = issues
    return _refuse(desired, refused) if refused else desired


def _spec(desired: DesiredState, fi: int, di: int) -> ModelSpec:
    spec = desired.files[fi].documents[di].spec
    assert spec is not None  # positions come from valid documents only
    return spec


class _Ledger:
    """One user's running total, in the order the models are counted."""

    def __init__(self, user: str, quota: Quota) -> None:
        self.user, self.quota, self.used = user, quota, Usage()

    def ask(self, spec: ModelSpec, held: Usage, *, serving: bool) -> tuple[Issue, ...]:
        """Count ``spec`` if it fits (or does not grow beyond ``held``, what its
        recorded version takes) and return no issue; else count ``held`` (the
        last good version keeps running) and return a 422 per exceeded quota."""
        serving_json = spec.serving_json()
        want = usage(serving_json, enabled=spec.enabled)
        issues = []
        for dim in DIMENSIONS:
            limit: int | None = getattr(self.quota, dim)
            asked, kept, used = getattr(want, dim), getattr(held, dim), getattr(self.used, dim)
            if limit is not None and asked > kept and used + asked > limit:
                issues.append(self._issue(dim, spec, want, replica_gpus(serving_json), limit,
                                          max(0, limit - used), serving=serving))
        self.used += held if issues else want
        return tuple(issues)

    def _issue(self, dim: str, spec: ModelSpec, want: Usage, per_replica: int, limit: int,
               left: int, *, serving: bool) -> Issue:
        auto = spec.autoscaling is not None
        replicas = f"{want.replicas} replica{'s' if want.replicas != 1 else ''}" + \
            (" (autoscaling max_replicas)" if auto else "")
        pointer, what, asked = {
            "models": ("/model_id", "model", "1 more model"),
            "replicas": ("/autoscaling/max_replicas" if auto else "/num_replicas", "replica",
                         replicas),
            "gpus": ("/gpus_per_replica", "GPU",
                     f"{want.gpus} GPUs ({replicas} x {per_replica})"),
        }[dim]
        outcome = "its last good version keeps serving" if serving else "not deployed"
        return Issue(IssueCode.UNPROCESSABLE, spec.source_file, spec.line_of(pointer), pointer,
                     f"over user {self.user!r}'s {what} quota (serving.quotas): asks {asked}; "
                     f"{left} of {limit} left after the models counted before it; {outcome}")


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
