"""The pure planner: ``plan(desired, recorded, observed, gateway, now) -> actions``.

No I/O, no clock (``now`` is passed in), no Ray. Called once per tick by
:mod:`servesync.converge.reconciling`, and by ``servesync plan``. Each model gets at most
one action per tick; the plan is ordered: bookkeeping, gateway, deletions,
deploys. Rules (level-based: every tick re-reads the whole state):

* A valid spec not yet recorded is admitted (name fixed now) and deployed, or
  recorded STOPPED when ``enabled: false``.
* A changed spec hash is deployed at once, superseding a QUEUED, DEPLOYING or
  FAILED one: as SCALE (replicas only), RECONFIGURE (and rollout options:
  Serve restarts nothing) or UPDATE (a new code version: Serve rolls the
  replicas). Description, labels and the deploy deadline are not in the hash:
  a change of them is only recorded (riding along with the tick's action).
  A deploy is FAILED at the model's own ``rollout.deploy_timeout_s``, else the
  cluster's. Same hash: DEPLOYING follows Ray (RUNNING / DEPLOY_FAILED /
  deadline), QUEUED waits for its backoff, RUNNING missing from Ray is
  redeployed (drift), FAILED waits for a new spec.
* A RUNNING model that shows fewer RUNNING replicas than asked
  (``num_replicas``, or autoscaling's ``min_replicas``) or whose application
  Ray reports UNHEALTHY for ``DEGRADED_GRACE_S`` goes DEGRADED, with the
  reason; it stays in the gateway (Ray replaces the replica by itself) and is
  RUNNING again once healthy. It becomes FAILED only when Ray gives up
  (DEPLOY_FAILED); being DEGRADED for long never fails it on its own.
* A recorded model whose file or name has validation errors, or whose file
  lies under a folder that could not be read, is left exactly as it is
  (last-known-good). One that is no longer declared goes DELETING.
* Except a *revoked* one (``DesiredState.revoked``: its model_source no longer
  passes the path rules): it is stopped as for ``enabled: false``, whatever
  its state (RUNNING, FAILED, DEPLOYING, QUEUED), with ``error_summary``
  saying why, and started again once its spec is valid again.
* A model joins the gateway once its application is RUNNING (or keeps serving
  its last good version during an update) and leaves it before its
  application is deleted: ``DeleteApp`` is planned only once the gateway
  without it has settled. It is recorded RUNNING only once a client can call
  it: the settled gateway routes it (``Clock.routed``); until then it stays
  DEPLOYING, waiting for the gateway.
* A model's aliases ride with its route: the gateway routes ``<user>-<alias>``
  to the model exactly while it routes the model, for the aliases of its
  recorded spec (the last good one while its file is held). Changing aliases
  is a gateway update and a record of the new aliases, never a deploy: they
  are not part of the spec hash. Where two names meet (user ids may hold
  '-'), a recorded public id wins over an alias, and among aliases the model
  admitted first (``created_at``, then ``model_key``) keeps it. The record's
  ``routed_aliases`` lists the aliases the gateway surely routes: those of a
  settled gateway, like RUNNING for the model itself (``Clock.routed_aliases``).
* A model's ``schedule`` (:mod:`servesync.converge.scheduling`) stops it by
  the ``enabled: false`` road (DELETING, then STOPPED) with the record's
  ``schedule_stop`` saying why, and starts it again (``Kind.START``); a
  schedule change is recorded (it is metadata: no Ray call) and restarts
  the ``stop_after`` clock (``running_since``). A held model keeps running on
  its last good spec; its schedule is applied again once its file is valid.
* A model's *versions* are models of their own (suffix ``<model_id>@<version>``,
  own record, own application, own spec hash), admitted under the public id
  (prefix) and key of a sibling already recorded, so they share one name.
  The gateway routes the public id to those of its versions that serve, split
  by the weights in effect (:mod:`weighting`: a version that does not serve
  gets nothing, its share goes to the others); a weight is not part of the
  spec hash, so changing weights only is a gateway update and a record of the
  new weight. The record's ``routed_weight`` is the weight a settled gateway
  gives the version, like ``routed_aliases``. While a public id has versions
  that serve, a plain record with that id (a model just turned into versions)
  is not routed.
* A routed model's LoRA path (its recorded spec's ``lora.path``) rides with
  its route too, so the gateway lists its adapters without asking its
  replica; a change of the recorded paths alone is a gateway update.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from servesync.converge import naming, scheduling, weighting
from servesync.converge.actions import (
    Action,
    DeleteApp,
    Deploy,
    Forget,
    Kind,
    RecordOnly,
    UpdateGateway,
)
from servesync.converge.observed import AppStatus, Observed
from servesync.converge.records import (
    Event,
    EventKind,
    GatewayRecord,
    ModelRecord,
    State,
    stamp,
)
from servesync.desired.specs import METADATA_FIELDS, DesiredState, ModelName, ModelSpec

SETTLE_S = 2.0  # Ray needs a moment to show a submitted change in serve.status()
MISSING_GRACE_S = 15.0  # a just-submitted app may not be listed yet
DEGRADED_GRACE_S = 10.0  # a replica dip must last this long (two looks) to be DEGRADED
DEGRADED_POLL_S = 10.0  # a DEGRADED model is looked at again this often (Ray sends no events)
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 300.0
_FAILED_STATUSES = (AppStatus.DEPLOY_FAILED, AppStatus.UNHEALTHY)
_SCALE_FIELDS = ("num_replicas", "autoscaling")
_LIGHT_FIELDS = ("rollout",)  # Serve applies a change of these to the running replicas
# where a spec is written, and what never reaches Ray (recorded, not deployed)
_UNDEPLOYED_FIELDS = ("source_file", "line", "enabled", "aliases", "version", "weight",
                      *METADATA_FIELDS)


WAIT_GATEWAY = "application RUNNING; waiting for the gateway to route it"


@dataclass(frozen=True, slots=True)
class Clock:
    """The planner's view of time: ``now`` plus the configured deadline, and
    which applications the gateway routes for sure (:func:`_routed`)."""

    now: datetime
    deploy_timeout_s: float
    serving_hash: str = ""  # the cluster serving config every deploy is made with
    routed: frozenset[str] = frozenset()  # app names a client can call through the gateway
    routed_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by app name:
    # the alias names a client can call through the gateway
    routed_weights: Mapping[str, int] = field(default_factory=dict)  # by a version's app
    # name: its share of its model's requests, as the gateway surely gives it now

    @property
    def stamp(self) -> str:
        return stamp(self.now)

    def since(self, iso: str | None) -> float:
        if not iso:
            return float("inf")
        return (self.now - datetime.fromisoformat(iso)).total_seconds()


def plan(
    *,
    desired: DesiredState,
    recorded: Mapping[str, ModelRecord],
    observed: Observed,
    gateway: GatewayRecord,
    now: datetime,
    deploy_timeout_s: float,
    serving_hash: str = "",
) -> tuple[Action, ...]:
    """Everything one tick should do, in order. Empty when converged.

    ``serving_hash`` fingerprints the cluster config that reaches replicas
    (:func:`servesync.llmconfigs.serving_hash`); a model deployed under
    another one is updated."""
    if not observed.reachable:
        return ()
    clock = Clock(now, deploy_timeout_s, serving_hash)
    routed = _routed(recorded, observed, gateway, clock)
    settled = _gateway_settled(observed, gateway, clock)
    clock = replace(clock, routed=routed, routed_aliases=_routed_aliases(
        recorded, gateway, routed, settled=settled),
        routed_weights=_routed_weights(recorded, gateway, routed, settled=settled))
    specs = {s.name: s for s in desired.specs}
    # every record with its spec's aliases and what the gateway routes of them: the
    # actions below carry these, and a record no action touches is stored as such
    folded = {k: _fold(r, specs.get((r.user_id, r.suffix)), clock) for k, r in recorded.items()}
    by_name = {(r.user_id, r.suffix): r for r in folded.values()}
    per_model: list[Action] = []
    after: dict[ModelName, ModelRecord] = {}  # a declared model's record after this tick
    for name, spec in sorted(specs.items()):
        rec = by_name.get(name)
        action = _admit(spec, desired.revision, clock, _sibling(spec, by_name)) \
            if rec is None else _converge(
            rec, spec, desired.revision, observed, clock
        )
        if action is not None:
            per_model.append(action)
        if isinstance(action, RecordOnly | Deploy):
            after[name] = action.record
        elif rec is not None:
            after[name] = rec
    for name, rec in sorted(by_name.items()):
        if name in specs:
            continue
        revoked = desired.revoked.get(name)
        if revoked is not None:
            action = _revoke(rec, revoked, observed, clock)
        elif _reshaped(rec, specs, after, clock):
            action = None  # keeps serving until its successor under the name runs
        elif not _held(rec, name, desired):
            action = _undeclared(rec, observed, clock)
        else:
            action = None
        if action is not None:
            per_model.append(action)
    declared = set(specs) | set(desired.revoked)
    per_model.extend(_deletions(folded, declared, per_model, observed, gateway, clock))
    touched = {_key(a) for a in per_model}
    per_model.extend(RecordOnly(rec, _fold_reason(recorded[key], rec))
                     for key, rec in sorted(folded.items())
                     if rec is not recorded[key] and key not in touched)
    final = _final_records(folded, per_model)
    gateway_action = _gateway(final, observed, gateway, declared)
    ordered: list[Action] = [a for a in per_model if isinstance(a, RecordOnly | Forget)]
    ordered += [gateway_action] if gateway_action else []
    ordered += [a for a in per_model if isinstance(a, DeleteApp)]
    ordered += [a for a in per_model if isinstance(a, Deploy)]
    return tuple(ordered)


def _held(rec: ModelRecord, name: ModelName, desired: DesiredState) -> bool:
    return desired.holds(name, rec.source_file)


def _fold(rec: ModelRecord, spec: ModelSpec | None, clock: Clock) -> ModelRecord:
    """``rec`` with the aliases of its valid ``spec`` (None: held, revoked or
    undeclared: its recorded ones stay) and the alias names the gateway surely
    routes to it now; ``rec`` itself when neither changed."""
    spec_json = rec.spec
    if spec is not None and rec.spec.get("aliases", []) != list(spec.aliases):
        spec_json = {**spec_json, "aliases": list(spec.aliases)}
    if spec is not None and spec.version is not None and rec.spec.get("weight") != spec.weight:
        spec_json = {**spec_json, "weight": spec.weight}  # the gateway's, never a deploy
    routed = clock.routed_aliases.get(rec.app_name, ()) if rec.app_name in clock.routed else ()
    weight = clock.routed_weights.get(rec.app_name) if rec.app_name in clock.routed else None
    if spec_json is rec.spec and routed == rec.routed_aliases and weight == rec.routed_weight:
        return rec
    return replace(rec, spec=spec_json, routed_aliases=routed, routed_weight=weight)


def _fold_reason(old: ModelRecord, new: ModelRecord) -> str:
    parts = []
    if old.spec.get("aliases", []) != new.spec.get("aliases", []):
        parts.append(f"aliases now {new.spec.get('aliases')}")
    if old.routed_aliases != new.routed_aliases:
        parts.append(f"the gateway routes aliases {list(new.routed_aliases)}")
    if old.spec.get("weight") != new.spec.get("weight"):
        parts.append(f"weight asked now {new.spec.get('weight')}")
    if old.routed_weight != new.routed_weight:
        parts.append(f"weight in effect now {new.routed_weight}")
    return "; ".join(parts)


def _event(clock: Clock, kind: EventKind, message: str, revision: str | None) -> Event:
    return Event.at_time(clock.now, kind, message, revision)


def _reshaped(rec: ModelRecord, specs: Mapping[ModelName, ModelSpec],
              after: Mapping[ModelName, ModelRecord], clock: Clock) -> bool:
    """Is undeclared ``rec`` the model's old shape (plain while the file now gives
    ``versions``, or a version while it now gives ``model_source``) whose new
    shape is on its way to serve but the gateway does not surely route yet?
    Then it is left serving: the name never goes dark while the model changes
    shape; it is deleted once the settled gateway routes the new shape
    (:attr:`Clock.routed`). ``after``: the declared records as this tick
    leaves them. A new shape that no record wants to run (``enabled: false``,
    stopped by its schedule) keeps nothing serving: the old record takes the
    undeclared road, as the user's stop asks."""
    new = [s for s in specs.values() if s.user_id == rec.user_id
           and s.model_id == rec.model_id and (s.version is None) != (rec.version is None)]
    records = [after[s.name] for s in new if s.name in after]
    return rec.state is not State.DELETING and any(
        r.enabled and r.state not in (State.STOPPED, State.DELETING) for r in records
    ) and not any(r.app_name in clock.routed for r in records)


