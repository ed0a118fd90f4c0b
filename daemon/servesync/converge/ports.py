"""What the reconciler needs from the world, as typed protocols.

The reconciler (:mod:`servesync.converge.reconciling`) acts only through
these seams, so that ``converge`` imports nothing that acts (the
import contracts in ``.importlinter``): :mod:`servesync.wiring` plugs in
the real ones (``rayserve.applier.RayApplier``, ``state.store.Store``,
``status.publishing.StatusFiles``, ``status.notifying.Notifier``); unit tests plug in fakes from
``tests/support``. Protocols, the one value a batch deploy takes, and the one
record a tick hands the publisher for the operators' metrics
(:class:`TickReport`); no code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from servesync.converge.observed import Observed
from servesync.converge.records import GatewayRecord, ModelRecord, State
from servesync.desired.specs import DesiredState, ModelSpec
from servesync.errors import PermanentError, TransientError


@dataclass(frozen=True, slots=True)
class ModelDeploy:
    """One model of a batch deploy: its spec, its application, its public id."""

    spec: ModelSpec
    app_name: str
    public_id: str


class Applier(Protocol):
    """Ray Serve: observe it, and submit or delete applications without waiting.

    Raises :class:`~servesync.errors.TransientError` (retry with backoff) or
    :class:`~servesync.errors.PermanentError` (wait for a new spec)."""

    def observe(self) -> Observed: ...
    def deploy_models(
        self, batch: Sequence[ModelDeploy]
    ) -> Mapping[str, TransientError | PermanentError]:
        """Submit every model of ``batch`` as its own application, in one Ray
        call (``serve.run_many``), without waiting for them to run. Returns the
        models that failed, by app name, each with its own error (a spec Ray
        refuses to build fails only that model); the others were accepted.
        Raises (Transient/Permanent) only when nothing could be submitted."""
        ...

    def deploy_gateway(self, members: Sequence[tuple[str, str]], *,
                       aliases: Sequence[tuple[str, str]] = (),
                       weights: Sequence[tuple[str, str, int]] = (),
                       lora: Sequence[tuple[str, str]] = ()) -> None:
        """Route exactly ``(public model id, app name)`` ``members`` and
        ``(alias name, public model id)`` ``aliases`` (each to a member), in
        place; a public id with several members (versions) split by ``(app
        name, version, weight)`` ``weights``; ``(public model id, LoRA path)``
        ``lora`` for the listing of adapters; no members deletes the gateway."""
        ...

    def delete_app(self, app_name: str) -> None: ...

    def serving_hash(self) -> str:
        """Fingerprint of the cluster serving config that reaches every replica:
        a model deployed under another one is updated."""
        ...

    def shutdown(self) -> None:
        """Disconnect; never undeploys anything on an external cluster."""
        ...


class RecordStore(Protocol):
    """What servesync applied, kept across restarts (each write durable at once;
    the writes inside ``batch()`` durable together when it ends)."""

    def models(self) -> dict[str, ModelRecord]: ...
    def put(self, record: ModelRecord) -> None: ...
    def put_many(self, records: Iterable[ModelRecord]) -> None: ...
    def delete(self, model_key: str) -> None: ...
    def delete_many(self, model_keys: Iterable[str]) -> None: ...
    def batch(self) -> AbstractContextManager[None]: ...
    def gateway(self) -> GatewayRecord: ...
    def set_gateway(self, rec: GatewayRecord) -> None: ...
    def meta(self) -> dict[str, Any]: ...
    def set_meta(self, **kv: Any) -> None: ...


TickOutcome = Literal["converged", "progressing", "degraded", "error"]
"""How a tick ended, for the metrics: ``error`` (the source or Ray could not
be read, or a Ray call failed), ``progressing`` (a deploy, deletion, retry or
the gateway still in flight), ``degraded`` (settled, but a model FAILED or
DEGRADED, or a file invalid), ``converged``."""


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick did and saw, for :meth:`Publisher.publish_metrics`."""

    tick: int
    outcome: TickOutcome
    duration_s: float
    records: Mapping[str, ModelRecord]
    desired: DesiredState
    observed: Observed
    revision: str | None
    now: datetime


class Publisher(Protocol):
    """The status files users read, rewritten at the end of every tick."""

    def publish(
        self,
        *,
        records: Mapping[str, ModelRecord],
        desired: DesiredState | None,
        observed: Observed,
        tick: int,
        revision: str | None,
        source_error: str | None,
        now: datetime,
        committed_at: datetime | None = None,
    ) -> None:
        """``revision`` and ``committed_at``: the desired state's commit and its
        committer time (None for a plain folder)."""
        ...

    def publish_metrics(self, report: TickReport) -> None:
        """The operators' metrics of the tick that just ended (``metrics.prom``)."""
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    """A model's state changed in one tick: ``old`` (None: it was not recorded)
    to ``record.state``. What notifications are made of."""

    record: ModelRecord
    old: State | None
    tick: int
    revision: str | None


class Notifier(Protocol):
    """The webhook notifications: handed the stored records after each tick;
    derives the transitions from the last state it notified per model, queues
    them durably and returns at once (delivery never blocks a tick)."""

    def observe(self, records: Mapping[str, ModelRecord], tick: int,
                revision: str | None) -> None: ...
