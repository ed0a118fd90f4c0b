"""The status files: read-only JSON for users and tools, written at the end of a tick.

``publish`` writes into ``status_dir``:

* ``index.json``: the tick, the source revision and error, the OpenAI base
  URL, one summary per model and the desired-state files' validation errors
  (schema ``status-index``);
* ``models/<model_key>.json``: one model in the MVP ServingModel shape plus
  what servesync knows of it (schema ``status-model``); a model with versions
  is one file, ``models/<stem>.json``, with its ``versions``
  (:mod:`servesync.status.versioned`), not a file per version;
* ``metrics.prom`` and ``metrics-models-<n>.prom``: the operators' Prometheus
  metrics (:mod:`servesync.status.metrics`), through
  :meth:`StatusFiles.publish_metrics`;
* ``index.html``, ``models/<model_key>.html`` (and their ``page.css``,
  ``page.js``): the status page for people (:mod:`servesync.status.pages`),
  rendered from the same scrubbed documents: a model's page when its JSON
  document changed, ``index.html`` when a row of it or the cluster's line did.

Every file goes through :func:`servesync.atomicio.atomic_write`, so a reader
never sees half a file; a file is rewritten only when its content changed
(``index.json``: anything but ``generated_at`` and ``tick``, which say when
and by which tick it was last written), and files of models no longer
recorded are removed (after the index stops listing them). :class:`StatusFiles`
remembers what it wrote (a :class:`Memo`): a model whose record and
observation are unchanged is not even rebuilt, and no file is read back after
the first tick, so an idle tick writes nothing and costs little. Model files
and ``index.json`` are not fsynced (1,000 fsyncs made a first tick take
seconds; the index is 0.3 MB at 1,000 models): a kill -9 still leaves old or
new, and what a power cut damages the first tick after the start rewrites
(it compares every model file once and always writes the index).

Secrets never reach these files: env values are left out (names only),
secret-looking engine_kwargs are redacted, and every string value written
(Ray's messages, errors, events included) goes through
:func:`servesync.redaction.scrub`: Ray's and pydantic's errors may quote a
deployment's config. A model's document is scrubbed of its own records' env
values and the operator's ``serving.replica_env`` values, never of another
tenant's (that would let one tenant blank another's fields, and tell whether
a text equals another tenant's env value); the index's own fields (errors,
source error, unmanaged apps) of ``replica_env``'s. Keys are never rewritten:
they are the schemas' fields, or a tenant's own label and engine_kwargs names.
Files are 0644: users read them.

Called by the reconciler through :class:`StatusFiles` (its ``Publisher``).
Side effects: files under ``status_dir``. Reading them back is
:mod:`servesync.status.reading`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import servesync
from servesync.config import ServingConfig, SourceConfig
from servesync.converge import scheduling
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppObservation, Observed
from servesync.converge.ports import TickReport
from servesync.converge.records import ModelRecord, State, own_secrets
from servesync.converge.scheduling import iso
from servesync.desired.specs import DesiredState
from servesync.errors import Issue
from servesync.redaction import REDACTED, SECRET_KEY, SECRET_VALUE, known_secrets, scrub
from servesync.state.atomicio import atomic_write, remove_temps, write_if_changed
from servesync.status import versioned
from servesync.status.metrics import Metrics
from servesync.status.pages import Pages, Row, SourceLink, row

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
UNKNOWN_STATE = "UNKNOWN"  # a RUNNING (or DEGRADED) model while Ray is unreachable
MODELS_DIR = "models"
STATUS_FILE_MODE = 0o644
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass
class Memo:
    """What one publisher last wrote, so the next tick rebuilds and writes only
    what changed. Empty (a fresh start): every file is compared with the disk
    once, and leftover temp and stale files are looked for once."""

    inputs: dict[str, tuple[object, ...]] = field(default_factory=dict)  # what a doc came from
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # the index's lines
    lines: dict[str, str] = field(default_factory=dict)  # ... encoded (already scrubbed)
    written: dict[str, bytes] = field(default_factory=dict)  # model key -> file content
    index: dict[str, Any] | None = None  # the last index written, without generated_at/tick
    known: tuple[str, ...] | None = None  # the operator's secrets those docs were scrubbed of
    rows: dict[str, Row] = field(default_factory=dict)  # index.html's rows, each rendered once
    page_rows: list[Row] | None = None  # the rows index.html last showed
    pages: Pages | None = None  # the HTML renderer (its templates loaded once)
    started: bool = False


class StatusFiles:
    """The :class:`~servesync.converge.ports.Publisher` the reconciler writes through."""

    def __init__(self, status_dir: Path, serving: ServingConfig,
                 source: SourceConfig | None = None) -> None:
        """``source``: the config's, for the status page's links into the
        repository's web UI (``source.web_url``; None: no links)."""
        self.status_dir = status_dir
        self.serving = serving
        self._metrics: Metrics | None = None  # built at the first tick's end
        link = SourceLink.of(source) if source is not None else None
        self.memo = Memo(pages=Pages(Path(status_dir), link=link))

    def publish(self, *, records: Mapping[str, ModelRecord], desired: DesiredState | None,
                observed: Observed, tick: int, revision: str | None, source_error: str | None,
                now: datetime, committed_at: datetime | None = None) -> None:
        publish(self.status_dir, records=records, desired=desired, observed=observed,
                tick=tick, revision=revision, source_error=source_error,
                serving=self.serving, now=now, memo=self.memo, committed_at=committed_at)

    def publish_metrics(self, report: TickReport) -> None:
        """Rewrite ``metrics.prom``; a failure to write it is logged, never fatal."""
        if self._metrics is None:
            self._metrics = Metrics(Path(self.status_dir))
        self._metrics.update(report)
        try:
            self._metrics.write()
        except OSError as e:
            log.warning("could not write the metrics files in %s: %s", self.status_dir, e)


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
    memo: Memo | None = None,
    committed_at: datetime | None = None,
) -> None:
    """Write the status files of this tick (see the module docstring); ``memo``:
    what the previous call wrote (None: compare with the disk); ``committed_at``:
    the revision's committer time (None for a plain folder)."""
    memo = Memo() if memo is None else memo
    models_dir = Path(status_dir) / MODELS_DIR
    models_dir.mkdir(parents=True, exist_ok=True)
    if not memo.started:
        remove_temps(Path(status_dir))
        remove_temps(models_dir)
    known = known_secrets(serving.replica_env.values())  # each model adds its own env's
    if known != memo.known:
        memo.known, memo.inputs = known, {}
    if memo.pages is None:
        memo.pages = Pages(Path(status_dir))
    docs = {}
    problems = model_issues(desired) if desired is not None else {}
    groups: dict[str, list[ModelRecord]] = {}
    plain: dict[str, ModelRecord] = {}
    for key, rec in sorted(records.items()):
        if not _SAFE_KEY.match(key):
            log.error("not publishing model %r: unsafe as a file name", key)
            continue
        stem = versioned.stem(key)
        if stem is not None:
            groups.setdefault(stem, []).append(rec)
        else:
            plain[key] = rec
    for key, rec in plain.items():
        if key not in groups:  # else a model turning into versions: one document, below
            docs[key] = _publish_model(models_dir, key, rec, observed, serving, memo,
                                       problems.get((rec.user_id, rec.suffix), ()), now=now)
    for stem, recs in groups.items():
        docs[stem] = _publish_versions(models_dir, stem, recs, observed, serving, memo,
                                       problems.get((recs[0].user_id, recs[0].model_id), ()),
                                       now=now, old=plain.get(stem))
    docs = dict(sorted(docs.items()))  # by model key, models with versions among the rest
    index = {
        "generated_at": iso(now),
        "servesync_version": servesync.__version__,
        "tick": tick,
        "revision": revision,
        "revision_committed_at": iso(committed_at) if committed_at is not None else None,
        "source_error": source_error,
        "ray_reachable": observed.reachable,
        "openai_base_url": serving.base_url,
        "models": list(docs.values()),
        "errors": [issue_json(i) for i in desired.issues()] if desired else [],
        "unmanaged_apps": unmanaged_apps(records, observed),
    }
    body = {k: v for k, v in index.items() if k not in ("generated_at", "tick")}
    rows = [memo.rows[k] for k in docs]
    index_changed = body != memo.index or not memo.started
    if index_changed or rows != memo.page_rows:
        rest = scrub_strings({k: v for k, v in index.items() if k != "models"}, known)
        if index_changed:
            atomic_write(Path(status_dir) / INDEX_FILE,
                         dump_index({**index, **rest}, [memo.lines[k] for k in docs]),
                         mode=STATUS_FILE_MODE, durable=False)
        memo.pages.write_index(rest, rows, rest["errors"])
        # remembered once both are written: after a failed page write the next
        # tick writes them again (docs/ARCHITECTURE.md, "The tick")
        memo.index, memo.page_rows = body, rows
    gone = [models_dir / f"{k}.json" for k in memo.written if k not in docs] if memo.started \
        else [p for p in models_dir.glob("*.json") if p.stem not in docs]
    if not memo.started:
        gone += [p for p in models_dir.glob("*.html") if p.stem not in docs]
    for path in gone:
        path.unlink(missing_ok=True)
        path.with_suffix(".html").unlink(missing_ok=True)
        for kept in (memo.written, memo.inputs, memo.summaries, memo.lines, memo.rows):
            kept.pop(path.stem, None)
    memo.started = True


