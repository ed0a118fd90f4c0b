"""The status files: read-only JSON for users and tools, written at the end of a tick.

``publish`` writes into ``status_dir``:

* ``index.json``: the tick, the source revision and error, the OpenAI base
  URL, one summary per model and the desired-state files' validation errors
  (schema ``status-index``);
* ``models/<model_key>.json``: one model in the MVP ServingModel shape plus
  what servesync knows of it (schema ``status-model``).

Every file goes through :func:`servesync.atomicio.atomic_write`, so a reader
never sees half a file; model files are rewritten only when their content
changed, and files of models no longer recorded are removed (after the index
stops listing them). Secrets never reach these files: env values are left
out (names only), secret-looking engine_kwargs are redacted, and every string
written (Ray's messages, errors, events included) goes through
:func:`servesync.redaction.scrub` with the recorded env values (and the
operator's ``serving.replica_env``) as known secrets: Ray's and pydantic's
errors may quote a deployment's config. Files are 0644: users read them.

Called by the reconciler through :class:`StatusFiles` (its ``Publisher``).
Side effects: files under ``status_dir``. Reading them back is
:mod:`servesync.status.reading`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import servesync
from servesync.config import ServingConfig
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppObservation, Observed
from servesync.converge.records import ModelRecord, State
from servesync.desired.specs import DesiredState
from servesync.errors import Issue
from servesync.redaction import REDACTED, SECRET_KEY, SECRET_VALUE, known_secrets, scrub
from servesync.state.atomicio import atomic_write, remove_temps, write_if_changed

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
MODELS_DIR = "models"
STATUS_FILE_MODE = 0o644
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class StatusFiles:
    """The :class:`~servesync.converge.ports.Publisher` the reconciler writes through."""

    def __init__(self, status_dir: Path, serving: ServingConfig) -> None:
        self.status_dir = status_dir
        self.serving = serving

    def publish(self, *, records: Mapping[str, ModelRecord], desired: DesiredState | None,
                observed: Observed, tick: int, revision: str | None, source_error: str | None,
                now: datetime) -> None:
        publish(self.status_dir, records=records, desired=desired, observed=observed,
                tick=tick, revision=revision, source_error=source_error,
                serving=self.serving, now=now)


def publish(
    status_dir: Path,
    *,
    records: Mapping[str, ModelRecord],
    desired: DesiredState | None,
    observed: Observed,
    tick: int,
    revision: str | None,
    source_error: str | None,
    serving: ServingConfig,
    now: datetime,
) -> None:
    """Write the status files of this tick (see the module docstring)."""
    models_dir = Path(status_dir) / MODELS_DIR
    models_dir.mkdir(parents=True, exist_ok=True)
    remove_temps(Path(status_dir))
    remove_temps(models_dir)
    known = known_secrets([*serving.replica_env.values(),
                           *(v for rec in records.values() for v in env_values(rec))])
    docs = {}
    for key, rec in sorted(records.items()):
        if not _SAFE_KEY.match(key):
            log.error("not publishing model %r: unsafe as a file name", key)
            continue
        docs[key] = scrub_strings(model_status(rec, observed=observed, base_url=serving.base_url),
                                  known)
        write_if_changed(models_dir / f"{key}.json", dump(docs[key]), mode=STATUS_FILE_MODE)
    index = {
        "generated_at": iso(now),
        "servesync_version": servesync.__version__,
        "tick": tick,
        "revision": revision,
        "source_error": source_error,
        "ray_reachable": observed.reachable,
        "openai_base_url": serving.base_url,
        "models": [summary(doc) for doc in docs.values()],
        "errors": [issue_json(i) for i in desired.issues()] if desired else [],
        "unmanaged_apps": unmanaged_apps(records, observed),
    }
    atomic_write(Path(status_dir) / INDEX_FILE, dump(scrub_strings(index, known)),
                 mode=STATUS_FILE_MODE)
    for path in models_dir.glob("*.json"):
        if path.stem not in docs:
            path.unlink(missing_ok=True)


def unmanaged_apps(records: Mapping[str, ModelRecord], observed: Observed) -> list[str]:
    """Serve applications that are neither a recorded model nor the gateway:
    deployed by hand, or left over from a lost state file. Reported, never
    touched (servesync only deletes what it recorded)."""
    ours = {rec.app_name for rec in records.values()} | {GATEWAY_APP}
    return sorted(set(observed.apps) - ours)


def model_status(rec: ModelRecord, *, observed: Observed, base_url: str) -> dict[str, Any]:
    """One model's status document (schema ``status-model``)."""
    spec = rec.spec
    gpus = int(spec.get("gpus_per_replica") or 0)
    replicas = _replicas(rec, observed)
    obs = observed.apps.get(rec.app_name)
    return {
        "model_key": rec.model_key,
        "user_id": rec.user_id,
        "model_id": rec.public_id,
        "model_id_suffix": rec.suffix,
        "model_id_prefix": rec.prefix,
        "model_source": spec.get("model_source_written", spec.get("model_source", "")),
        "resolved_source": spec.get("model_source"),
        "num_replicas": replicas,
        "gpus_per_replica": gpus,
        "cpus_per_replica": spec.get("cpus_per_replica"),
        "total_gpus": replicas * gpus,
        "state": str(rec.state),
        "enabled": rec.enabled,
        "endpoint": ({"openai_base_url": base_url, "model": rec.public_id}
                     if _callable(rec, obs) else None),
        "error_summary": rec.error_summary,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "source_file": rec.source_file,
        "spec_hash": rec.spec_hash,
        "applied_hash": rec.applied_hash,
        "applied_revision": rec.applied_revision,
        "attempted_revision": rec.attempted_revision,
        "serve_status": {
            "app_name": rec.app_name,
            "app_status": str(observed.status(rec.app_name)) if observed.reachable else None,
            "message": obs.message if obs else "",
            "running_replicas": obs.running_replicas if obs else 0,
        },
        "autoscaling": spec.get("autoscaling"),
        "engine_kwargs": redact(spec.get("engine_kwargs") or {}),
        "env_names": sorted(spec.get("env") or {}),
        "events": [e.to_json() for e in rec.events],
    }