def _sibling(spec: ModelSpec, by_name: Mapping[ModelName, ModelRecord]) -> ModelRecord | None:
    """For a model not yet recorded: the first admitted record of its
    ``model_id`` in another shape or version (another version, or the model
    before or after it had versions), whose public id it takes."""
    same = [r for (user, _), r in by_name.items()
            if user == spec.user_id and r.model_id == spec.model_id]
    return min(same, key=lambda r: (r.created_at, r.model_key), default=None)


def _admit(spec: ModelSpec, revision: str | None, clock: Clock,
           sibling: ModelRecord | None = None) -> Action:
    prefix = sibling.prefix if sibling else naming.model_prefix(spec.user_id, clock.now)
    key = naming.model_key(spec.user_id, spec.suffix, clock.now)
    if spec.version is not None:  # one public id and key stem for all of a model's versions
        stem = (naming.key_stem(sibling.model_key) or sibling.model_key) if sibling else \
            naming.model_key(spec.user_id, spec.model_id, clock.now)
        key = naming.version_key(stem, spec.version)
    base = ModelRecord(
        model_key=key, user_id=spec.user_id, suffix=spec.suffix, prefix=prefix, app_name=key,
        spec_hash=spec.spec_hash(), spec=spec.to_json(), state=State.QUEUED,
        enabled=spec.enabled, source_file=spec.source_file, created_at=clock.stamp,
        updated_at=clock.stamp,
    )
    base = base.with_event(_event(clock, EventKind.ADMITTED, f"declared in {spec.source_file}",
                                  revision))
    if not spec.enabled:
        rec = replace(base, state=State.STOPPED)
        return RecordOnly(rec, "declared with enabled: false")
    due = scheduling.due(spec.schedule, None, clock.now)
    if due is not None:
        return _record(base, clock, EventKind.STOPPED, f"schedule: {due[1]}",
                       "declared outside its active hours", state=State.STOPPED,
                       schedule_stop=due[0])
    return _deploy(base, spec, Kind.CREATE, "new model", revision, clock)


