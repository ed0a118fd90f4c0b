"""One reconcile tick: read, validate, observe, plan, apply, record, publish.

Called by ``servesync once`` / ``plan`` (through :mod:`servesync.wiring`)
and by the daemon loop, one tick at a time. The only place that wires the
pure planner to its side effects, each behind a protocol of
:mod:`servesync.converge.ports`: Ray (``Applier``), the records
(``RecordStore``) and the status files (``Publisher``). The plan is carried
out in phases, each recorded in one store write (the deploys written ahead
of their one batch call to Ray). One failure never stops the tick or loses
state: a transient Ray error on a deploy → QUEUED
with a backoff; a permanent one → FAILED, waiting for a new spec; Ray
unreachable → nothing planned, status says so. The tick returns a
:class:`TickResult` that says when it next needs a look
(docs/ARCHITECTURE.md, "The tick").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from servesync.config import Config
from servesync.converge import actions as act
from servesync.converge import planning
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppStatus, Observed
from servesync.converge.ports import (
    Applier,
    ModelDeploy,
    Notifier,
    Publisher,
    RecordStore,
    TickOutcome,
    TickReport,
)
from servesync.converge.records import (
    Event,
    EventKind,
    GatewayRecord,
    ModelRecord,
    State,
    own_secrets,
    stamp,
)
from servesync.desired import quotas, validating
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState
from servesync.errors import PermanentError, TransientError
from servesync.redaction import known_secrets, scrub

log = logging.getLogger("servesync.tick")

_PENDING = (State.QUEUED, State.DEPLOYING, State.DELETING)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did, and when it next needs to run (controller-runtime's
    ``Result{RequeueAfter}``): the daemon schedules exactly that."""

    tick: int
    revision: str | None
    actions: tuple[act.Action, ...]
    settled: bool  # nothing in flight: no deploy, deletion or retry pending
    converged: bool  # settled, nothing failed, every file valid, Ray reachable
    requeue_after_s: float | None  # look again this soon; None: only on a change or interval
    errors: tuple[str, ...] = field(default=())