def _callable(rec: ModelRecord, obs: AppObservation | None) -> bool:
    """Can a client call the model through the gateway? RUNNING (recorded only
    once the gateway routes it), or an update of a model that ran, while its
    last good version's replicas still serve."""
    if rec.state is State.RUNNING:
        return True
    return (rec.state in (State.DEPLOYING, State.QUEUED, State.FAILED) and rec.enabled
            and rec.applied_hash is not None and obs is not None and obs.running_replicas > 0)


def _replicas(rec: ModelRecord, observed: Observed) -> int:
    """Declared replicas; under autoscaling, the running ones (else the minimum)."""
    declared = rec.spec.get("num_replicas")
    if isinstance(declared, int):
        return declared
    obs = observed.apps.get(rec.app_name)
    if obs is not None and observed.reachable:
        return obs.running_replicas
    auto = rec.spec.get("autoscaling") or {}
    return int(auto.get("min_replicas", 0))


def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The index's line for one model, taken from its status document."""
    keys = ("model_key", "model_id", "user_id", "state", "num_replicas", "total_gpus",
            "error_summary", "source_file", "updated_at", "applied_revision",
            "attempted_revision")
    return {k: doc[k] for k in keys}


def issue_json(issue: Issue) -> dict[str, Any]:
    return {"path": issue.file, **issue.to_json()}


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys' values and secret-shaped
    strings replaced by ``<redacted>`` (a string that merely contains one, or
    a URL with credentials, is scrubbed)."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if SECRET_KEY.search(str(k)) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return REDACTED if SECRET_VALUE.match(value) else scrub(value)
    return value


def env_values(rec: ModelRecord) -> list[object]:
    """The env values of a recorded spec (kept in the state file, never published)."""
    env = rec.spec.get("env")
    return list(env.values()) if isinstance(env, Mapping) else []


def scrub_strings(value: Any, known: Iterable[str] = ()) -> Any:
    """A copy of a JSON document with every string (keys too) scrubbed."""
    known = tuple(known)
    if isinstance(value, Mapping):
        return {scrub(str(k), known): scrub_strings(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_strings(v, known) for v in value]
    if isinstance(value, str):
        return scrub(value, known)
    return value


def iso(now: datetime) -> str:
    """ISO 8601 UTC with a ``Z``; a naive datetime is taken as UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dump(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