def _publish_model(models_dir: Path, key: str, rec: ModelRecord, observed: Observed,
                   serving: ServingConfig, memo: Memo,
                   issues: tuple[Issue, ...] = (), *, now: datetime) -> dict[str, Any]:
    """Write one model's file (and its HTML page) if its content changed;
    returns its index line. Not rebuilt at all when its record, observation
    and document errors are those of last time (a schedule's next stop or
    start is worked out from the record: it changes only when the record
    does, at the latest at that time)."""
    inputs = (rec, observed.apps.get(rec.app_name), observed.reachable, observed.error, issues)
    last = memo.inputs.get(key)
    if last is not None and last[0] is rec and last[1:] == inputs[1:]:
        return memo.summaries[key]
    doc = scrub_strings(model_status(rec, observed=observed, base_url=serving.base_url,
                                     issues=issues, now=now),
                        own_secrets([rec], memo.known or ()))
    return _write_model(models_dir, key, doc, inputs, memo, line=rec.spec.get("line"),
                        revision=rec.attempted_revision or rec.applied_revision,
                        serving=serving, now=now)


def _publish_versions(models_dir: Path, key: str, recs: list[ModelRecord], observed: Observed,
                      serving: ServingConfig, memo: Memo,
                      issues: tuple[Issue, ...] = (), *, now: datetime,
                      old: ModelRecord | None = None) -> dict[str, Any]:
    """As :func:`_publish_model`, for the records of one model's versions.
    ``old``: the model's record without versions under the same key (a model
    just turned into versions), folded into this one document
    (:func:`versioned.versioned_status`), never written on its own."""
    inputs = (tuple(recs), tuple(observed.apps.get(r.app_name) for r in recs),
              observed.reachable, observed.error, issues,
              old, observed.apps.get(old.app_name) if old is not None else None)
    last = memo.inputs.get(key)
    if last is not None and last == inputs:
        return memo.summaries[key]
    doc = versioned.versioned_status(recs, observed=observed, one=lambda r: model_status(
        r, observed=observed, base_url=serving.base_url, issues=issues, now=now), old=old)
    known = own_secrets([*recs, *([old] if old is not None else [])], memo.known or ())
    # the page's source link: the line and the revision it was read at, from one
    # record (the versions may have been submitted at different revisions)
    where = max(recs, key=lambda r: (r.updated_at, r.attempted_revision or ""))
    return _write_model(models_dir, key, scrub_strings(doc, known), inputs, memo,
                        line=where.spec.get("line"),
                        revision=where.attempted_revision or where.applied_revision,
                        serving=serving, now=now)


