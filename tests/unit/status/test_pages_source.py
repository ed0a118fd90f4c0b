"""The status page and the desired state's repository: the revision's commit
time on the cluster's line, and the model page's file-and-line link
(``source.web_url``), escaped whatever the file is called."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from servesync import schemas
from servesync.config import Config, SourceConfig
from servesync.converge import scheduling
from servesync.converge.reconciling import Reconciler
from servesync.desired.sources import open_source
from servesync.errors import ConfigError
from servesync.state.store import Store
from servesync.status import pages
from servesync.status.publishing import Memo, StatusFiles, publish
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay
from tests.support.gitrepos import git, init_repo
from tests.unit.status.test_pages import tags
from tests.unit.status.test_publishing import NOW, OBSERVED, RECORDS, SERVING, SHA1, SHA2, record

WEB_URL = "https://git.example.com/org/desired/blob/{revision}/{path}#L{line}"
MODEL = "model_id: chat\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n" \
        "cpus_per_replica: 1\n"


def test_the_index_shows_when_the_applied_revision_was_committed(
        cpu_config: Config, tmp_path: Path) -> None:
    """A real repository, the real GitSource and a real tick: the committer time
    reaches index.json (in UTC, with a Z) and the cluster's line of index.html;
    the model page links its file and line at that commit."""
    repo = init_repo(tmp_path / "repo")
    (repo / "ds" / "users" / "alice").mkdir(parents=True)
    (repo / "ds" / "users" / "alice" / "chat.yaml").write_text("# the chat model\n" + MODEL)
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", "chat",
        env={"GIT_COMMITTER_DATE": "2026-11-23T05:12:34+01:00"})
    sha = git(repo, "rev-parse", "HEAD")
    config = replace(cpu_config, source=SourceConfig(path=str(repo), subpath="ds",
                                                     web_url=WEB_URL))
    snap = open_source(config).refresh()
    status = Path(config.status_dir)
    rec = Reconciler(config, store=Store(Path(config.state_dir)), applier=FakeRay(),
                     clock=FakeClock(NOW), publisher=StatusFiles(status, config.serving,
                                                                 config.source))
    rec.tick(snap)
    index = json.loads((status / "index.json").read_text())
    schemas.validator("status-index").validate(index)
    assert (index["revision"], index["revision_committed_at"]) == (sha, "2026-11-23T04:12:34Z")
    html = (status / "index.html").read_text()
    assert '<time id="committed" datetime="2026-11-23T04:12:34Z">2026-11-23 04:12Z</time>' \
        in html
    (model,) = index["models"]
    page = (status / "models" / f"{model['model_key']}.html").read_text()
    links = [a for t, a in tags(page) if t == "a" and a.get("id") == "source-link"]
    assert links == [{"id": "source-link", "rel": "noopener noreferrer",
                      "href": f"https://git.example.com/org/desired/blob/{sha}/"
                              "ds/users/alice/chat.yaml#L2"}]


def test_a_plain_folder_has_no_commit_time(tmp_path: Path) -> None:
    publish(tmp_path, records=RECORDS, desired=None, observed=OBSERVED, tick=1,
            revision=None, source_error=None, serving=SERVING, now=NOW)
    index = json.loads((tmp_path / "index.json").read_text())
    schemas.validator("status-index").validate(index)
    assert index["revision_committed_at"] is None
    assert 'id="committed"' not in (tmp_path / "index.html").read_text()


HOSTILE_FILE = "users/alice/\"><script>alert(1)</script>'javascript:alert(1) #?.yaml"


def link_of(status_dir: Path, key: str) -> tuple[list[dict[str, str | None]], str]:
    page = (status_dir / "models" / f"{key}.html").read_text()
    return [a for t, a in tags(page) if t == "a" and a.get("id") == "source-link"], page


def test_the_link_is_quoted_and_escaped_whatever_the_file_is_called(tmp_path: Path) -> None:
    hostile = record("svc-alice-x", suffix="x", source_file=HOSTILE_FILE, spec={"line": 7})
    memo = Memo(pages=pages.Pages(tmp_path, link=pages.SourceLink(WEB_URL, "ds")))
    publish(tmp_path, records={"svc-alice-x": hostile}, desired=None, observed=OBSERVED,
            tick=1, revision=SHA1, source_error=None, serving=SERVING, now=NOW, memo=memo)
    links, page = link_of(tmp_path, "svc-alice-x")
    assert links == [{"id": "source-link", "rel": "noopener noreferrer", "href": (
        f"https://git.example.com/org/desired/blob/{SHA1}/ds/users/alice/"
        "%22%3E%3Cscript%3Ealert%281%29%3C/script%3E%27javascript%3Aalert%281%29%20%23%3F.yaml"
        "#L7")}]
    assert [a for t, a in tags(page) if t == "script"] == [{"src": "../page.js", "defer": None}]
    assert "<script>alert" not in page
    assert f'<code id="source">{HOSTILE_FILE}:7</code>' in unescape(page)  # shown, as text


def test_no_link_without_web_url_or_without_a_value_for_a_placeholder(tmp_path: Path) -> None:
    publish(tmp_path / "plain", records=RECORDS, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW)
    assert link_of(tmp_path / "plain", "svc-alice-a")[0] == []
    folder = record("svc-alice-a", applied_revision=None, attempted_revision=None)
    memo = Memo(pages=pages.Pages(tmp_path, link=pages.SourceLink(WEB_URL)))
    publish(tmp_path, records={"svc-alice-a": folder}, desired=None, observed=OBSERVED,
            tick=1, revision=None, source_error=None, serving=SERVING, now=NOW, memo=memo)
    links, page = link_of(tmp_path, "svc-alice-a")
    assert links == [] and '<code id="source">users/alice/models.yaml:1</code>' in page
    link = pages.SourceLink("https://files.example.com/desired/{path}")  # needs no revision
    assert link.url("users/a b.yaml", revision=None, line=None) == \
        "https://files.example.com/desired/users/a%20b.yaml"


@pytest.mark.parametrize("template", ["javascript:alert(1)//{path}", "data:text/html,{path}",
                                      "//evil.example/{path}", "https:///{path}",
                                      "https://{path}/x"])
def test_a_link_template_that_is_not_http_is_refused(template: str) -> None:
    with pytest.raises(ConfigError, match="must be an http:// or https:// URL template"):
        pages.SourceLink(template)


def test_a_row_is_rendered_only_when_its_values_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One cache of rendered rows (the memo's): a model whose document changed
    but whose row did not (a new event) is not rendered again, nor the index."""
    memo = Memo()
    publish(tmp_path, records=RECORDS, desired=None, observed=OBSERVED, tick=1,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW, memo=memo)
    rendered: list[str] = []
    real_row, real_index = pages.Pages.row, pages.Pages.render_index

    def row(self: pages.Pages, values: Any) -> pages.Row:
        rendered.append(values["model_key"])
        return real_row(self, values)

    def render_index(self: pages.Pages, *a: Any, **kw: Any) -> bytes:
        rendered.append("index")
        return real_index(self, *a, **kw)

    monkeypatch.setattr(pages.Pages, "row", row)
    monkeypatch.setattr(pages.Pages, "render_index", render_index)
    a = RECORDS["svc-alice-a"]
    evented = {**RECORDS, "svc-alice-a": replace(a, events=(*a.events, replace(
        a.events[0], at="2025-03-01T12:02:00Z", message="looked again")))}
    publish(tmp_path, records=evented, desired=None, observed=OBSERVED, tick=2,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW, memo=memo)
    assert rendered == []  # its page was rewritten (the event), not its row nor the index
    assert "looked again" in (tmp_path / "models" / "svc-alice-a.html").read_text()
    failed = {**evented, "svc-alice-a": replace(evented["svc-alice-a"], error_summary="oom")}
    publish(tmp_path, records=failed, desired=None, observed=OBSERVED, tick=3,
            revision=SHA1, source_error=None, serving=SERVING, now=NOW, memo=memo)
    assert rendered == ["svc-alice-a", "index"]
    assert '<td class="error">oom</td>' in (tmp_path / "index.html").read_text()


