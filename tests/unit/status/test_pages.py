"""The status page: escaped hostile values, no secrets, written only when changed, small."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.records import Event, EventKind, ModelRecord, State
from servesync.desired.specs import DesiredState, DocumentResult, FileResult
from servesync.errors import Issue, IssueCode
from servesync.status import pages
from servesync.status.publishing import Memo, publish
from tests.unit.status.test_publishing import (
    NOW,
    OBSERVED,
    RECORDS,
    SECRET,
    SERVING,
    SHA1,
    record,
)

SCRIPT = '<script>document.title="pwned"</script>'
IMG = '"><img src=x onerror="document.title=1">'
HOSTILE = (SCRIPT, IMG, "{{ 7*7 }}", "{% raw %}", "'; alert(1); '", "</textarea></pre>")
EVIL = " ".join(HOSTILE)


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def hostile_world() -> tuple[dict[str, ModelRecord], Observed, DesiredState]:
    rec = record("svc-evil-a", suffix="evil", spec={
        "description": EVIL, "labels": {"team": EVIL, EVIL: "x"}, "aliases": [SCRIPT]},
        state=State.FAILED, error_summary=EVIL, user_id="alice",
        events=(Event(at="2025-03-01T11:00:00Z", kind=EventKind.DEPLOY_REQUESTED, message=EVIL),
                Event(at="2025-03-01T11:30:00Z", kind=EventKind.FAILED, message=EVIL)))
    records = {**RECORDS, "svc-evil-a": rec}
    observed = Observed(apps={**OBSERVED.apps, "svc-evil-a": AppObservation(
        "svc-evil-a", AppStatus.DEPLOY_FAILED, EVIL, 0)})
    issue = Issue(IssueCode.UNPROCESSABLE, f"users/alice/{SCRIPT}.yaml", 2, "/labels", EVIL)
    desired = DesiredState(revision=SHA1, files=(FileResult(
        path="users/alice/evil.yaml", user_id="alice",
        documents=(DocumentResult(index=0, line=1, model_id="evil", issues=(issue,)),)),))
    return records, observed, desired


def pages_of(status_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in [status_dir / "index.html",
                                            *sorted((status_dir / "models").glob("*.html"))]}


def test_hostile_values_are_escaped_everywhere(tmp_path: Path) -> None:
    records, observed, desired = hostile_world()
    publish(tmp_path, records=records, desired=desired, observed=observed, tick=1,
            revision=SHA1, source_error=EVIL, serving=SERVING, now=NOW)
    html = pages_of(tmp_path)
    assert set(html) == {"index.html", "svc-alice-a.html", "svc-alice-b.html",
                         "svc-evil-a.html"}
    for name, text in html.items():
        assert "<script>document" not in text, name
        assert "<img" not in text and "</textarea></pre>" not in text, name
        assert "49" not in text.replace("2025", ""), name  # no template ran on a value
        scripts = [a for t, a in tags(text) if t == "script"]
        assert scripts == [{"src": "page.js" if name == "index.html" else "../page.js",
                            "defer": None}], name
        handlers = [(t, k) for t, a in tags(text) for k in a if k.startswith("on")]
        assert handlers == [], name
        assert "Content-Security-Policy" in text
    for name in ("index.html", "svc-evil-a.html"):  # shown, as text
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in html[name]
        assert "{{ 7*7 }} {% raw %}" in html[name]
    assert html["index.html"].count("&#34;&gt;&lt;img src=x onerror=") >= 4  # desc, labels, error
    assert "source error: " in html["index.html"]


def test_no_secret_on_any_page(tmp_path: Path) -> None:
    publish(tmp_path, records=RECORDS, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW)
    for name, text in pages_of(tmp_path).items():
        assert SECRET not in text and "plain-value" not in text, name
    page = (tmp_path / "models" / "svc-alice-a.html").read_text()
    assert "HF_TOKEN: &lt;not shown&gt;" in page and "OTHER: &lt;not shown&gt;" in page
    assert "hf_token: &lt;redacted&gt;" in page


def test_model_page_content(tmp_path: Path) -> None:
    publish(tmp_path, records=RECORDS, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW)
    page = (tmp_path / "models" / "svc-alice-a.html").read_text()
    assert '<code id="source">users/alice/models.yaml:1</code>' in page
    assert "model_source: $STORAGE/alice/llama" in page  # as written, not resolved
    assert 'OpenAI(base_url="http://127.0.0.1:8123/v1"' in page
    assert '"model": "alice-202503011200-chat"' in page  # the curl body
    assert '<rect class="seg s-RUNNING"' in page
    index = (tmp_path / "index.html").read_text()
    assert 'data-state="FAILED"' in index and 'data-state="RUNNING"' in index
    assert '<a href="models/svc-alice-b.html">alice-202503011200-coder</a>' in index
    assert '<td class="num">2 / 2</td>' in index  # running / asked


def test_timeline_draws_states_and_marks() -> None:
    events = [{"at": "2025-03-01T05:00:00Z", "kind": "ADMITTED", "message": ""},
              {"at": "2025-03-01T08:00:00Z", "kind": "DEPLOY_REQUESTED", "message": ""},
              {"at": "2025-03-01T08:01:00Z", "kind": "RUNNING", "message": ""},
              {"at": "2025-03-01T11:00:00Z", "kind": "FAILED", "message": "oom"},
              {"at": "not a time", "kind": "RUNNING", "message": ""}]
    t = pages.timeline(events, NOW, hours=6, width=600)
    assert [s.state for s in t.segments] == ["QUEUED", "DEPLOYING", "RUNNING", "FAILED"]
    assert (t.segments[0].x, t.segments[0].width) == (0.0, 200.0)  # 05:00 (06:00 shown) to 8
    assert t.segments[1].x == 200.0 and t.segments[-1].x == 500.0  # 08:00 and 11:00 of 6-12
    assert t.segments[-1].x + t.segments[-1].width == 600.0
    assert [(m.kind, m.x) for m in t.marks] == [("deploy", 200.0), ("failure", 500.0)]
    old = pages.timeline([{"at": "2025-02-01T00:00:00Z", "kind": "RUNNING"}], NOW)
    assert [(s.x, s.width) for s in old.segments] == [(0.0, 600.0)]  # running all along
    young = pages.timeline([{"at": "2025-03-01T11:55:00Z", "kind": "ADMITTED"},
                            {"at": "2025-03-01T11:56:00Z", "kind": "RUNNING"}], NOW)
    assert young.start == "2025-03-01T11:50:00Z"  # its whole life, at least 10 minutes
    assert [(s.state, s.x) for s in young.segments] == [("QUEUED", 300.0), ("RUNNING", 360.0)]


def test_state_since_is_where_the_current_state_began() -> None:
    doc: dict[str, Any] = {"state": "RUNNING", "updated_at": "u", "events": [
        {"at": "1", "kind": "FAILED"}, {"at": "2", "kind": "ROUTING"},
        {"at": "3", "kind": "RUNNING"}, {"at": "4", "kind": "RUNNING"}]}
    assert pages.state_since(doc) == "3"
    assert pages.state_since({**doc, "state": "QUEUED"}) == "u"


def stamps(status_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(status_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in status_dir.rglob("*.html")}


def test_pages_are_written_only_when_what_they_show_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = Memo()
    args: dict[str, Any] = {"records": RECORDS, "desired": None, "observed": OBSERVED,
                            "revision": SHA1, "source_error": None, "serving": SERVING,
                            "memo": memo}
    publish(tmp_path, tick=1, now=NOW, **args)
    before = stamps(tmp_path)
    renders: list[str] = []
    for name in ("render_index", "render_model"):
        real = getattr(pages.Pages, name)

        def spy(self: pages.Pages, *a: Any, _real: Any = real, _n: str = name,
                **kw: Any) -> bytes:
            renders.append(_n)
            return bytes(_real(self, *a, **kw))

        monkeypatch.setattr(pages.Pages, name, spy)
    for tick in (2, 3):  # idle ticks: nothing rendered, nothing written
        publish(tmp_path, tick=tick, now=NOW + timedelta(seconds=tick), **args)
    assert renders == [] and stamps(tmp_path) == before
    # Ray now runs one replica of a: a's page and the index (its row), not b's
    observed = Observed(apps={**OBSERVED.apps, "svc-alice-a": AppObservation(
        "svc-alice-a", AppStatus.RUNNING, running_replicas=1)})
    publish(tmp_path, tick=4, now=NOW, **{**args, "observed": observed})
    after = stamps(tmp_path)
    assert sorted(renders) == ["render_index", "render_model"]
    assert [k for k in after if after[k] != before[k]] == ["index.html", "models/svc-alice-a.html"]


def test_a_fresh_start_rewrites_the_pages_and_removes_stale_ones(tmp_path: Path) -> None:
    publish(tmp_path, records=RECORDS, desired=None, observed=OBSERVED, tick=1, revision=SHA1,
            source_error=None, serving=SERVING, now=NOW)
    (tmp_path / "models" / "svc-gone.html").write_text("old")
    publish(tmp_path, records={"svc-alice-a": RECORDS["svc-alice-a"]}, desired=None,
            observed=OBSERVED, tick=1, revision=SHA1, source_error=None, serving=SERVING,
            now=NOW)
    assert sorted(p.name for p in (tmp_path / "models").glob("*.html")) == ["svc-alice-a.html"]
    assert "svc-alice-b" not in (tmp_path / "index.html").read_text()


def test_index_page_for_1000_models_is_under_1_mb(tmp_path: Path) -> None:
    base = RECORDS["svc-alice-b"]
    records = {}
    for i in range(1000):
        key = f"svc-user{i % 50:02d}-20250301-120000-{i:04x}"
        records[key] = replace(
            base, model_key=key, app_name=key, user_id=f"user{i % 50:02d}", suffix=f"model-{i}",
            spec={**base.spec, "description": "a model of the search team, 0.5B, chat",
                  "labels": {"team": "search", "tier": "prod"}, "aliases": [f"m{i}"]},
            error_summary="DEPLOY_FAILED: out of GPU memory" if i % 10 == 0 else None)
    publish(tmp_path, records=records, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW)
    size = os.path.getsize(tmp_path / "index.html")
    print(f"\nindex.html for 1,000 models: {size / 1e6:.2f} MB; a model page: "
          f"{os.path.getsize(tmp_path / 'models' / f'{key}.html') / 1e3:.1f} kB")
    assert size < 1_000_000
    assert (tmp_path / "index.html").read_text().count('<tr class="model"') == 1000


def test_versions_schedule_and_lora_reach_the_pages(tmp_path: Path) -> None:
    """A model with versions (one row, a versions table), a schedule's next
    stop, and a LoRA call form: each shown, each escaped like the rest."""
    stable = record("svc-alice-c.stable", suffix="canary@stable", app_name="svc-alice-c.stable",
                    spec={"weight": 80}, routed_weight=100)
    broken = record("svc-alice-c.b", suffix="canary@b", app_name="svc-alice-c.b",
                    spec={"weight": 20}, routed_weight=None, state=State.FAILED,
                    error_summary=SCRIPT)
    timed = record("svc-alice-d", suffix="timed", running_since="2025-03-01T12:01:00Z",
                   spec={"schedule": {"stop_after": "2h"},
                         "lora": {"path": "s3://adapters/alice/timed",
                                  "max_adapters_per_replica": 2}})
    records = {**RECORDS, stable.model_key: stable, broken.model_key: broken,
               timed.model_key: timed}
    publish(tmp_path, records=records, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW)
    index = (tmp_path / "index.html").read_text()
    assert index.count('data-key="svc-alice-c"') == 1  # one row for the model
    assert '<span class="version s-RUNNING" title="RUNNING">stable 100%</span>' in index
    assert '<span class="version s-FAILED" title="FAILED">b 0%</span>' in index
    assert '<div class="muted">stops <time datetime="2025-03-01T14:01:00Z">' in index
    page = (tmp_path / "models" / "svc-alice-c.html").read_text()
    versions = page.split('<h2 id="versions">')[1].split("</table>")[0]
    assert '<tr data-version="stable"><td>stable</td>' in versions
    assert '<td class="num">80</td><td class="num">100</td>' in versions  # asked, in effect
    assert '<td class="num">20</td><td class="num">0</td>' in versions
    assert "&lt;script&gt;" in versions and "<script>document" not in page
    timed_page = (tmp_path / "models" / "svc-alice-d.html").read_text()
    assert "<th>next stop</th>" in timed_page
    assert "<code>alice-202503011200-timed:&lt;adapter&gt;</code>" in timed_page