def _write_model(models_dir: Path, key: str, doc: dict[str, Any],
                 inputs: tuple[object, ...], memo: Memo, *, line: object,
                 revision: str | None, serving: ServingConfig,
                 now: datetime) -> dict[str, Any]:
    """Write a model's JSON file and HTML page where they changed; its index line.
    ``doc["model_key"]`` is ``key`` whatever the scrub did to it: the file's
    own name (public), what the index and the page link to."""
    doc = {**doc, "model_key": key}
    data = dump(doc)
    if key not in memo.written:  # no fsync: a power cut's damage is repaired here at start
        write_if_changed(models_dir / f"{key}.json", data, mode=STATUS_FILE_MODE, durable=False)
    elif memo.written[key] != data:
        atomic_write(models_dir / f"{key}.json", data, mode=STATUS_FILE_MODE, durable=False)
    if memo.written.get(key) != data or key not in memo.rows:
        assert memo.pages is not None
        memo.pages.write_model(models_dir, key, doc,
                               line=line if isinstance(line, int) else None,
                               base_url=serving.base_url, now=now, revision=revision)
        values = row(doc)
        if key not in memo.rows or memo.rows[key].values != values:  # else: as shown
            memo.rows[key] = memo.pages.row(values)
    memo.written[key], memo.inputs[key], memo.summaries[key] = data, inputs, summary(doc)
    memo.lines[key] = json.dumps(memo.summaries[key], ensure_ascii=False)
    return memo.summaries[key]


