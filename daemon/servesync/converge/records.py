"""Recorded-state types: what servesync applied, and what it saw of Ray.

Frozen data with JSON round-trips (never pickle). ``ModelRecord`` and
``GatewayRecord`` are persisted by :mod:`servesync.state.store`; ``Observed`` is
what :mod:`servesync.rayserve.applier` reads from Ray each tick. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from servesync.desired.specs import base_suffix, version_of
from servesync.redaction import known_secrets

MAX_EVENTS = 50


class State(StrEnum):
    QUEUED = "QUEUED"  # admitted, not yet submitted (e.g. backing off after a transient error)
    DEPLOYING = "DEPLOYING"  # submitted to Ray, not yet RUNNING
    RUNNING = "RUNNING"
    # RUNNING, but fewer replicas running than asked or Ray reports it UNHEALTHY
    # (e.g. a replica died and Ray is replacing it); still served, back to RUNNING when healthy
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"  # DEPLOY_FAILED, or not RUNNING by the deadline; waits for a new spec
    DELETING = "DELETING"  # removed from the desired state; application being deleted
    STOPPED = "STOPPED"  # enabled: false; declared, no application


class EventKind(StrEnum):
    ADMITTED = "ADMITTED"
    DEPLOY_REQUESTED = "DEPLOY_REQUESTED"
    SUBMITTED = "SUBMITTED"
    ROUTING = "ROUTING"  # application RUNNING, waiting for the gateway to route it
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"
    RETRY = "RETRY"
    SCALED = "SCALED"
    DRIFT = "DRIFT"
    STOP_REQUESTED = "STOP_REQUESTED"
    STOPPED = "STOPPED"
    DELETE_REQUESTED = "DELETE_REQUESTED"


def stamp(now: datetime) -> str:
    """``now`` as records keep times: ISO 8601 to the second."""
    return now.isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Event:
    at: str  # ISO 8601 UTC
    kind: EventKind
    message: str = ""
    revision: str | None = None

    @classmethod
    def at_time(cls, now: datetime, kind: EventKind, message: str = "",
                revision: str | None = None) -> Event:
        return cls(at=stamp(now), kind=kind, message=message, revision=revision)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": str(self.kind), "message": self.message,
                "revision": self.revision}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(at=d["at"], kind=EventKind(d["kind"]), message=d.get("message", ""),
                   revision=d.get("revision"))


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """Everything servesync remembers about one model (one (user, suffix) pair)."""

    model_key: str  # svc-<user>-<YYYYMMDD>-<HHMMSS>-<4 hex>; the status file name
    user_id: str
    suffix: str
    prefix: str  # <user_id>-<YYYYMMDDHHMM>, fixed at first admission
    app_name: str  # the Serve application's name (== model_key)
    spec_hash: str  # hash of `spec` (the last spec submitted or being submitted)
    spec: dict[str, Any]  # ModelSpec.to_json() of that spec
    state: State
    enabled: bool = True
    source_file: str = ""
    applied_revision: str | None = None  # revision whose spec reached RUNNING
    attempted_revision: str | None = None  # revision of the last submission
    applied_hash: str | None = None  # spec hash that reached RUNNING (None: never ran)
    error_summary: str | None = None
    created_at: str = ""
    updated_at: str = ""
    submitted_at: str | None = None  # when Ray accepted the current spec (deadline base);
    # None while DEPLOYING means the submission was never confirmed: resubmit
    serving_hash: str = ""  # the cluster serving config the spec was deployed with
    retry_at: str | None = None  # QUEUED after a transient error: not before this
    attempts: int = 0  # consecutive transient failures (backoff exponent)
    unhealthy_since: str | None = None  # RUNNING but short of replicas since (the grace's base)
    routed_aliases: tuple[str, ...] = ()  # alias names (<user>-<alias>) the gateway surely
    # routes to this model now: set by the planner once the gateway with them has settled
    events: tuple[Event, ...] = ()
    # The schedule's truth (converge/scheduling.py), kept here so a restart neither
    # loses a stop nor stops early: when the stop_after clock started (the current
    # spec became RUNNING, or its schedule changed while running; None: not running)
    running_since: str | None = None
    schedule_stop: str | None = None  # stopped by the schedule: "stop_after" or "active_hours"
    routed_weight: int | None = None  # a version's share (0-100) of its model's requests
    # that the settled gateway gives it now; None: not routed, or not a version
    # A cache of scheduling.boundary: (when worked out, the schedule's next stop or
    # start), kept while it holds; never stored (a changed record is a new one)
    schedule_memo: tuple[datetime, datetime | None] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def public_id(self) -> str:
        """The model name clients send: ``<user_id>-<YYYYMMDDHHMM>-<model_id>``
        (a version's too: its suffix without ``@<version>``)."""
        return f"{self.prefix}-{self.model_id}"

    @property
    def model_id(self) -> str:
        """The ``model_id`` as written (a version's suffix without ``@<version>``)."""
        return base_suffix(self.suffix)

    @property
    def version(self) -> str | None:
        """The version's name, for a record of one of a model's ``versions``."""
        return version_of(self.suffix)

    @property
    def weight(self) -> int:
        """The weight its spec asks (0 when not a version)."""
        asked = self.spec.get("weight")
        return asked if isinstance(asked, int) else 0

    @property
    def alias_names(self) -> tuple[str, ...]:
        """The names clients may call the model by besides its public id,
        ``<user_id>-<alias>``, for the aliases of the recorded spec (its last
        good one while its file is held)."""
        aliases = self.spec.get("aliases") or ()
        return tuple(f"{self.user_id}-{a}" for a in aliases if isinstance(a, str))

    @property
    def asked_replicas(self) -> int:
        """Replicas the spec asks to keep running: ``num_replicas``, or under
        autoscaling its ``min_replicas``."""
        declared = self.spec.get("num_replicas")
        if isinstance(declared, int):
            return declared
        auto = self.spec.get("autoscaling") or {}
        return int(auto.get("min_replicas", 0))

    def with_event(self, event: Event, **changes: Any) -> ModelRecord:
        events = (*self.events, event)[-MAX_EVENTS:]
        return replace(self, events=events, updated_at=event.at, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_key": self.model_key, "user_id": self.user_id, "suffix": self.suffix,
            "prefix": self.prefix, "app_name": self.app_name, "spec_hash": self.spec_hash,
            "spec": self.spec, "state": str(self.state), "enabled": self.enabled,
            "source_file": self.source_file, "applied_revision": self.applied_revision,
            "attempted_revision": self.attempted_revision, "applied_hash": self.applied_hash,
            "error_summary": self.error_summary, "created_at": self.created_at,
            "updated_at": self.updated_at, "submitted_at": self.submitted_at,
            "retry_at": self.retry_at, "attempts": self.attempts,
            "serving_hash": self.serving_hash, "unhealthy_since": self.unhealthy_since,
            "routed_aliases": list(self.routed_aliases),
            "events": [e.to_json() for e in self.events],
            # absent before schedules: a state file without them reads as before
            **({"running_since": self.running_since} if self.running_since else {}),
            **({"schedule_stop": self.schedule_stop} if self.schedule_stop else {}),
            # only for a version: a plain model's record reads as before versions
            **({"routed_weight": self.routed_weight} if self.routed_weight is not None else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelRecord:
        d = dict(d)
        d["state"] = State(d["state"])
        d["events"] = tuple(Event.from_json(e) for e in d.get("events", ()))
        d["routed_aliases"] = tuple(d.get("routed_aliases", ()))  # absent before aliases
        return cls(**d)


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """What the OpenAI gateway application was last deployed with."""

    members: tuple[tuple[str, str], ...] = ()  # sorted (public model id, app_name)
    deployed_at: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()  # sorted (alias name, public model id of a member)
    weights: tuple[tuple[str, str, int], ...] = ()  # sorted (app_name, version, weight in
    # effect) of the members that are versions of a model
    lora: tuple[tuple[str, str], ...] = ()  # sorted (public model id, LoRA path) of the
    # routed models with adapters

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"members": [list(m) for m in self.members],
                               "deployed_at": self.deployed_at}
        if self.aliases:  # a state file without aliases reads as before them
            out["aliases"] = [list(a) for a in self.aliases]
        if self.weights:  # nor one without versions
            out["weights"] = [list(w) for w in self.weights]
        if self.lora:  # nor one without LoRA paths
            out["lora"] = [list(p) for p in self.lora]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GatewayRecord:
        return cls(members=tuple((m[0], m[1]) for m in d.get("members", ())),
                   deployed_at=d.get("deployed_at"),
                   aliases=tuple((a[0], a[1]) for a in d.get("aliases", ())),
                   weights=tuple((w[0], w[1], int(w[2])) for w in d.get("weights", ())),
                   lora=tuple((p[0], p[1]) for p in d.get("lora", ())))


def env_values(rec: ModelRecord) -> list[object]:
    """The env values of a recorded spec (kept in the state file, never published)."""
    env = rec.spec.get("env")
    return list(env.values()) if isinstance(env, Mapping) else []


def own_secrets(recs: Iterable[ModelRecord], operator: Iterable[object]) -> tuple[str, ...]:
    """What text about these records is scrubbed of: their env values and the
    operator's secrets (``operator``: ``replica_env``'s values), nobody else's.
    One rule for Ray's messages, the status files and notification bodies."""
    return known_secrets([*operator, *(v for rec in recs for v in env_values(rec))])
