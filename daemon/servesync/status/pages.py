"""The status page: static HTML beside the JSON status files, for people.

:class:`Pages` writes into ``status_dir``:

* ``index.html``: the cluster's line and every model in one table, grouped by
  user, filterable by user and state (``page.js``, a few lines of vanilla
  JS), reloading itself every :data:`REFRESH_S` seconds;
* ``models/<model_key>.html``: one model: its spec as written (file and
  line: a link into the repository's web UI when the operator set
  ``source.web_url``, :class:`SourceLink`), its Serve application, how to
  call it, its events as an inline SVG timeline drawn here (:func:`timeline`);
* ``page.css`` and ``page.js``, the two static assets both pages load
  (a Content-Security-Policy allows no other script or style, inline ones
  included).

The pages are rendered with Jinja2 from the templates in ``templates/``, with
autoescape on: every value is tenant input or Ray's text and reaches the HTML
only escaped. They are rendered from the same, already scrubbed, documents
as the JSON files (:mod:`servesync.status.publishing` calls this module):
a model page from the model's status document (env names only, secrets
redacted), the index from the rows :func:`row` takes out of those documents.
:mod:`~servesync.status.publishing` calls :meth:`Pages.write_model` only when
a model's JSON document changed, :meth:`Pages.row` only when a row did (and
keeps the :class:`Row`, its ``<tr>`` rendered once) and
:meth:`Pages.write_index` only when a row or the cluster's line did, so an
idle tick renders nothing and writes nothing. Every file goes through
:func:`servesync.state.atomicio.atomic_write` (not fsynced, as the JSON
files: the first tick after a start rewrites them).
"""

from __future__ import annotations

import importlib.resources
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import yaml

from servesync.config import WEB_URL_FIELDS, SourceConfig, check_web_url
from servesync.converge.scheduling import iso
from servesync.state.atomicio import atomic_write, write_if_changed

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: 10x faster
INDEX_PAGE = "index.html"
ASSETS = ("page.css", "page.js")
REFRESH_S = 10
TIMELINE_HOURS = 6
MIN_SPAN = timedelta(minutes=10)
PAGE_MODE = 0o644

STATE_OF_EVENT = {
    "ADMITTED": "QUEUED", "RETRY": "QUEUED",
    "DEPLOY_REQUESTED": "DEPLOYING", "SUBMITTED": "DEPLOYING", "ROUTING": "DEPLOYING",
    "SCALED": "DEPLOYING", "DRIFT": "DEPLOYING",
    "RUNNING": "RUNNING", "DEGRADED": "DEGRADED", "FAILED": "FAILED",
    "STOP_REQUESTED": "DELETING", "DELETE_REQUESTED": "DELETING", "STOPPED": "STOPPED",
}
"""The state a model is in after each event kind (records.EventKind): the
timeline's colours, and where "time in state" starts."""

MARKED_EVENTS = {"DEPLOY_REQUESTED": "deploy", "SCALED": "deploy", "DRIFT": "deploy",
                 "FAILED": "failure", "RETRY": "failure"}
"""Events the timeline marks with a tick above the bar."""

