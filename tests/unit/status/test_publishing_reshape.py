"""A model turning into versions: its plain record and its versions share the
key (the versions' stem), so they make one status document, written once per
change, whose state is what serves (the plain model until a version runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servesync.converge.observed import Observed
from servesync.converge.records import State
from servesync.status import publishing
from servesync.status.publishing import Memo, publish
from tests.unit.status.test_publishing import NOW, SERVING, record

K = "svc-alice-20250301-120000-1a2b"


def test_a_plain_model_and_its_new_versions_publish_one_document(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = record(K, suffix="chat")
    stable = record(K + ".stable", suffix="chat@stable", state=State.DEPLOYING,
                    spec={"weight": 100, "version": "stable"})
    writes: list[str] = []
    real = publishing.atomic_write

    def spy(path: Any, data: Any, **kw: Any) -> None:
        writes.append(Path(path).name)
        real(path, data, **kw)

    monkeypatch.setattr(publishing, "atomic_write", spy)
    memo = Memo()

    def tick(n: int, records: dict[str, Any]) -> list[str]:
        writes.clear()
        publish(tmp_path, records=records, desired=None, observed=Observed(reachable=True),
                tick=n, revision=None, source_error=None, serving=SERVING, now=NOW, memo=memo)
        return sorted(writes)

    records = {K: plain, K + ".stable": stable}
    tick(1, records)
    for n in (2, 3):  # idle: nothing written
        assert tick(n, records) == []
    index = json.loads((tmp_path / "index.json").read_text())
    assert [(m["model_key"], m["state"]) for m in index["models"]] == [(K, "RUNNING")]
    doc = json.loads((tmp_path / "models" / f"{K}.json").read_text())
    assert doc["state"] == "RUNNING" and "versions" in doc
    assert [v["name"] for v in doc["versions"]] == ["stable"]
    assert "serves until a version runs" in doc["error_summary"]

    # the version runs, the plain record goes: the one file is written at most once a change
    running = {K: plain, K + ".stable": record(
        K + ".stable", suffix="chat@stable", spec={"weight": 100, "version": "stable"})}
    assert tick(4, running).count(f"{K}.json") == 1
    assert tick(5, running) == []
    assert tick(6, {K + ".stable": running[K + ".stable"]}).count(f"{K}.json") <= 1
    assert tick(7, {K + ".stable": running[K + ".stable"]}) == []
    doc = json.loads((tmp_path / "models" / f"{K}.json").read_text())
    assert doc["state"] == "RUNNING" and not doc["error_summary"]