def unmanaged_apps(records: Mapping[str, ModelRecord], observed: Observed) -> list[str]:
    """Serve applications that are neither a recorded model nor the gateway:
    deployed by hand, or left over from a lost state file. Reported, never
    touched (servesync only deletes what it recorded)."""
    ours = {rec.app_name for rec in records.values()} | {GATEWAY_APP}
    return sorted(set(observed.apps) - ours)


def model_issues(desired: DesiredState) -> dict[tuple[str, str], tuple[Issue, ...]]:
    """The errors of the documents that declare each model (user, model_id), for
    the models whose documents have any (a 422 over the user's quota, ...)."""
    out: dict[tuple[str, str], tuple[Issue, ...]] = {}
    for f in desired.files:
        if f.user_id is None or f.ok:
            continue
        for d in f.documents:
            if d.issues and d.model_id is not None:
                name = (f.user_id, d.model_id)
                out[name] = out.get(name, ()) + d.issues
    return out


def model_status(rec: ModelRecord, *, observed: Observed, base_url: str,
                 issues: tuple[Issue, ...] = (), now: datetime | None = None) -> dict[str, Any]:
    """One model's status document (schema ``status-model``); ``issues``: its
    document's validation errors this tick; ``now``: the tick's time (the
    schedule's next stop and start are the first after it)."""
    spec = rec.spec
    now = now or datetime.now(UTC)
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
        "state": published_state(rec, observed),
        "enabled": rec.enabled,
        "endpoint": ({"openai_base_url": base_url, "model": rec.public_id,
                      "aliases": list(rec.routed_aliases)}
                     if _callable(rec, obs) else None),
        "aliases": [a for a in spec.get("aliases") or () if isinstance(a, str)],
        "lora": lora_status(spec, rec.public_id),
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
        **resources(spec),
        "description": spec.get("description"),
        "labels": dict(spec.get("labels") or {}),
        **schedule_status(rec, now),
        "engine_kwargs": redact(spec.get("engine_kwargs") or {}),
        "env_names": sorted(spec.get("env") or {}),
        "validation_errors": [issue_json(i) for i in issues],
        "events": [e.to_json() for e in rec.events],
    }


