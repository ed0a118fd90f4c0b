"""``metrics.prom`` and ``metrics-models-<n>.prom``: the operators' Prometheus metrics.

For node_exporter's textfile collector (``--collector.textfile.directory``
pointed at the status dir), as Argo CD and Flux users scrape their GitOps
controllers. Built with ``prometheus_client`` (a ``CollectorRegistry`` per
file, ``write_to_textfile``), never formatted by hand. ``metrics.prom`` is
rewritten after every tick (its timestamps are the liveness signal); the
per-model series sit in 16 files ``metrics-models-0.prom`` ...
``metrics-models-f.prom`` (by a hash of the user id), each rewritten only
when one of its series changed (at 1,000 models they are 2,000 lines:
formatting them every idle tick was a third of the tick, and all of them
after one model's change was a third of that tick). node_exporter merges the
files' families (same names, same help). Called by the reconciler
through :meth:`servesync.status.publishing.StatusFiles.publish_metrics` with
the tick's :class:`~servesync.converge.ports.TickReport`.

What it holds (all prefixed ``servesync_``):

* ``tick_duration_seconds`` (histogram) and ``last_tick_duration_seconds``;
  ``ticks_total{outcome}``: converged / progressing / degraded / error;
* ``last_tick_timestamp_seconds``, ``last_successful_tick_timestamp_seconds``
  (a tick whose outcome is not ``error``), ``last_converged_timestamp_seconds``;
* ``ray_reachable`` (0/1); ``models{state}`` (every state, zeros included);
  ``validation_errors{code}`` (400/403/409/422, zeros included);
* in ``metrics-models-<n>.prom``: ``model_replicas_desired{user,model}`` and
  ``model_replicas_running{user,model}`` for every recorded model (``model``
  is the public id clients send): two series a model, 10,000 at 5,000
  models, no state label (a state change would start a new series); in
  ``metrics.prom``, ``replicas_desired`` / ``replicas_running`` are the
  totals, for dashboards that must stay cheap;
* ``desired_revision_changed_timestamp_seconds``: when the desired state's
  revision last changed (Prometheus' way of "time since": ``time() - it``),
  with ``desired_revision_info{revision}`` naming it; ``info{version}``.

Counters and the histogram count from this process's start (or its last
config reload), as Prometheus expects; the timestamps and the revision are
read back from the previous file, so a restart does not reset them. No
secret and no machine path is written: labels are states, classes, user
ids, public model ids and the commit SHA. The file is 0644 whatever the
umask, like the other status files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections import Counter as Tally
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

import servesync
from servesync.converge.ports import TickOutcome, TickReport
from servesync.converge.records import ModelRecord, State
from servesync.errors import IssueCode
from servesync.state.atomicio import fsync_dir, temp_name

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.prom"
MODEL_SHARDS = 16
"""The per-model series are spread over this many files by a hash of the user
id, so a change rewrites one sixteenth of them."""


def models_metrics_file(shard: int) -> str:
    """``metrics-models-<hex digit>.prom``: the per-model series of one shard."""
    return f"metrics-models-{shard:x}.prom"


def shard_of(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % MODEL_SHARDS


class _Shard:
    """One ``metrics-models-<n>.prom``: its registry and whether it must be written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.desired = Gauge("servesync_model_replicas_desired",
                             "Replicas a model asks for (num_replicas, or autoscaling's "
                             "min_replicas; 0 when stopped).", ["user", "model"], registry=r)
        self.running = Gauge("servesync_model_replicas_running",
                             "Replicas Ray reports RUNNING for a model.", ["user", "model"],
                             registry=r)
        self.dirty = True  # every shard is written once, empty ones included
METRICS_FILE_MODE = 0o644
OUTCOMES: tuple[TickOutcome, ...] = ("converged", "progressing", "degraded", "error")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_NO_APPLICATION = (State.STOPPED, State.DELETING)