class Reconciler:
    """Holds the long-lived parts (store, applier, publisher, clock) and runs ticks."""

    def __init__(self, config: Config, *, store: RecordStore, applier: Applier,
                 publisher: Publisher, clock: Callable[[], datetime] = utcnow,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier
        self.store = store
        self.applier = applier
        self.publisher = publisher
        self.clock = clock
        self.ticks = int(store.meta().get("tick", 0))  # persisted only with real changes
        self.validation = validating.ValidationCache()  # unchanged files aren't checked again
        self.quota_cache = quotas.QuotaCache()  # users whose inputs are unchanged: not recounted
        self._admitted: dict[str, tuple[ModelRecord, quotas.Admitted]] = {}  # for admissions()

    def read(self, snapshot: Snapshot) -> tuple[DesiredState, Observed]:
        desired = validating.validate_tree(snapshot.root, self.config,
                                           revision=snapshot.revision, cache=self.validation)
        # A model held at its last-known-good spec runs from its recorded source
        # and LoRA path: check those too, so a broken file can't shield a swapped
        # folder or a LoRA path the config no longer allows.
        records = self.store.models().values()
        recorded = [((r.user_id, r.suffix), r.source_file, str(r.spec.get("model_source", "")),
                     r.spec.get("lora")) for r in records]
        desired = validating.recheck_held(desired, recorded, self.config)
        # quotas span files and count in admission order: a pass over the records
        checked = quotas.apply(desired, admissions(records, self._admitted),
                               self.config.serving.quotas, cache=self.quota_cache) \
            if self.config.serving.quotas.active else desired
        if checked is not desired:  # a refused recorded model is now held: recheck its source
            desired = validating.recheck_held(checked, recorded, self.config)
        try:
            observed = scrub_messages(self.applier.observe(), records,
                                      self.config.serving.replica_env.values())
        except TransientError as e:
            observed = Observed(reachable=False, error=str(e))
        if not observed.reachable:
            log.warning("Ray unreachable: %s", observed.error or "no answer")
        return desired, observed

    def plan(self, desired: DesiredState, observed: Observed) -> tuple[act.Action, ...]:
        return planning.plan(
            desired=desired, recorded=self.store.models(), observed=observed,
            gateway=self.store.gateway(), now=self.clock(),
            deploy_timeout_s=self.config.serving.deploy_timeout_s,
            serving_hash=self.applier.serving_hash(),
        )

    def tick(self, snapshot: Snapshot) -> TickResult:
        started = time.monotonic()
        desired, observed = self.read(snapshot)
        actions = self.plan(desired, observed)
        errors = [i.render() for i in desired.issues()]
        invalid = len(errors)
        self.ticks += 1
        tick = self.ticks
        for action in actions:
            log.info("%s", act.describe(action))
        # Recorded once per phase (an idle tick writes nothing): a crash loses at
        # most the Ray calls of the phase in flight, which the next tick repeats.
        in_flight = self._apply(actions, tick, snapshot.revision, errors)
        recorded = self.store.models()
        self._notify(recorded, tick, snapshot.revision)
        self._publish(recorded, desired, observed, tick, snapshot, errors)
        gateway_ok = _gateway_ready(self.store.gateway(), observed)
        result = self._result(tick, snapshot, actions, recorded, gateway_ok, desired, errors,
                              in_flight=in_flight)
        outcome = _outcome(result, snapshot, observed, failed_calls=len(errors) - invalid)
        self.publisher.publish_metrics(TickReport(
            tick=tick, outcome=outcome, duration_s=time.monotonic() - started, records=recorded,
            desired=desired, observed=observed, revision=snapshot.revision, now=self.clock()))
        log.debug("tick %d done in %.3f s: %d actions, converged=%s, requeue after %s s",
                  tick, time.monotonic() - started, len(actions), result.converged,
                  result.requeue_after_s)
        return result

    def _notify(self, recorded: Mapping[str, ModelRecord], tick: int,
                revision: str | None) -> None:
        """Hand the notifier the stored records: it queues what changed since it
        last notified each model (so a tick that died before this line is made
        up for by the next one). A notifier's failure never fails the tick."""
        if self.notifier is None:
            return
        try:
            self.notifier.observe(recorded, tick, revision)
        except Exception:
            log.exception("notifications of tick %d could not be queued; the next tick "
                          "tries again", tick)

    def _apply(self, actions: tuple[act.Action, ...], tick: int, revision: str | None,
               errors: list[str]) -> bool:
        """Carry out the plan in its phases (the planner's order), one store write
        each: bookkeeping; the gateway and deletions; the deploys (written ahead,
        then one batch to Ray, then confirmed). Returns whether Ray took a change
        (or must be asked again soon); error lines go to ``errors``.

        A deploy that failed waits for its own retry_at; any other Ray call that
        was made or failed is looked at again after the settle delay."""
        if not actions:
            return False
        meta = {"tick": tick, "revision": revision}
        book = [a for a in actions if isinstance(a, act.RecordOnly | act.Forget)]
        calls = [a for a in actions if isinstance(a, act.UpdateGateway | act.DeleteApp)]
        deploys = [a for a in actions if isinstance(a, act.Deploy)]
        with self.store.batch():
            self.store.put_many(a.record for a in book if isinstance(a, act.RecordOnly))
            self.store.delete_many(a.model_key for a in book if isinstance(a, act.Forget))
            if not calls and not deploys:
                self.store.set_meta(**meta)
        if calls:
            self._call_each(calls, errors, meta=None if deploys else meta)
        accepted = self._deploy(deploys, errors, meta=meta) if deploys else False
        return bool(calls) or accepted

    def _call_each(self, calls: list[act.UpdateGateway | act.DeleteApp], errors: list[str],
                   *, meta: dict[str, Any] | None) -> None:
        """The gateway and the deletions, one Ray call each; their records in one write."""
        now = self.clock()
        done: list[ModelRecord] = []
        gateway: GatewayRecord | None = None
        for action in calls:
            try:
                if isinstance(action, act.UpdateGateway):
                    self.applier.deploy_gateway(action.members, aliases=action.aliases,
                                                weights=action.weights, lora=action.lora)
                    gateway = GatewayRecord(members=action.members, deployed_at=stamp(now),
                                            aliases=action.aliases, weights=action.weights,
                                            lora=action.lora)
                else:
                    self.applier.delete_app(action.record.app_name)
                    done.append(_submitted(action.record, now, "application deletion accepted"))
            except (TransientError, PermanentError) as e:
                errors.append(self._failed(action, e, now)[0])
        with self.store.batch():
            if gateway is not None:
                self.store.set_gateway(gateway)
            self.store.put_many(done)
            if meta is not None:
                self.store.set_meta(**meta)

    def _deploy(self, deploys: list[act.Deploy], errors: list[str], *,
                meta: dict[str, Any]) -> bool:
        """Write ahead, submit the batch in one Ray call, record each answer.

        The DEPLOYING records (``submitted_at`` None) are stored first: a crash
        before the confirmation leaves records the planner resubmits, never an
        application with no record. Returns whether Ray accepted any."""
        now = self.clock()
        self.store.put_many(a.record for a in deploys)
        batch = [ModelDeploy(a.spec, a.record.app_name, a.record.public_id) for a in deploys]
        failed: Mapping[str, TransientError | PermanentError]
        try:
            failed = self.applier.deploy_models(batch)
        except (TransientError, PermanentError) as e:  # nothing submitted: each fails with it
            failed = {a.record.app_name: e for a in deploys}
        after: list[ModelRecord] = []
        for action in deploys:
            rec, error = action.record, failed.get(action.record.app_name)
            if error is None:
                accepted = replace(rec, submitted_at=stamp(now))
                after.append(_submitted(accepted, now, "accepted by Ray Serve"))
                continue
            line, record = self._failed(action, error, now)
            errors.append(line)
            if record is not None:
                after.append(record)
        with self.store.batch():
            self.store.put_many(after)
            self.store.set_meta(**meta)
        return len(failed) < len(deploys)

    def _failed(self, action: act.Action, error: TransientError | PermanentError,
                now: datetime) -> tuple[str, ModelRecord | None]:
        """The error line, and for a deploy the record to store: QUEUED (transient,
        retried no sooner than ``error.delay_s``) or FAILED (permanent).

        Ray's and pydantic's errors may quote the deployment's config: the
        model's env values are taken out before the error is logged or recorded."""
        text = str(error)
        if isinstance(action, act.Deploy):  # the spec being deployed: not yet recorded
            text = scrub(text, known_secrets([*action.spec.env.values(),
                                              *self.config.serving.replica_env.values()]))
        log.warning("%s failed (%s): %s", act.describe(action),
                    "transient" if isinstance(error, TransientError) else "permanent", text)
        record = None
        if isinstance(action, act.Deploy):
            record = (planning.after_transient(action.record, text, now,
                                               min_delay_s=error.delay_s)
                      if isinstance(error, TransientError)
                      else planning.after_permanent(action.record, text, now))
        return f"{action.kind}: {text}", record

    def _publish(self, recorded: dict[str, ModelRecord], desired: DesiredState,
                 observed: Observed, tick: int, snapshot: Snapshot, errors: list[str]) -> None:
        """Write the status files. A failure is logged and added to ``errors``
        (the tick's outcome is then ``error``) and never stops the tick: its
        result and metrics still follow, the next tick writes the files again."""
        try:
            self._write_status(recorded, desired, observed, tick, snapshot)
        except Exception as e:
            log.exception("tick %d: the status files could not be written", tick)
            errors.append(f"status files: {type(e).__name__}: {scrub(str(e))}")

    def _write_status(self, recorded: dict[str, ModelRecord], desired: DesiredState,
                      observed: Observed, tick: int, snapshot: Snapshot) -> None:
        source_error = snapshot.error
        if not observed.reachable:
            ray_error = "Ray unreachable" + (f": {observed.error}" if observed.error else "")
            source_error = f"{source_error}; {ray_error}" if source_error else ray_error
        self.publisher.publish(
            records=recorded, desired=desired, observed=observed, tick=tick,
            revision=snapshot.revision, source_error=source_error, now=self.clock(),
            committed_at=snapshot.committed_at,
        )

    def _result(self, tick: int, snapshot: Snapshot, actions: tuple[act.Action, ...],
                recorded: dict[str, ModelRecord], gateway_ok: bool, desired: DesiredState,
                errors: list[str], *, in_flight: bool) -> TickResult:
        settled = not in_flight and gateway_ok and not any(
            r.state in _PENDING for r in recorded.values())
        failed = any(r.state in (State.FAILED, State.DEGRADED) for r in recorded.values())
        converged = settled and not failed and desired.ok and snapshot.error is None
        requeue = planning.requeue_after(recorded, now=self.clock(),
                                         in_flight=in_flight or not gateway_ok)
        return TickResult(tick, snapshot.revision, actions, settled, converged, requeue,
                          tuple(errors))


def scrub_messages(observed: Observed, records: Iterable[ModelRecord],
                   operator: Iterable[str]) -> Observed:
    """``observed`` with each application's message (Ray's, which may quote the
    deployment's config: its runtime_env, pydantic's input_value) scrubbed of
    its own record's env values, the operator's ``replica_env`` values
    (``operator``) and URL credentials and token-shaped strings, before the
    planner copies it into a record (an error summary, an event, a
    notification) or the status files show it."""
    if not any(obs.message for obs in observed.apps.values()):
        return observed  # the usual tick: nothing to scrub
    operator = tuple(operator)
    by_app = {r.app_name: r for r in records}
    apps = {}
    for name, obs in observed.apps.items():
        if obs.message:
            own = by_app.get(name)
            known = own_secrets([own] if own is not None else [], operator)
            obs = replace(obs, message=scrub(obs.message, known))
        apps[name] = obs
    return replace(observed, apps=apps)


def admissions(records: Iterable[ModelRecord],
               memo: dict[str, tuple[ModelRecord, quotas.Admitted]] | None = None,
               ) -> tuple[quotas.Admitted, ...]:
    """The recorded models as the quota pass counts them: in admission order,
    each with the spec it keeps running while held (``servesync validate``
    reads them from the state file the same way). ``memo``: last call's, by
    model key; a record that is the very same (frozen) object as then gives
    the same :class:`~servesync.desired.quotas.Admitted` object, so the quota
    pass's cache compares it by identity (the store keeps its records)."""
    if memo is None:
        return tuple(_admitted(r) for r in records)
    out: dict[str, tuple[ModelRecord, quotas.Admitted]] = {}
    for r in records:
        hit = memo.get(r.model_key)
        out[r.model_key] = hit if hit is not None and hit[0] is r else (r, _admitted(r))
    memo.clear()
    memo.update(out)
    return tuple(a for _, a in out.values())


def _admitted(r: ModelRecord) -> quotas.Admitted:
    return quotas.Admitted(name=(r.user_id, r.suffix), source_file=r.source_file,
                           order=(r.created_at, r.model_key), spec=r.spec,
                           running=r.enabled and r.state not in (State.STOPPED, State.DELETING))


def _outcome(result: TickResult, snapshot: Snapshot, observed: Observed, *,
             failed_calls: int) -> TickOutcome:
    """How the tick ended (:data:`~servesync.converge.ports.TickOutcome`)."""
    if snapshot.error or not observed.reachable or failed_calls:
        return "error"
    if result.converged:
        return "converged"
    return "degraded" if result.settled else "progressing"


def _submitted(rec: ModelRecord, now: datetime, message: str) -> ModelRecord:
    return rec.with_event(Event.at_time(now, EventKind.SUBMITTED, message,
                                        rec.attempted_revision))


def _gateway_ready(gateway: GatewayRecord, observed: Observed) -> bool:
    """Ray reachable and the gateway up (or absent when it has no model)."""
    status = observed.status(GATEWAY_APP)
    if not observed.reachable:
        return False
    return status is AppStatus.RUNNING if gateway.members else status is AppStatus.MISSING