def _deploy(rec: ModelRecord, spec: ModelSpec, kind: Kind, reason: str,
            revision: str | None, clock: Clock) -> Deploy:
    event_kind = {Kind.SCALE: EventKind.SCALED, Kind.REDEPLOY: EventKind.DRIFT}.get(
        kind, EventKind.DEPLOY_REQUESTED)
    new = rec.with_event(
        _event(clock, event_kind, f"{kind}: {reason}", revision),
        spec_hash=spec.spec_hash(), spec=spec.to_json(), state=State.DEPLOYING,
        enabled=True, source_file=spec.source_file, attempted_revision=revision,
        error_summary=None, submitted_at=None, retry_at=None,
        serving_hash=clock.serving_hash, unhealthy_since=None, schedule_stop=None,
    )
    return Deploy(kind, new, spec, reason)


def _record(rec: ModelRecord, clock: Clock, kind: EventKind, message: str, reason: str,
            **changes: object) -> RecordOnly:
    revision = rec.attempted_revision
    return RecordOnly(rec.with_event(_event(clock, kind, message, revision), **changes), reason)


def _change_kind(rec: ModelRecord, spec: ModelSpec) -> Kind:
    old, new = rec.spec, spec.to_json()
    differing = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    differing -= set(_UNDEPLOYED_FIELDS)
    if differing and differing <= set(_SCALE_FIELDS):
        return Kind.SCALE
    if differing and differing <= {*_SCALE_FIELDS, *_LIGHT_FIELDS}:
        return Kind.RECONFIGURE
    return Kind.UPDATE


