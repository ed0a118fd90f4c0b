"""The status document of a model with versions (issue 11): one file, one index line.

Each version is a record of its own (``<stem>.<version>``), but users look at
the model: :func:`versioned_status` folds the versions' records into one
``models/<stem>.json`` in the ``status-model`` shape, with ``versions``
listing each version's state, replicas, weights asked and in effect, Serve
application and error. The model's ``state`` (:func:`model_state`):

* ``RUNNING``: a version serves and every version asking a weight > 0 is RUNNING;
* ``DEGRADED``: a version serves, but one asking a weight > 0 does not (its
  share goes to the others) or is DEGRADED itself;
* none serves: ``STOPPED`` when all are, ``DELETING`` when all are going,
  ``QUEUED``/``DEPLOYING`` while one is on its way, else ``FAILED``;
* ``UNKNOWN`` while Ray is unreachable and a version was serving.

When every version that serves asks weight 0, the model takes no unpinned
request, and ``error_summary`` says so (:data:`NO_UNPINNED`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from servesync.converge import naming
from servesync.converge.observed import Observed
from servesync.converge.records import MAX_EVENTS, ModelRecord, State

SERVING = (State.RUNNING, State.DEGRADED)
NO_UNPINNED = ("no unpinned requests: every version that serves asks weight 0 "
               "(the gateway answers 503; pin one with the X-Servesync-Version header)")


def stem(model_key: str) -> str | None:
    """The model's key for a version's record key (``<stem>.<version>``), else None."""
    return naming.key_stem(model_key)


def model_state(recs: Sequence[ModelRecord], *, reachable: bool) -> str:
    """The model's state from its versions' (module docstring)."""
    states = [r.state for r in recs]
    serving = [r for r in recs if r.state in SERVING]
    if serving and not reachable:
        return "UNKNOWN"
    if serving:
        weighted = [r for r in recs if r.weight > 0]
        healthy = all(r.state is State.RUNNING for r in weighted)
        return str(State.RUNNING if healthy else State.DEGRADED)
    for state in (State.STOPPED, State.DELETING):
        if all(s is state for s in states):
            return str(state)
    if all(s in (State.STOPPED, State.DELETING) for s in states):
        return str(State.DELETING)
    if all(s is State.QUEUED for s in states):
        return str(State.QUEUED)
    if any(s in (State.QUEUED, State.DEPLOYING) for s in states):
        return str(State.DEPLOYING)
    return str(State.FAILED)


def versioned_status(recs: Sequence[ModelRecord], *, observed: Observed,
                     one: Callable[[ModelRecord], dict[str, Any]],
                     old: ModelRecord | None = None) -> dict[str, Any]:
    """The model's status document from its versions' records, sorted by
    version; ``one`` builds a record's own document (``model_status``).
    ``old``: the model's record from before it had versions, same key, while
    it is still recorded: when it serves and no version does yet, the
    document's state and endpoint are its own (it is what clients reach)."""
    recs = sorted(recs, key=lambda r: r.version or "")
    docs = [one(r) for r in recs]
    first = docs[0]
    key = stem(recs[0].model_key) or recs[0].model_key
    endpoints = [d["endpoint"] for d in docs if d["endpoint"] is not None]
    state = model_state(recs, reachable=observed.reachable)
    errors = [f"{r.version}: {r.error_summary}" for r in recs if r.error_summary]
    if old is not None and old.state in SERVING and not any(r.state in SERVING for r in recs):
        old_doc = one(old)
        state = old_doc["state"]
        endpoints = [old_doc["endpoint"]] if old_doc["endpoint"] is not None else endpoints
        errors.append("changing to versions: the model without versions serves until "
                      "a version runs")
    serving = [r for r in recs if r.state in SERVING]
    if serving and all(r.weight <= 0 for r in serving):
        errors.append(NO_UNPINNED)
    return {
        **first,
        "model_key": key,
        "model_id_suffix": recs[0].model_id,
        "model_source": "",
        "resolved_source": None,
        "num_replicas": sum(d["num_replicas"] for d in docs),
        "total_gpus": sum(d["total_gpus"] for d in docs),
        "state": state,
        "enabled": any(r.enabled for r in recs),
        "endpoint": {**endpoints[0], "aliases": sorted({a for e in endpoints
                                                        for a in e["aliases"]})}
        if endpoints else None,
        "error_summary": "; ".join(errors) or None,
        "created_at": min(r.created_at for r in recs),
        "updated_at": max(r.updated_at for r in recs),
        "spec_hash": ",".join(r.spec_hash for r in recs),
        "applied_hash": None,
        "applied_revision": _same(r.applied_revision for r in recs),
        "attempted_revision": _same(r.attempted_revision for r in recs),
        "serve_status": {"app_name": key, "app_status": None, "message": "",
                         "running_replicas": sum(d["serve_status"]["running_replicas"]
                                                 for d in docs)},
        "versions": [_version(r, d) for r, d in zip(recs, docs, strict=True)],
        "events": sorted(({**e, "message": f"[{r.version}] {e['message']}"}
                          for r, d in zip(recs, docs, strict=True) for e in d["events"]),
                         key=lambda e: e["at"])[-MAX_EVENTS:],
    }


def _same(values: Any) -> str | None:
    found = set(values)
    return next(iter(found)) if len(found) == 1 else None


def _version(rec: ModelRecord, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": rec.version,
        "state": doc["state"],
        "replicas": {"running": doc["serve_status"]["running_replicas"],
                     "asked": rec.asked_replicas},
        "weight_asked": rec.weight,
        "weight_in_effect": rec.routed_weight if rec.routed_weight is not None else 0,
        "application": rec.app_name,
        "app_status": doc["serve_status"]["app_status"],
        "model_source": doc["model_source"],
        "resolved_source": doc["resolved_source"],
        "spec_hash": rec.spec_hash,
        "applied_hash": rec.applied_hash,
        "error": rec.error_summary,
    }
