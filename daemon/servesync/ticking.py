"""One reconcile tick: read, validate, observe, plan, apply, record, publish.

Called by ``servesync once`` / ``plan`` and by the daemon loop (one tick at a
time). The only place that wires the pure planner to its side effects: the
applier (Ray), the store (tinydb) and the status files. Each step has its own
error handling so that one failure never stops the loop or loses state:

* a transient Ray error on a deploy → the model is QUEUED with a backoff;
* a permanent one → FAILED with its message, waiting for a new spec;
* Ray unreachable → nothing is planned, status says so, the next tick retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from servesync import actions as act
from servesync import llmconfigs, planning, publishing, validating
from servesync.config import Config
from servesync.errors import PermanentError, TransientError
from servesync.naming import GATEWAY_APP
from servesync.records import (
    AppStatus,
    Event,
    EventKind,
    GatewayRecord,
    ModelRecord,
    Observed,
    State,
)
from servesync.sources import Snapshot
from servesync.specs import DesiredState, ModelSpec
from servesync.store import Store

log = logging.getLogger("servesync.tick")

_PENDING = (State.QUEUED, State.DEPLOYING, State.DELETING)


class Applier(Protocol):
    """What a tick needs from Ray (implemented by applying.RayApplier)."""

    def observe(self) -> Observed: ...
    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None: ...
    def deploy_gateway(self, members: Sequence[tuple[str, str]]) -> None: ...
    def delete_app(self, app_name: str) -> None: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TickResult:
    tick: int
    revision: str | None
    actions: tuple[act.Action, ...]
    settled: bool  # nothing in flight: no deploy, deletion or retry pending
    converged: bool  # settled, nothing failed, every file valid, Ray reachable
    errors: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:  # the daemon's Ticker protocol: truthy when converged
        return self.converged


class Reconciler:
    """Holds the long-lived parts (store, applier, clock) and runs ticks."""

    def __init__(self, config: Config, *, store: Store, applier: Applier,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.store = store
        self.applier = applier
        self.clock = clock
        self.ticks = int(store.meta().get("tick", 0))  # persisted only with real changes

    def read(self, snapshot: Snapshot) -> tuple[DesiredState, Observed]:
        desired = validating.validate_tree(snapshot.root, self.config,
                                           revision=snapshot.revision)
        try:
            observed = self.applier.observe()
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
            serving_hash=llmconfigs.serving_hash(self.config.serving),
        )

    def tick(self, snapshot: Snapshot) -> TickResult:
        started = time.monotonic()
        desired, observed = self.read(snapshot)
        actions = self.plan(desired, observed)
        errors = [i.render() for i in desired.issues()]
        self.ticks += 1
        tick = self.ticks
        # Each action is recorded as soon as it is carried out (a crash loses at
        # most the one in flight); an idle tick writes nothing.
        for action in actions:
            log.info("%s", act.describe(action))
            error = self._execute(action)
            if error:
                errors.append(error)
        if actions:
            self.store.set_meta(tick=tick, revision=snapshot.revision)
        recorded = self.store.models()
        self._publish(recorded, desired, observed, tick, snapshot)
        gateway_ok = _gateway_ready(self.store.gateway(), observed)
        result = _result(tick, snapshot, actions, recorded, gateway_ok, desired, errors)
        log.debug("tick %d done in %.3f s: %d actions, converged=%s", tick,
                  time.monotonic() - started, len(actions), result.converged)
        return result

    def _execute(self, action: act.Action) -> str | None:
        """Carry out one action; returns an error line, or None."""
        now = self.clock()
        try:
            match action:
                case act.Deploy(record=rec, spec=spec):
                    # Write ahead: a crash between the two leaves a DEPLOYING record
                    # that the planner resubmits, never an application with no record.
                    self.store.put(rec)
                    self.applier.deploy_model(spec, app_name=rec.app_name,
                                              public_id=rec.public_id)
                    accepted = replace(rec, submitted_at=now.isoformat(timespec="seconds"))
                    self.store.put(_submitted(accepted, now, "accepted by Ray Serve"))
                case act.DeleteApp(record=rec):
                    self.applier.delete_app(rec.app_name)
                    self.store.put(_submitted(rec, now, "application deletion accepted"))
                case act.UpdateGateway(members=members):
                    self.applier.deploy_gateway(members)
                    self.store.set_gateway(GatewayRecord(
                        members=members, deployed_at=now.isoformat(timespec="seconds")))
                case act.RecordOnly(record=rec):
                    self.store.put(rec)
                case act.Forget(model_key=key):
                    self.store.delete(key)
        except TransientError as e:
            return self._failed(action, str(e), now, transient=True)
        except PermanentError as e:
            return self._failed(action, str(e), now, transient=False)
        return None

    def _failed(self, action: act.Action, error: str, now: datetime, *, transient: bool) -> str:
        log.warning("%s failed (%s): %s", act.describe(action),
                    "transient" if transient else "permanent", error)
        if isinstance(action, act.Deploy):
            after = planning.after_transient if transient else planning.after_permanent
            self.store.put(after(action.record, error, now))
        return f"{action.kind}: {error}"

    def _publish(self, recorded: dict[str, ModelRecord], desired: DesiredState,
                 observed: Observed, tick: int, snapshot: Snapshot) -> None:
        source_error = snapshot.error
        if not observed.reachable:
            ray_error = "Ray unreachable" + (f": {observed.error}" if observed.error else "")
            source_error = f"{source_error}; {ray_error}" if source_error else ray_error
        publishing.publish(
            Path(self.config.status_dir), records=recorded, desired=desired, observed=observed,
            tick=tick, revision=snapshot.revision, source_error=source_error,
            serving=self.config.serving, now=self.clock(),
        )


def _submitted(rec: ModelRecord, now: datetime, message: str) -> ModelRecord:
    event = Event(at=now.isoformat(timespec="seconds"), kind=EventKind.SUBMITTED,
                  message=message, revision=rec.attempted_revision)
    return rec.with_event(event)


def _gateway_ready(gateway: GatewayRecord, observed: Observed) -> bool:
    """Ray reachable and the gateway up (or absent when it has no model)."""
    status = observed.status(GATEWAY_APP)
    if not observed.reachable:
        return False
    return status is AppStatus.RUNNING if gateway.members else status is AppStatus.MISSING


def _result(tick: int, snapshot: Snapshot, actions: tuple[act.Action, ...],
            recorded: dict[str, ModelRecord], gateway_ok: bool, desired: DesiredState,
            errors: list[str]) -> TickResult:
    mutated = any(isinstance(a, act.MUTATING) for a in actions)
    settled = not mutated and gateway_ok and not any(
        r.state in _PENDING for r in recorded.values())
    failed = any(r.state is State.FAILED for r in recorded.values())
    converged = settled and not failed and desired.ok and snapshot.error is None
    return TickResult(tick, snapshot.revision, actions, settled, converged, tuple(errors))
