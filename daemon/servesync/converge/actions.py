"""The typed actions a plan is made of. Pure data.

Every action carries the record to store once it has been carried out, so
that all decisions (state, events, timestamps) are made by the pure planner
and the executor only calls Ray and persists. ``kind`` completes the phrase
"model X has been ..." / "the gateway has been ...".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from servesync.converge.records import ModelRecord
from servesync.desired.specs import ModelSpec


class Kind(StrEnum):
    CREATE = "create"  # first deploy of a newly admitted model
    UPDATE = "update"  # spec changed (source, engine kwargs, env, resources)
    SCALE = "scale"  # only replicas / autoscaling changed
    RECONFIGURE = "reconfigure"  # only rollout options changed: Serve restarts no replica
    START = "start"  # enabled again after a stop
    RETRY = "retry"  # a transient error's backoff is over
    REDEPLOY = "redeploy"  # drift: Ray lost the application
    STOP = "stop"  # enabled: false
    DELETE = "delete"  # removed from the desired state
    GATEWAY = "gateway"  # the OpenAI ingress's set of models changed
    RECORD = "record"  # bookkeeping only (observed RUNNING/FAILED, admitted stopped, moved file)
    FORGET = "forget"  # application gone: drop the record


@dataclass(frozen=True, slots=True)
class Deploy:
    """Submit ``spec`` as the model's own Serve application (non-blocking)."""

    kind: Kind
    record: ModelRecord  # state DEPLOYING, to store after a successful submit
    spec: ModelSpec
    reason: str


@dataclass(frozen=True, slots=True)
class DeleteApp:
    """Delete the model's application (it has already left the gateway)."""

    kind: Kind  # STOP or DELETE
    record: ModelRecord
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateGateway:
    """Route exactly these (public model id, app name) members, and these
    (alias name, public model id) aliases, each to a member; a public id with
    several members (a model's versions) is split by ``weights``, (app name,
    version, weight in effect) of each; ``lora``, (public model id, LoRA
    path) of each routed model with adapters, is what ``/v1/models`` lists
    them from."""

    members: tuple[tuple[str, str], ...]
    reason: str
    kind: Kind = Kind.GATEWAY
    aliases: tuple[tuple[str, str], ...] = ()
    weights: tuple[tuple[str, str, int], ...] = ()
    lora: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordOnly:
    """Store a new record; no Ray call (observed transitions, admissions)."""

    record: ModelRecord
    reason: str
    kind: Kind = Kind.RECORD


@dataclass(frozen=True, slots=True)
class Forget:
    """The application is gone and the model is no longer desired: drop it."""

    model_key: str
    public_id: str
    reason: str
    kind: Kind = Kind.FORGET


Action = Deploy | DeleteApp | UpdateGateway | RecordOnly | Forget

MUTATING = (Deploy, DeleteApp, UpdateGateway)
"""Action types that call Ray; an idle tick plans none of them."""


def describe(action: Action) -> str:
    """One line for ``servesync plan`` and the logs."""
    match action:
        case Deploy(kind=kind, record=rec, reason=reason):
            return f"{kind:<8} {rec.public_id} ({rec.model_key}): {reason}"
        case DeleteApp(kind=kind, record=rec, reason=reason):
            return f"{kind:<8} {rec.public_id} ({rec.model_key}): {reason}"
        case UpdateGateway(members=members, reason=reason, aliases=aliases):
            names = ", ".join(m[0] for m in members) or "(no models)"
            also = f" + aliases [{', '.join(a[0] for a in aliases)}]" if aliases else ""
            return f"gateway  [{names}]{also}: {reason}"
        case RecordOnly(record=rec, reason=reason):
            return f"record   {rec.public_id} -> {rec.state}: {reason}"
        case Forget(public_id=pid, model_key=key, reason=reason):
            return f"forget   {pid} ({key}): {reason}"