@pytest.fixture
def far_east() -> Iterator[None]:
    """The process's local time zone is UTC+8 for the test."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    mp.undo()
    time.tzset()


@pytest.mark.usefixtures("far_east")
def test_one_iso_for_every_time_shown_naive_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert scheduling.iso(naive) == scheduling.iso(NOW) == "2025-03-01T12:00:00Z"
    t = pages.timeline([], naive, hours=1)
    assert (t.start, t.end) == ("2025-03-01T11:00:00Z", "2025-03-01T12:00:00Z")


def test_a_versioned_models_link_takes_line_and_revision_from_one_record(
        tmp_path: Path) -> None:
    """The versions were submitted at different revisions (only canary changed
    at SHA2, where the document moved to line 9): the link is to SHA2's line 9,
    never to SHA1 with SHA2's line (nor missing because the revisions differ)."""
    key = "svc-alice-20250301-120000-1a2b"
    stable = record(key + ".stable", suffix="chat@stable", attempted_revision=SHA1,
                    applied_revision=SHA1, spec={"weight": 50, "version": "stable", "line": 4})
    canary = record(key + ".canary", suffix="chat@canary", attempted_revision=SHA2,
                    applied_revision=SHA2, updated_at="2025-03-01T12:05:00Z",
                    spec={"weight": 50, "version": "canary", "line": 9})
    memo = Memo(pages=pages.Pages(tmp_path, link=pages.SourceLink(WEB_URL)))
    publish(tmp_path, records={r.model_key: r for r in (stable, canary)}, desired=None,
            observed=OBSERVED, tick=1, revision=SHA2, source_error=None, serving=SERVING,
            now=NOW, memo=memo)
    links, _ = link_of(tmp_path, key)
    assert [a["href"] for a in links] == [
        f"https://git.example.com/org/desired/blob/{SHA2}/users/alice/models.yaml#L9"]


def test_a_failed_index_page_write_is_written_again_at_the_next_tick(tmp_path: Path) -> None:
    """index.json was written, index.html was not (disk full): the next tick,
    with nothing else changed, writes the page with the new revision."""
    memo = Memo(pages=pages.Pages(tmp_path))
    kw: dict[str, Any] = {"records": {}, "desired": None, "observed": OBSERVED,
                          "source_error": None, "serving": SERVING, "now": NOW, "memo": memo}
    publish(tmp_path, tick=1, revision=SHA1, **kw)
    assert memo.pages is not None
    real = memo.pages.write_index

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    memo.pages.write_index = full  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space"):
        publish(tmp_path, tick=2, revision=SHA2, **kw)
    memo.pages.write_index = real  # type: ignore[method-assign]
    publish(tmp_path, tick=3, revision=SHA2, **kw)
    assert SHA2[:12] in (tmp_path / "index.html").read_text()