def _metadata_changed(rec: ModelRecord, spec: ModelSpec) -> bool:
    """Has a field that never reaches Ray (description, labels, the deploy
    deadline) changed since the record's spec?"""
    new = spec.metadata_json()
    return any(rec.spec.get(k) != new.get(k) for k in METADATA_FIELDS)


def _with_metadata(action: Action | None, rec: ModelRecord, spec: ModelSpec) -> Action | None:
    """``action`` (None: nothing else to do) with the record's spec brought up
    to date with ``spec``'s metadata: recorded (and so shown) at once, with no
    Ray call and no restart of its own."""
    if not _metadata_changed(rec, spec):
        return action
    if action is None:
        return RecordOnly(replace(rec, spec=_respec(rec.spec, spec)),
                          "description, labels, deploy deadline or notify changed")
    if isinstance(action, RecordOnly | Deploy):
        return replace(action, record=replace(action.record,
                                              spec=_respec(action.record.spec, spec)))
    return action


def _respec(recorded: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """``recorded`` (a record's spec) with ``spec``'s metadata instead of its own."""
    out = {k: v for k, v in recorded.items() if k not in METADATA_FIELDS}
    out.update(spec.metadata_json())
    return out


def _converge(rec: ModelRecord, spec: ModelSpec, revision: str | None, observed: Observed,
              clock: Clock) -> Action | None:
    if (rec.running_since is not None or rec.state in (State.RUNNING, State.DEGRADED)) and \
            rec.spec.get("schedule") != spec.metadata_json().get("schedule"):
        # a new schedule: its clock starts now (also for a model recorded RUNNING
        # before schedules existed, which has no running_since)
        rec = replace(rec, running_since=clock.stamp)
    return _with_metadata(_converge_spec(rec, spec, revision, observed, clock), rec, spec)


def _scheduled(rec: ModelRecord, spec: ModelSpec, status: AppStatus, revision: str | None,
               clock: Clock) -> tuple[bool, Action | None]:
    """What the schedule decides for an enabled model: (True, its action or
    None) when it decides, (False, None) when the other rules do."""
    schedule = spec.schedule
    if rec.schedule_stop is not None and rec.state is State.DELETING:
        return True, None  # stopping: the deletion goes on in _deletions
    if rec.schedule_stop is not None and rec.state is State.STOPPED:
        changed = spec.spec_hash() != rec.spec_hash or \
            rec.spec.get("schedule") != spec.metadata_json().get("schedule")
        why = scheduling.start_reason(schedule, rec.schedule_stop, changed=changed,
                                      now=clock.now)
        if why is not None:
            return True, _deploy(rec, spec, Kind.START, f"schedule: {why}", revision, clock)
        if rec.schedule_stop != scheduling.ACTIVE_HOURS and scheduling.outside(schedule,
                                                                               clock.now):
            # the window closed: its opening starts the model again
            return True, RecordOnly(replace(rec, schedule_stop=scheduling.ACTIVE_HOURS),
                                    "stopped by stop_after; now outside active hours too")
        return True, None
    if schedule is None or rec.state is State.DELETING:
        return False, None
    running = rec.state in (State.RUNNING, State.DEGRADED) and spec.spec_hash() == rec.spec_hash
    due = scheduling.due(schedule, rec.running_since if running else None, clock.now)
    if due is None:
        return False, None
    why, message = due
    changes: dict[str, Any] = dict(schedule_stop=why, running_since=None, retry_at=None,
                                   attempts=0, unhealthy_since=None, enabled=True)
    if rec.state is State.STOPPED or status is AppStatus.MISSING:
        return True, _record(rec, clock, EventKind.STOPPED, f"schedule: {message}",
                             "stopped by the schedule", state=State.STOPPED,
                             error_summary=None, **changes)
    return True, _record(rec, clock, EventKind.STOP_REQUESTED, f"schedule: {message}",
                         "stopping: schedule", state=State.DELETING, error_summary=None,
                         **changes)


def _converge_spec(rec: ModelRecord, spec: ModelSpec, revision: str | None,
                   observed: Observed, clock: Clock) -> Action | None:
    status = observed.status(rec.app_name)
    if not spec.enabled:
        return _stop(rec, status, clock)
    decided, action = _scheduled(rec, spec, status, revision, clock)
    if decided:
        return action
    if rec.state is State.DELETING and status is AppStatus.RUNNING \
            and spec.spec_hash() == rec.spec_hash == rec.applied_hash:
        return _running(rec, clock, "declared again before its application was deleted")
    if rec.state is State.DELETING and status is not AppStatus.MISSING:
        return None  # let the deletion finish before deploying the name again
    if rec.state in (State.DELETING, State.STOPPED):
        return _deploy(rec, spec, Kind.START, "declared again / enabled", revision, clock)
    if spec.spec_hash() != rec.spec_hash:
        kind = _change_kind(rec, spec)
        return _deploy(rec, spec, kind, f"spec changed in {spec.source_file}", revision, clock)
    if rec.serving_hash != clock.serving_hash and rec.state is not State.FAILED:
        return _deploy(rec, spec, Kind.UPDATE, "the cluster's serving config changed",
                       revision, clock)
    return _follow(rec, spec, status, observed, clock)


def _follow(rec: ModelRecord, spec: ModelSpec, status: AppStatus, observed: Observed,
            clock: Clock) -> Action | None:
    """Same spec as recorded: follow what Ray reports."""
    obs = observed.apps.get(rec.app_name)
    message = obs.message if obs else ""
    if rec.state is State.QUEUED:
        if clock.since(rec.retry_at) >= 0:
            return _deploy(rec, spec, Kind.RETRY, "backoff over", rec.attempted_revision, clock)
        return None
    if rec.state is State.DEPLOYING:
        return _deploying(rec, spec, status, message, clock)
    if rec.state is State.FAILED and status is AppStatus.RUNNING:
        return _running(rec, clock, "recovered")
    if rec.state not in (State.RUNNING, State.DEGRADED):
        return None
    if status is AppStatus.MISSING:
        return _deploy(rec, spec, Kind.REDEPLOY, "application missing from Ray",
                       rec.attempted_revision, clock)
    if status is AppStatus.DEPLOY_FAILED:  # Ray gave up on it
        return _failed(rec, clock, f"application {status}: {message}".rstrip(": "))
    if status in (AppStatus.RUNNING, AppStatus.UNHEALTHY):
        running = obs.running_replicas if obs else 0
        return _health(rec, spec, _shortfall(rec, status, running, message), running, clock)
    return None


def _shortfall(rec: ModelRecord, status: AppStatus, running: int, message: str) -> str | None:
    """Why a RUNNING model is not healthy (too few replicas, or Ray says
    UNHEALTHY), or None when it is."""
    asked = rec.asked_replicas
    if status is not AppStatus.UNHEALTHY and running >= asked:
        return None
    if isinstance(rec.spec.get("num_replicas"), int):
        reason = f"{running} of {asked} replicas running"
    else:
        reason = f"{running} replicas running, autoscaling min_replicas {asked}"
    if status is AppStatus.UNHEALTHY:
        reason += f"; Ray: UNHEALTHY: {message}".rstrip(": ")
    return reason


def _health(rec: ModelRecord, spec: ModelSpec, shortfall: str | None, running: int,
            clock: Clock) -> Action | None:
    """RUNNING ⇄ DEGRADED. A dip is remembered (``unhealthy_since``, no event)
    and becomes DEGRADED once it has lasted ``DEGRADED_GRACE_S``."""
    if shortfall is None:
        if rec.state is State.DEGRADED:
            of = f" of {rec.asked_replicas}" if isinstance(spec.num_replicas, int) else ""
            return _running(rec, clock, f"recovered: {running}{of} replicas running")
        if rec.unhealthy_since is not None:
            return RecordOnly(replace(rec, unhealthy_since=None), "replicas back within grace")
        if spec.source_file != rec.source_file:
            return RecordOnly(replace(rec, source_file=spec.source_file, spec=spec.to_json()),
                              f"moved to {spec.source_file}")
        return None
    if rec.state is State.DEGRADED:
        if shortfall == rec.error_summary:
            return None
        return _record(rec, clock, EventKind.DEGRADED, shortfall, "still degraded",
                       error_summary=shortfall)
    if rec.unhealthy_since is None:
        return RecordOnly(replace(rec, unhealthy_since=clock.stamp),
                          f"{shortfall} (DEGRADED if it lasts {DEGRADED_GRACE_S:.0f} s)")
    if clock.since(rec.unhealthy_since) < DEGRADED_GRACE_S:
        return None
    return _record(rec, clock, EventKind.DEGRADED, shortfall, f"degraded: {shortfall}",
                   state=State.DEGRADED, error_summary=shortfall, unhealthy_since=None)


def _deploying(rec: ModelRecord, spec: ModelSpec, status: AppStatus, message: str,
               clock: Clock) -> Action | None:
    if rec.submitted_at is None:  # servesync stopped between the record and Ray's answer
        return _deploy(rec, spec, Kind.RETRY, "submission not confirmed by Ray",
                       rec.attempted_revision, clock)
    age = clock.since(rec.submitted_at)
    if status is AppStatus.RUNNING and age >= SETTLE_S:
        if rec.app_name in clock.routed:
            return _running(rec, clock, "application RUNNING; routed by the gateway")
        if rec.events and rec.events[-1].message == WAIT_GATEWAY:
            return None  # said once; _gateway adds it, a later tick sees the gateway settled
        return _record(rec, clock, EventKind.ROUTING, WAIT_GATEWAY, "waiting for the gateway")
    if status in _FAILED_STATUSES and age >= SETTLE_S:
        return _failed(rec, clock, f"{status}: {message}".rstrip(": "))
    if status is AppStatus.MISSING and age >= MISSING_GRACE_S:
        return _deploy(rec, spec, Kind.REDEPLOY, "submitted application not in Ray",
                       rec.attempted_revision, clock)
    deadline = spec.deploy_timeout_s or clock.deploy_timeout_s  # the model's, else the cluster's
    if age >= deadline:
        reason = f" ({message})" if message else ""
        return _failed(rec, clock, f"not RUNNING after {deadline:.0f} s (Ray: {status}{reason})")
    return None


def _running(rec: ModelRecord, clock: Clock, message: str) -> RecordOnly:
    # the stop_after clock starts when a spec that was not running runs; a redeploy
    # of the running spec (drift, retry) or a recovery keeps it
    same = rec.running_since is not None and rec.applied_hash == rec.spec_hash
    return _record(rec, clock, EventKind.RUNNING, message, message, state=State.RUNNING,
                   enabled=True, applied_hash=rec.spec_hash,
                   applied_revision=rec.attempted_revision, error_summary=None, attempts=0,
                   unhealthy_since=None,
                   running_since=rec.running_since if same else clock.stamp)


def _failed(rec: ModelRecord, clock: Clock, summary: str) -> RecordOnly:
    return _record(rec, clock, EventKind.FAILED, summary, "deploy failed", state=State.FAILED,
                   error_summary=summary)


def _stop(rec: ModelRecord, status: AppStatus, clock: Clock) -> Action | None:
    if rec.state is State.STOPPED and (rec.error_summary is not None  # e.g. once revoked
                                       or rec.schedule_stop is not None):
        return _record(rec, clock, EventKind.STOPPED, "enabled: false", "stopped",
                       enabled=False, error_summary=None, schedule_stop=None)
    if rec.state is State.STOPPED or (rec.state is State.DELETING and not rec.enabled):
        return None
    if status is AppStatus.MISSING:
        return _record(rec, clock, EventKind.STOPPED, "enabled: false", "stopped",
                       state=State.STOPPED, enabled=False, error_summary=None,
                       running_since=None, schedule_stop=None)
    return _record(rec, clock, EventKind.STOP_REQUESTED, "enabled: false", "stopping",
                   state=State.DELETING, enabled=False, error_summary=None,
                   running_since=None, schedule_stop=None)


def _revoke(rec: ModelRecord, reason: str, observed: Observed, clock: Clock) -> Action | None:
    """Its model_source no longer passes the path rules: stop it, not hold it.

    The same road as ``enabled: false``: DELETING leaves the gateway at once and
    :func:`_deletions` deletes the application once the gateway without it has
    settled; a model with no application (QUEUED, never submitted, already
    gone) is STOPPED at once. A revoked model is still declared, so it keeps
    its record and name and starts again when its spec is valid."""
    summary = f"stopped: {reason}"
    status = observed.status(rec.app_name)
    if rec.state is State.DELETING or (rec.state is State.STOPPED
                                       and status is AppStatus.MISSING):
        if rec.error_summary == summary:
            return None  # stopping or stopped already; the deletion goes on in _deletions
        return _record(rec, clock, EventKind.STOP_REQUESTED, reason, "source refused",
                       error_summary=summary)
    if status is AppStatus.MISSING:
        return _record(rec, clock, EventKind.STOPPED, reason, "stopped: source refused",
                       state=State.STOPPED, error_summary=summary, retry_at=None, attempts=0,
                       running_since=None)
    return _record(rec, clock, EventKind.STOP_REQUESTED, reason, "stopping: source refused",
                   state=State.DELETING, error_summary=summary, retry_at=None, attempts=0,
                   running_since=None)


def _undeclared(rec: ModelRecord, observed: Observed, clock: Clock) -> Action | None:
    status = observed.status(rec.app_name)
    if rec.state is State.DELETING:
        return None  # handled by _deletions
    if status is AppStatus.MISSING:
        return Forget(rec.model_key, rec.public_id, "no longer declared; no application")
    return _record(rec, clock, EventKind.DELETE_REQUESTED, "no longer declared", "deleting",
                   state=State.DELETING)


def _deletions(recorded: Mapping[str, ModelRecord], declared: Set[ModelName],
               planned: Iterable[Action], observed: Observed, gateway: GatewayRecord,
               clock: Clock) -> list[Action]:
    """Models already DELETING: delete the app once out of a settled gateway.

    ``declared``: valid or revoked names; those are stopped (kept), the rest forgotten."""
    touched = {_key(a) for a in planned}
    in_gateway = {app for _, app in gateway.members}
    settled = _gateway_settled(observed, gateway, clock)
    out: list[Action] = []
    for rec in recorded.values():
        if rec.state is not State.DELETING or rec.model_key in touched:
            continue
        status = observed.status(rec.app_name)
        still_declared = (rec.user_id, rec.suffix) in declared
        if status is AppStatus.MISSING:
            if still_declared:
                out.append(_record(rec, clock, EventKind.STOPPED, "application deleted",
                                   "stopped", state=State.STOPPED, running_since=None))
            else:
                out.append(Forget(rec.model_key, rec.public_id, "application deleted"))
        elif status is not AppStatus.DELETING and rec.app_name not in in_gateway and settled:
            kind = Kind.STOP if still_declared else Kind.DELETE
            out.append(DeleteApp(kind, rec, "left the gateway"))
    return out


def _gateway_settled(observed: Observed, gateway: GatewayRecord, clock: Clock) -> bool:
    status = observed.status(naming.GATEWAY_APP)
    if not gateway.members:
        return status in (AppStatus.MISSING, AppStatus.RUNNING)
    return status is AppStatus.RUNNING and clock.since(gateway.deployed_at) >= SETTLE_S


def _routed(recorded: Mapping[str, ModelRecord], observed: Observed, gateway: GatewayRecord,
            clock: Clock) -> frozenset[str]:
    """Applications a client can call through the gateway now: the members of a
    settled gateway (RUNNING, and ``SETTLE_S`` after its last update: measured
    on Ray 2.60, a route change shows the gateway DEPLOYING within 0.4 s and
    RUNNING again once every replica has applied it, ~1 s). Before it settles,
    only members it already routed before their current submission (a model
    updated in place keeps its route: no wait)."""
    members = {app for _, app in gateway.members}
    if _gateway_settled(observed, gateway, clock):
        return frozenset(members)
    since = gateway.deployed_at or ""
    return frozenset(r.app_name for r in recorded.values()
                     if r.app_name in members and r.applied_hash is not None
                     and r.submitted_at is not None and since <= r.submitted_at)


def _routed_aliases(recorded: Mapping[str, ModelRecord], gateway: GatewayRecord,
                    routed: frozenset[str], *, settled: bool) -> dict[str, tuple[str, ...]]:
    """Alias names a client can call now, by application: a settled gateway's
    aliases. Before it settles, only those a model's record already counted
    routed that the gateway still lists (an alias added waits for the
    settle, one removed is not counted from the update on)."""
    out: dict[str, list[str]] = defaultdict(list)
    if settled:
        apps_of: dict[str, list[str]] = defaultdict(list)  # a model's versions: several
        for public_id, app in gateway.members:
            apps_of[public_id].append(app)
        for alias, public_id in gateway.aliases:
            for app in apps_of.get(public_id, ()):
                out[app].append(alias)
    else:
        listed = set(gateway.aliases)
        for r in recorded.values():
            if r.app_name in routed:
                out[r.app_name] = [a for a in r.routed_aliases if (a, r.public_id) in listed]
    return {app: tuple(sorted(names)) for app, names in out.items() if names}


def _routed_weights(recorded: Mapping[str, ModelRecord], gateway: GatewayRecord,
                    routed: frozenset[str], *, settled: bool) -> dict[str, int]:
    """A version's share a client's request surely gets now, by application: a
    settled gateway's. Before it settles, a record's last one while the
    gateway's update keeps it (a changed weight counts once settled)."""
    if settled:
        return {app: weight for app, _, weight in gateway.weights}
    listed = {(app, weight) for app, _, weight in gateway.weights}
    return {r.app_name: r.routed_weight for r in recorded.values()
            if r.app_name in routed and r.routed_weight is not None
            and (r.app_name, r.routed_weight) in listed}


def _key(action: Action) -> str | None:
    if isinstance(action, Forget):
        return action.model_key
    if isinstance(action, UpdateGateway):
        return None
    return action.record.model_key


def _final_records(recorded: Mapping[str, ModelRecord],
                   actions: Iterable[Action]) -> dict[str, ModelRecord]:
    final = dict(recorded)
    for a in actions:
        if isinstance(a, Forget):
            final.pop(a.model_key, None)
        elif not isinstance(a, UpdateGateway):
            final[a.record.model_key] = a.record
    return final


def _serves(rec: ModelRecord, observed: Observed) -> bool:
    """Can the gateway route to this model now (or right after this tick)?"""
    status = observed.status(rec.app_name)
    if status in (AppStatus.MISSING, AppStatus.DELETING) or not rec.enabled:
        return False
    if rec.state in (State.RUNNING, State.DEGRADED):
        return True
    if rec.state is State.DEPLOYING and status is AppStatus.RUNNING:
        return True  # callable: join now, recorded RUNNING once the gateway settled
    if rec.state not in (State.DEPLOYING, State.QUEUED, State.FAILED) or rec.applied_hash is None:
        return False  # never ran: it joins once its application is RUNNING
    # During an update (or its retry backoff), or after one that failed, the last good version's
    # replicas keep serving (Serve starts new replicas before stopping old
    # ones): keep routing to the model while Ray shows any replica RUNNING.
    obs = observed.apps.get(rec.app_name)
    return status is not AppStatus.DEPLOY_FAILED or (obs is not None and obs.running_replicas > 0)


def _gateway(final: Mapping[str, ModelRecord], observed: Observed,
             gateway: GatewayRecord, declared: Set[ModelName] = frozenset()
             ) -> UpdateGateway | None:
    serving: dict[str, list[ModelRecord]] = defaultdict(list)
    for r in sorted(final.values(), key=lambda r: (r.created_at, r.model_key)):
        if _serves(r, observed):
            serving[r.public_id].append(r)
    routed: dict[str, list[ModelRecord]] = {}
    for public_id, found in serving.items():
        # Two users may end up with one public id (user ids may hold '-'):
        # the first admitted keeps it; the other is never routed (its
        # status waits for the gateway, then fails at the deadline).
        owner = (found[0].user_id, found[0].model_id)
        mine = [r for r in found if (r.user_id, r.model_id) == owner]
        # a model changing shape: its declared records, once one of them serves
        mine = [r for r in mine if (r.user_id, r.suffix) in declared] or mine
        versions = sorted((r for r in mine if r.version is not None),
                          key=lambda r: r.version or "")
        routed[public_id] = versions or mine[:1]
    members = tuple(sorted((r.public_id, r.app_name) for rs in routed.values() for r in rs))
    weights = tuple(sorted(w for rs in routed.values() if rs[0].version is not None
                           for w in weighting.in_effect(
                               [(r.app_name, r.version or "", r.weight) for r in rs])))
    firsts = sorted((rs[0] for rs in routed.values()), key=lambda r: (r.created_at, r.model_key))
    aliases = _gateway_aliases(firsts, {r.public_id for r in final.values()})
    lora = _gateway_lora(routed)
    status = observed.status(naming.GATEWAY_APP)
    reason = _gateway_change(gateway, members, aliases, weights, lora)
    if reason is None and members and status is AppStatus.MISSING:
        reason = "gateway application missing from Ray"
    if reason is not None:
        return UpdateGateway(members, reason, aliases=aliases, weights=weights, lora=lora)
    if not members and status not in (AppStatus.MISSING, AppStatus.DELETING):
        return UpdateGateway((), "no model to serve")
    return None


def _gateway_change(gateway: GatewayRecord, members: tuple[tuple[str, str], ...],
                    aliases: tuple[tuple[str, str], ...],
                    weights: tuple[tuple[str, str, int], ...],
                    lora: tuple[tuple[str, str], ...]) -> str | None:
    """Why the gateway's routes must change (None: they need not): its members
    or aliases, else (the same models routed) its weights or LoRA paths."""
    if members != gateway.members or aliases != gateway.aliases:
        old, new = set(gateway.members), set(members)
        change = [f"+{m[0]}" for m in sorted(new - old)] + [f"-{m[0]}" for m in sorted(old - new)]
        was, now = set(gateway.aliases), set(aliases)
        change += [f"+alias {a}" for a, _ in sorted(now - was)]
        change += [f"-alias {a}" for a, _ in sorted(was - now)]
        return " ".join(change)
    if weights == gateway.weights and lora == gateway.lora:
        return None
    reasons = []
    if weights != gateway.weights:
        reasons.append("weights " + " ".join(f"{app.rsplit('.', 1)[-1]} {w}%"
                                             for app, _, w in weights))
    if lora != gateway.lora:
        was_at, now_at = dict(gateway.lora), dict(lora)
        moved = sorted(m for m in was_at.keys() | now_at.keys() if was_at.get(m) != now_at.get(m))
        reasons.append("lora paths of " + " ".join(moved))
    return "; ".join(reasons)


def _gateway_lora(routed: Mapping[str, list[ModelRecord]]) -> tuple[tuple[str, str], ...]:
    """(public id, LoRA path) of each routed model whose recorded spec has
    ``lora``: the gateway lists its adapters from that path, never asking the
    model's replica (which would start a model scaled to zero). A model
    routed as versions has none: validation refuses ``lora`` with versions
    (and the gateway's ``routes`` a route with both)."""
    out = []
    for public_id, rs in routed.items():
        lora = rs[0].spec.get("lora")
        path = lora.get("path") if isinstance(lora, Mapping) else None
        if isinstance(path, str) and path:
            out.append((public_id, path))
    return tuple(sorted(out))


def _gateway_aliases(routed: Iterable[ModelRecord],
                     public_ids: Set[str]) -> tuple[tuple[str, str], ...]:
    """(alias name, public id) for the aliases of the ``routed`` models (given
    in admission order). No alias takes a recorded model's public id. When
    two models claim one name (only where user ids hold '-', or while a held
    file keeps an alias another file now lists), it goes, in this order, to:
    the longest user id (``alice-x-chat`` is in user ``alice-x``'s names,
    never ``alice``'s alias ``x-chat``: no tenant takes another's name); the
    model routing it now (a held model keeps its aliases); the first admitted."""
    claims: dict[str, list[tuple[int, int, int, str]]] = {}
    for order, r in enumerate(routed):
        for name in r.alias_names:
            if name not in public_ids:
                claims.setdefault(name, []).append(
                    (-len(r.user_id), 0 if name in r.routed_aliases else 1, order, r.public_id))
    return tuple(sorted((name, min(c)[3]) for name, c in claims.items()))


def requeue_after(records: Mapping[str, ModelRecord], *, now: datetime,
                  in_flight: bool) -> float | None:
    """Seconds until anything recorded needs another look; None when only a
    commit (or the interval's drift check) can change something.

    ``in_flight``: this tick asked Ray for a change, or the gateway has not
    settled, or Ray did not answer. Those, and every DEPLOYING or DELETING
    model, are looked at again after Ray's settle delay (Ray sends no events:
    a deploy is followed until RUNNING, FAILED or its deadline); a model with a
    schedule at its next scheduled stop or start. A QUEUED
    model is looked at when its backoff ends, not before; a RUNNING one short
    of replicas when its grace ends, a DEGRADED one every ``DEGRADED_POLL_S``."""
    waits = [SETTLE_S] if in_flight else []
    for rec in records.values():
        scheduled = scheduling.wait_s(rec, now) if rec.spec.get("schedule") else None
        if scheduled is not None:  # the schedule's next stop or start
            waits.append(scheduled)
        if rec.state in (State.DEPLOYING, State.DELETING):
            waits.append(SETTLE_S)
        elif rec.state is State.DEGRADED:
            waits.append(DEGRADED_POLL_S)
        elif rec.state is State.RUNNING and rec.unhealthy_since:
            since = (now - datetime.fromisoformat(rec.unhealthy_since)).total_seconds()
            waits.append(max(SETTLE_S, DEGRADED_GRACE_S - since))
        elif rec.state is State.QUEUED and rec.retry_at:
            left = (datetime.fromisoformat(rec.retry_at) - now).total_seconds()
            if left > 0:  # one already due was retried by this very tick, if it could be
                waits.append(left)
    return min(waits) if waits else None


def backoff_s(attempts: int) -> float:
    """Delay before retry number ``attempts`` (1-based) of a transient failure."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


def after_transient(rec: ModelRecord, error: str, now: datetime, *,
                    min_delay_s: float = 0.0) -> ModelRecord:
    """The record to store when submitting ``rec`` hit a transient error: QUEUED
    until the backoff is over, and never sooner than ``min_delay_s`` (the
    error's own :attr:`~servesync.errors.TransientError.delay_s`)."""
    attempts = rec.attempts + 1
    delay = max(backoff_s(attempts), min_delay_s)
    retry_at = now + timedelta(seconds=delay)
    event = Event.at_time(now, EventKind.RETRY, f"{error} (retry in {delay:.0f} s)",
                          rec.attempted_revision)
    return rec.with_event(event, state=State.QUEUED, attempts=attempts,
                          retry_at=stamp(retry_at), error_summary=error)


def after_permanent(rec: ModelRecord, error: str, now: datetime) -> ModelRecord:
    """The record to store when Ray rejected ``rec``'s spec for good."""
    event = Event.at_time(now, EventKind.FAILED, error, rec.attempted_revision)
    return rec.with_event(event, state=State.FAILED, error_summary=error)