class Metrics:
    """The registries of one servesync process, and their files."""

    def __init__(self, status_dir: Path) -> None:
        self.path = Path(status_dir) / METRICS_FILE
        self.shards = [_Shard(Path(status_dir) / models_metrics_file(n))
                       for n in range(MODEL_SHARDS)]
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.duration = Histogram("servesync_tick_duration_seconds",
                                  "Duration of a reconcile tick.", buckets=DURATION_BUCKETS,
                                  registry=r)
        self.last_duration = Gauge("servesync_last_tick_duration_seconds",
                                   "Duration of the last tick.", registry=r)
        self.ticks = Counter("servesync_ticks", "Ticks by how they ended.", ["outcome"],
                             registry=r)
        self.last_tick = Gauge("servesync_last_tick_timestamp_seconds",
                               "When the last tick ended (Unix time).", registry=r)
        self.last_success = Gauge("servesync_last_successful_tick_timestamp_seconds",
                                  "When the last tick that read the source and Ray and made "
                                  "every Ray call it planned ended (Unix time).", registry=r)
        self.last_converged = Gauge("servesync_last_converged_timestamp_seconds",
                                    "When the last converged tick ended (Unix time).",
                                    registry=r)
        self.ray_reachable = Gauge("servesync_ray_reachable",
                                   "1 if Ray answered in the last tick, else 0.", registry=r)
        self.models = Gauge("servesync_models", "Recorded models by state.", ["state"],
                            registry=r)
        self.invalid = Gauge("servesync_validation_errors",
                             "Validation errors of the desired state by class.", ["code"],
                             registry=r)
        self.desired_total = Gauge("servesync_replicas_desired",
                                   "Replicas all models ask for.", registry=r)
        self.running_total = Gauge("servesync_replicas_running",
                                   "Replicas Ray reports RUNNING, all models.", registry=r)
        self.revision_changed = Gauge("servesync_desired_revision_changed_timestamp_seconds",
                                      "When the desired state's revision last changed, as "
                                      "servesync saw it (Unix time).", registry=r)
        self.revision_info = Gauge("servesync_desired_revision_info",
                                   "The desired state's revision (commit SHA; empty for a "
                                   "plain folder).", ["revision"], registry=r)
        Gauge("servesync_info", "The running servesync.", ["version"],
              registry=r).labels(servesync.__version__).set(1)
        for outcome in OUTCOMES:
            self.ticks.labels(outcome)
        self._revision: str | None = None
        self._revision_known = False  # from the previous file, or a tick
        self._rows: dict[tuple[str, str], tuple[int, int]] | None = None  # per-model series
        self._restore()

    def _restore(self) -> None:
        """Timestamps and the revision from the previous file, if any."""
        try:
            text = self.path.read_text(encoding="utf-8")
            families = {f.name: f for f in text_string_to_metric_families(text)}
        except (OSError, ValueError):
            return
        kept = {"servesync_last_successful_tick_timestamp_seconds": self.last_success,
                "servesync_last_converged_timestamp_seconds": self.last_converged,
                "servesync_desired_revision_changed_timestamp_seconds": self.revision_changed}
        for name, gauge in kept.items():
            family = families.get(name)
            if family and family.samples:
                gauge.set(family.samples[0].value)
        info = families.get("servesync_desired_revision_info")
        changed = families.get("servesync_desired_revision_changed_timestamp_seconds")
        if info and info.samples and changed and changed.samples:
            self._revision = info.samples[0].labels.get("revision") or None
            self._revision_known = True
            self.revision_info.labels(self._revision or "").set(1)

    def update(self, report: TickReport) -> None:
        """Set every metric from one tick's report."""
        now = report.now.timestamp()
        self.duration.observe(report.duration_s)
        self.last_duration.set(report.duration_s)
        self.ticks.labels(report.outcome).inc()
        self.last_tick.set(now)
        if report.outcome != "error":
            self.last_success.set(now)
        if report.outcome == "converged":
            self.last_converged.set(now)
        self.ray_reachable.set(1 if report.observed.reachable else 0)
        states = Tally(rec.state for rec in report.records.values())
        for state in State:
            self.models.labels(str(state)).set(states[state])
        codes = Tally(issue.code for issue in report.desired.issues())
        for code in IssueCode:
            self.invalid.labels(str(int(code))).set(codes[code])
        self._replicas(report)
        if report.revision != self._revision or not self._revision_known:
            self.revision_info.clear()
            self.revision_info.labels(report.revision or "").set(1)
            self.revision_changed.set(now)
            self._revision, self._revision_known = report.revision, True

    def _replicas(self, report: TickReport) -> None:
        """Per-model series: set each, drop those of models no longer recorded;
        nothing is touched (nor written) when no model's numbers changed."""
        rows: dict[tuple[str, str], tuple[int, int]] = {}
        for rec in report.records.values():
            obs = report.observed.apps.get(rec.app_name)
            model = rec.public_id if rec.version is None else f"{rec.public_id}@{rec.version}"
            rows[(rec.user_id, model)] = (asked(rec),
                                                  obs.running_replicas if obs else 0)
        self.desired_total.set(sum(d for d, _ in rows.values()))
        self.running_total.set(sum(r for _, r in rows.values()))
        if rows == self._rows:
            return
        old = self._rows or {}
        for labels, (desired, running) in rows.items():
            if old.get(labels) != (desired, running):
                shard = self.shards[shard_of(labels[0])]
                shard.desired.labels(*labels).set(desired)
                shard.running.labels(*labels).set(running)
                shard.dirty = True
        for labels in old.keys() - rows.keys():
            shard = self.shards[shard_of(labels[0])]
            shard.desired.remove(*labels)
            shard.running.remove(*labels)
            shard.dirty = True
        self._rows = rows

    def write(self) -> None:
        """Replace ``metrics.prom`` (and each ``metrics-models-<n>.prom`` whose
        per-model series changed) atomically, 0644 whatever the umask."""
        _write(self.path, self.registry)  # first: its timestamps are the liveness signal
        for shard in self.shards:
            if shard.dirty:
                _write(shard.path, shard.registry)
                shard.dirty = False


def write_registry(path: Path, registry: CollectorRegistry) -> None:
    """Write one registry as a textfile, as :func:`_write` (for ``metrics-notify.prom``)."""
    _write(path, registry)


def _write(path: Path, registry: CollectorRegistry) -> None:
    """``write_to_textfile`` (atomic, but created under the umask: 0640 with
    systemd's ``UMask=0027``, unreadable by node_exporter) writes a hidden
    staging file that node_exporter ignores (not ``*.prom``); it is set to
    0644 and renamed over ``path``."""
    staging = temp_name(path)
    try:
        write_to_textfile(str(staging), registry)
        os.chmod(staging, METRICS_FILE_MODE)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
    fsync_dir(path.parent)


def asked(rec: ModelRecord) -> int:
    """Replicas a recorded model should have running: none once stopped or going."""
    if not rec.enabled or rec.state in _NO_APPLICATION:
        return 0
    return rec.asked_replicas