def schedule_status(rec: ModelRecord, now: datetime) -> dict[str, Any]:
    """The model's schedule as recorded, when the schedule next stops or starts
    it (ISO 8601 UTC, or null), and why it is stopped (``schedule``,
    ``enabled: false``, ``source refused``; null while it is not)."""
    stop_at, start_at = scheduling.next_stop_at(rec, now), scheduling.next_start_at(rec, now)
    return {
        "schedule": rec.spec.get("schedule"),
        "next_stop_at": iso(stop_at) if stop_at else None,
        "next_start_at": iso(start_at) if start_at else None,
        "stopped_reason": stopped_reason(rec),
    }


def stopped_reason(rec: ModelRecord) -> str | None:
    """Why a STOPPED (or stopping) model does not run, or None."""
    if rec.state not in (State.STOPPED, State.DELETING):
        return None
    if rec.schedule_stop is not None:
        return scheduling.SCHEDULE_REASON
    if not rec.enabled:
        return "enabled: false"
    if rec.error_summary and rec.error_summary.startswith("stopped:"):
        return "source refused"
    return None


def lora_status(spec: Mapping[str, Any], public_id: str) -> dict[str, Any] | None:
    """A recorded spec's LoRA adapters (issue 11) and the call form of one."""
    lora = spec.get("lora")
    if not isinstance(lora, Mapping):
        return None
    return {"path": lora.get("path"),
            "max_adapters_per_replica": lora.get("max_adapters_per_replica"),
            "call_as": f"{public_id}:<adapter>"}


def resources(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a recorded spec asks of the cluster beyond replicas (issue 10's
    knobs; null or empty when the file leaves them to the cluster)."""
    gpus = int(spec.get("gpus_per_replica") or 0)
    parallelism = spec.get("parallelism") or {"tensor": max(gpus, 1), "pipeline": 1}
    rollout = dict(spec.get("rollout") or {})
    if spec.get("deploy_timeout_s") is not None:
        rollout["deploy_timeout_s"] = spec["deploy_timeout_s"]
    return {
        "parallelism": parallelism,
        "memory_gb_per_replica": spec.get("memory_gb_per_replica"),
        "accelerator_type": spec.get("accelerator_type"),
        "min_compute_capability": spec.get("min_compute_capability"),
        "accelerator_types": list(spec.get("accelerators") or []),
        "rollout": rollout,
    }


def published_state(rec: ModelRecord, observed: Observed) -> str:
    """The recorded state, except RUNNING or DEGRADED while Ray is unreachable: ``UNKNOWN``
    (nothing can say it serves). The record itself keeps RUNNING: it is the
    truth a reconnected tick checks against Ray (README, "Status files")."""
    if rec.state in (State.RUNNING, State.DEGRADED) and not observed.reachable:
        return UNKNOWN_STATE
    return str(rec.state)


def _callable(rec: ModelRecord, obs: AppObservation | None) -> bool:
    """Can a client call the model through the gateway? RUNNING (recorded only
    once the gateway routes it) or DEGRADED (still routed), or an update of a
    model that ran, while its last good version's replicas still serve."""
    if rec.state in (State.RUNNING, State.DEGRADED):
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
            "attempted_revision", "description", "labels")
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


def scrub_strings(value: Any, known: Iterable[str] = ()) -> Any:
    """A copy of a JSON document with every string value scrubbed; keys are
    kept as they are (a scrubbed key would break the document's shape)."""
    known = tuple(known)
    if isinstance(value, Mapping):
        return {str(k): scrub_strings(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_strings(v, known) for v in value]
    if isinstance(value, str):
        return scrub(value, known)
    return value


def dump_index(index: Mapping[str, Any], lines: list[str]) -> bytes:
    """``index.json``'s bytes: as :func:`dump`, but each model on one line, given
    already encoded (``lines``): each is encoded once, when its model changes,
    not the whole list whenever one model does."""
    marker = f"models-{secrets.token_hex(8)}"
    text = json.dumps({**index, "models": marker}, indent=2, ensure_ascii=False)
    models = "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"
    return (text.replace(f'"{marker}"', models, 1) + "\n").encode()


def dump(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