_SPEC_FIELDS = ("model_source", "num_replicas", "autoscaling", "gpus_per_replica",
                "cpus_per_replica", "parallelism", "memory_gb_per_replica", "accelerator_type",
                "min_compute_capability", "accelerator_types", "rollout", "engine_kwargs",
                "enabled", "aliases", "description", "labels")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("servesync.status", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    return env


def _asset(name: str) -> bytes:
    return importlib.resources.files("servesync.status").joinpath("templates", name).read_bytes()


def state_since(doc: Mapping[str, Any]) -> str | None:
    """When the model entered its current state: the first of the last run of
    events that lead to it; else its record's ``updated_at``."""
    since = None
    for event in reversed(doc.get("events") or ()):
        if STATE_OF_EVENT.get(event.get("kind", "")) != doc.get("state"):
            break
        since = event.get("at")
    return since or doc.get("updated_at") or None


def row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The index page's row for one model, taken from its status document
    (so a new field of the document reaches the page by adding it here)."""
    serve = doc.get("serve_status") or {}
    return {
        "model_key": doc["model_key"], "model_id": doc["model_id"], "user_id": doc["user_id"],
        "aliases": list(doc.get("aliases") or ()), "state": doc["state"],
        "running": serve.get("running_replicas", 0), "replicas": doc["num_replicas"],
        "total_gpus": doc["total_gpus"], "applied_revision": doc.get("applied_revision"),
        "attempted_revision": doc.get("attempted_revision"),
        "error_summary": doc.get("error_summary"), "since": state_since(doc),
        "description": doc.get("description"), "labels": dict(doc.get("labels") or {}),
        "versions": [{"name": v.get("name"), "state": v.get("state"),
                      "weight": v.get("weight_in_effect")}
                     for v in doc.get("versions") or () if isinstance(v, Mapping)],
        "next_stop_at": doc.get("next_stop_at"), "next_start_at": doc.get("next_start_at"),
        "stopped_reason": doc.get("stopped_reason"),
    }


@dataclass(frozen=True)
class Segment:
    """One stretch of the timeline in one state (x and width in SVG units)."""

    x: float
    width: float
    state: str
    title: str


@dataclass(frozen=True)
class Mark:
    """One marked event (a deploy or a failure) on the timeline."""

    x: float
    kind: str
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    start: str
    end: str
    segments: tuple[Segment, ...]
    marks: tuple[Mark, ...]


def _parse(at: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def timeline(events: Sequence[Mapping[str, Any]], now: datetime, *,
             hours: int = TIMELINE_HOURS, width: int = 600) -> Timeline:
    """The model's states up to ``now``, from its events: a coloured segment
    per state, a mark per deploy or failure. It spans the last ``hours``, or
    the model's whole life when shorter (at least :data:`MIN_SPAN`)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    timed = [(t, e) for e in events if (t := _parse(str(e.get("at", "")))) is not None]
    timed.sort(key=lambda te: te[0])
    start = now - timedelta(hours=hours)
    if timed and timed[0][0] > start:
        start = min(timed[0][0], now - MIN_SPAN)
    span = (now - start).total_seconds()

    def x(t: datetime) -> float:
        return round(max(0.0, min(1.0, (t - start).total_seconds() / span)) * width, 1)

    segments: list[Segment] = []
    marks: list[Mark] = []
    for i, (t, e) in enumerate(timed):
        kind = str(e.get("kind", ""))
        state = STATE_OF_EVENT.get(kind)
        end = timed[i + 1][0] if i + 1 < len(timed) else now
        title = f"{e.get('at')} {kind}: {e.get('message') or ''}".strip().rstrip(":")
        if state is not None and end > start:
            x0, x1 = x(t), x(end)
            segments.append(Segment(x0, max(x1 - x0, 1.0), state, title))
        if kind in MARKED_EVENTS and t >= start:
            marks.append(Mark(x(t), MARKED_EVENTS[kind], title))
    return Timeline(width, iso(start), iso(now), tuple(segments), tuple(marks))


def spec_text(doc: Mapping[str, Any]) -> str:
    """The model's spec as its file states it (from the status document: env
    by name only, secrets redacted), as YAML."""
    spec: dict[str, Any] = {"model_id": doc.get("model_id_suffix")}
    for key in _SPEC_FIELDS:
        value = doc.get(key)
        if value not in (None, [], {}):
            spec[key] = value
    if doc.get("env_names"):
        spec["env"] = {name: "<not shown>" for name in doc["env_names"]}
    return yaml.dump(spec, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100)


@dataclass(frozen=True)
class SourceLink:
    """Where a model file can be read in the operator's git web UI: the
    ``source.web_url`` template (http(s) only, :func:`~servesync.config.check_web_url`)
    and the folder of the repository that holds ``users/`` (``source.subpath``)."""

    template: str
    subpath: str = ""

    def __post_init__(self) -> None:
        check_web_url(self.template)

    @classmethod
    def of(cls, source: SourceConfig) -> SourceLink | None:
        """The config's link, or None when it sets no ``web_url``."""
        return cls(source.web_url, source.subpath.strip("/")) if source.web_url else None

    def url(self, path: str, *, revision: str | None, line: int | None) -> str | None:
        """The template with ``path`` (relative to the desired state's root),
        ``revision`` and ``line`` filled in, each URL-quoted (so a quote, ``<``
        or ``#`` in a file name stays in its path segment); None when the
        template needs a value there is none of (no revision: a plain folder)."""
        values = {"revision": revision, "line": str(line) if line is not None else None,
                  "path": "/".join(p for p in (self.subpath, path) if p) or None}
        url = self.template
        for name in WEB_URL_FIELDS:
            if "{" + name + "}" in url:
                value = values[name]
                if value is None:
                    return None
                url = url.replace("{" + name + "}", urllib.parse.quote(value, safe="/"))
        return url


@dataclass(frozen=True)
class Row:
    """One model's row of ``index.html``: its values (:func:`row`; rows are
    compared by them) and its ``<tr>``, rendered (escaped) once."""

    values: Mapping[str, Any]
    html: markupsafe.Markup = field(compare=False)


class Pages:
    """Renders and writes the HTML pages; remembers nothing of their content
    (:mod:`~servesync.status.publishing`'s memo decides when to call, and keeps
    the rendered rows)."""

    def __init__(self, status_dir: Path, *, link: SourceLink | None = None) -> None:
        self.status_dir = Path(status_dir)
        self.link = link
        self._env = _environment()
        self._assets_checked = False

    def write_assets(self) -> None:
        """``page.css`` and ``page.js``, compared with the disk once per start."""
        if self._assets_checked:
            return
        for name in ASSETS:
            write_if_changed(self.status_dir / name, _asset(name), mode=PAGE_MODE,
                             durable=False)
        self._assets_checked = True

    def row(self, values: Mapping[str, Any]) -> Row:
        """One model's row (``values`` from :func:`row`), its ``<tr>`` rendered
        by the template (escaped)."""
        html = markupsafe.Markup(self._env.get_template("_row.html.j2").render(r=values))
        return Row(values, html)

    def render_index(self, cluster: Mapping[str, Any], rows: Sequence[Row],
                     errors: Sequence[Mapping[str, Any]]) -> bytes:
        users: dict[str, list[markupsafe.Markup]] = {}
        for r in sorted(rows, key=lambda r: (r.values["user_id"], r.values["model_id"])):
            users.setdefault(r.values["user_id"], []).append(r.html)
        states = sorted({r.values["state"] for r in rows})
        return self._env.get_template("index.html.j2").render(
            cluster=cluster, users=users, states=states, errors=errors,
            refresh_s=REFRESH_S, count=len(rows)).encode()

    def write_index(self, cluster: Mapping[str, Any], rows: Sequence[Row],
                    errors: Sequence[Mapping[str, Any]]) -> None:
        self.write_assets()
        atomic_write(self.status_dir / INDEX_PAGE, self.render_index(cluster, rows, errors),
                     mode=PAGE_MODE, durable=False)

    def render_model(self, doc: Mapping[str, Any], *, line: int | None, base_url: str,
                     now: datetime, revision: str | None) -> bytes:
        return self._env.get_template("model.html.j2").render(
            doc=doc, line=line, base_url=base_url, spec=spec_text(doc),
            source_url=self.source_url(doc, line, revision),
            since=state_since(doc), timeline=timeline(doc.get("events") or (), now),
            generated_at=iso(now),
            refresh_s=REFRESH_S, states=sorted(set(STATE_OF_EVENT.values()))).encode()

    def source_url(self, doc: Mapping[str, Any], line: int | None,
                   revision: str | None) -> str | None:
        """The link to the model's file and line in the operator's git web UI,
        or None. ``revision``: the one ``line`` was read at (the record's
        attempted revision: its spec, and so its line, is that revision's; for
        a model with versions, that of the record the line came from)."""
        if self.link is None or not doc.get("source_file"):
            return None
        return self.link.url(str(doc["source_file"]), revision=revision, line=line)

    def write_model(self, models_dir: Path, key: str, doc: Mapping[str, Any], *,
                    line: int | None, base_url: str, now: datetime,
                    revision: str | None) -> None:
        self.write_assets()
        atomic_write(models_dir / f"{key}.html",
                     self.render_model(doc, line=line, base_url=base_url, now=now,
                                       revision=revision),
                     mode=PAGE_MODE, durable=False)
