"""The status page in a real browser: headless Chromium renders what real ticks wrote.

The status directory comes from real :class:`~servesync.converge.reconciling.Reconciler`
ticks (validation, planner, store, :class:`~servesync.status.publishing.StatusFiles`)
over the file-backed fake of Ray (tests/support/fileray.py): the page is
servesync's output, and a Ray cluster would add minutes and prove nothing
more about it. Debian's ``chromium`` (installed by ``scripts/bootstrap``)
loads ``index.html`` and a model page from ``file://`` with JavaScript on,
``--dump-dom`` gives the DOM after the page's own script ran, and
``--screenshot`` a PNG. Skipped, saying why, when no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig, SourceConfig
from servesync.converge.reconciling import Reconciler
from servesync.desired.sources import Snapshot
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.support.clock import FakeClock
from tests.support.fileray import FileRay

pytestmark = pytest.mark.e2e

PWN = "<script>document.title='pwned';document.body.dataset.pwned='1'</script>"
IMG = "\"><img src=x onerror=\"document.title='pwned-img'\">"
FILES = {
    "alice/chat.yaml": f"model_id: chat\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n"
                       f"description: {json.dumps(PWN + IMG)}\nlabels:\n  team: search\n",
    "alice/coder.yaml": "model_id: coder\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n",
    "bob/paused.yaml": "model_id: paused\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n"
                       "enabled: false\n",
    "bob/evil.yaml": f"model_id: evil\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n"
                     f"labels:\n  team: {json.dumps(PWN)}\n",  # refused: label syntax
}
WANT = {"alice-chat": "RUNNING", "alice-coder": "FAILED", "bob-paused": "STOPPED"}
WEB_URL = "https://git.example.com/org/desired/blob/{revision}/{path}#L{line}"
COMMITTED = datetime(2026, 11, 23, 4, 12, 34, tzinfo=UTC)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found (scripts/bootstrap installs Debian's `chromium` when run "
                "as root with apt): the status page's browser test needs one")


def browse(tmp: Path, url: str, *args: str) -> str:
    out = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--allow-file-access-from-files",
         "--window-size=1280,900", *args, url],
        capture_output=True, text=True, timeout=90, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def status_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A status dir written by real ticks: a model RUNNING, one FAILED, one STOPPED."""
    root = tmp_path_factory.mktemp("page")
    (root / "private" / "hf" / "tiny").mkdir(parents=True)
    for name, text in FILES.items():
        (root / "desired" / "users" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "desired" / "users" / name).write_text(text)
    config = Config(state_dir=str(root / "state"), status_dir=str(root / "status"),
                    storage_root=str(root / "private"),
                    serving=ServingConfig(accelerator_type="cpu"),
                    source=SourceConfig(path=str(root / "desired"), web_url=WEB_URL))
    ray = FileRay(root / "ray.json")
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    rec = Reconciler(config, store=Store(root / "state"), applier=ray, clock=clock,
                     publisher=StatusFiles(root / "status", config.serving, config.source))
    snap = Snapshot(root=root / "desired", revision="a" * 40, error=None, watch_paths=(),
                    committed_at=COMMITTED)
    rec.tick(snap)  # admitted and submitted: DEPLOYING in FileRay
    for _ in range(10):
        data = ray.load()
        for app in data["apps"].values():  # Ray keeps saying coder's deploy failed
            if app["public_id"].endswith("-coder"):
                app["status"] = "DEPLOY_FAILED"
        ray.save(data)
        clock.advance(3)
        rec.tick(snap)
    return root / "status"


def models(status_dir: Path) -> dict[str, dict[str, str]]:
    index = json.loads((status_dir / "index.json").read_text())
    return {f"{m['user_id']}-{m['model_id'].rsplit('-', 1)[1]}": m for m in index["models"]}


def test_the_ticks_made_one_model_of_each_state(status_dir: Path) -> None:
    assert {name: m["state"] for name, m in models(status_dir).items()} == WANT


def test_index_in_chromium(status_dir: Path, tmp_path: Path) -> None:
    dom = browse(tmp_path, (status_dir / "index.html").as_uri(), "--dump-dom")
    rows = re.findall(r'<tr class="model" data-user="([^"]+)" data-state="([^"]+)" '
                      r'data-key="([^"]+)"', dom)
    by_key = {key: (user, state) for user, state, key in rows}
    for name, m in models(status_dir).items():
        assert by_key[m["model_key"]] == (m["user_id"], WANT[name])
        assert m["model_id"] in dom
    # the hostile description and label error are on the page, as text; neither ran
    assert "<title>servesync status</title>" in dom
    assert "data-pwned" not in dom and "<img" not in dom
    assert unescape(PWN) in unescape(dom)  # shown: the description, and the error list
    assert dom.count("&lt;script&gt;document.title") >= 2
    assert 'id="errors"' in dom and "users/bob/evil.yaml" in dom
    assert '<time id="committed" datetime="2026-11-23T04:12:34Z">2026-11-23 04:12Z</time>' \
        in dom
    # the page's own script ran (CSP lets page.js run): times became "… s ago"-style
    assert re.search(r'<time class="since" datetime="[^"]+" title="[^"]+">\d+ s</time>', dom)


def test_filters_by_user_from_the_url(status_dir: Path, tmp_path: Path) -> None:
    dom = browse(tmp_path, (status_dir / "index.html").as_uri() + "#user=bob&state=",
                 "--dump-dom")
    hidden = dict(re.findall(r'<tr class="model" data-user="([^"]+)"[^>]*?( hidden="")?>', dom))
    assert hidden == {"alice": ' hidden=""', "bob": ""}


def test_model_page_in_chromium_and_screenshot(status_dir: Path, tmp_path: Path) -> None:
    chat = models(status_dir)["alice-chat"]
    page = status_dir / "models" / f"{chat['model_key']}.html"
    dom = browse(tmp_path, page.as_uri(), "--dump-dom")
    assert f"<title>{chat['model_id']} · servesync</title>" in dom
    assert '<span class="state s-RUNNING" id="state">RUNNING</span>' in dom
    assert "users/alice/chat.yaml:1" in dom
    assert (f'<a id="source-link" href="https://git.example.com/org/desired/blob/{"a" * 40}/'
            'users/alice/chat.yaml#L1" rel="noopener noreferrer">') in dom
    assert "<svg class=\"timeline\"" in dom and 'class="seg s-RUNNING"' in dom
    assert "data-pwned" not in dom and "<img" not in dom
    shot = tmp_path / "index.png"
    browse(tmp_path, (status_dir / "index.html").as_uri(), f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 900)
    assert len(png) > 20_000  # a rendered table, not a blank page (a blank one is ~5 kB)
