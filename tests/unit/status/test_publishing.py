"""The status files: schema-valid, atomic, minimal rewrites, no secrets, readable table."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import servesync
from servesync import schemas
from servesync.config import ServingConfig
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.records import Event, EventKind, ModelRecord, State
from servesync.desired.specs import DesiredState, DocumentResult, FileResult
from servesync.errors import Issue, IssueCode
from servesync.status.publishing import publish
from servesync.status.reading import StatusFileError, load_index, render_table

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SHA1, SHA2 = "1" * 40, "2" * 40
SERVING = ServingConfig(http_port=8123)
SECRET = "hf_verysecretvalue123"


def record(key: str, *, suffix: str = "chat", **changes: Any) -> ModelRecord:
    spec = {
        "user_id": "alice", "model_id": suffix, "model_source": "/private/alice/llama",
        "model_source_written": "$STORAGE/alice/llama", "num_replicas": 2,
        "autoscaling": None, "gpus_per_replica": 1, "cpus_per_replica": 4.0,
        "engine_kwargs": {"max_model_len": 4096, "hf_token": SECRET, "extra": [SECRET],
                          "max_num_batched_tokens": 512, "tokenizer_mode": "auto"},
        "env": {"HF_TOKEN": SECRET, "OTHER": "plain-value"},
        "enabled": True, "source_file": "users/alice/models.yaml", "line": 1,
    }
    spec.update(changes.pop("spec", {}))
    rec = ModelRecord(
        model_key=key, user_id="alice", suffix=suffix, prefix="alice-202503011200",
        app_name=key, spec_hash="abcdef0123456789", spec=spec, state=State.RUNNING,
        source_file="users/alice/models.yaml", applied_revision=SHA1,
        attempted_revision=SHA1, applied_hash="abcdef0123456789",
        created_at="2025-03-01T12:00:00Z", updated_at="2025-03-01T12:01:00Z",
        events=(Event(at="2025-03-01T12:01:00Z", kind=EventKind.RUNNING, revision=SHA1),),
    )
    return replace(rec, **changes)


RECORDS = {
    "svc-alice-a": record("svc-alice-a"),
    "svc-alice-b": record(
        "svc-alice-b", suffix="coder", state=State.FAILED, attempted_revision=SHA2,
        error_summary="DEPLOY_FAILED: out of\nGPU memory",
        spec={"num_replicas": None, "autoscaling": {
            "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8.0}},
    ),
}
OBSERVED = Observed(apps={
    "svc-alice-a": AppObservation("svc-alice-a", AppStatus.RUNNING, running_replicas=2),
    "svc-alice-b": AppObservation("svc-alice-b", AppStatus.DEPLOY_FAILED, "oom", 0),
})
BAD = Issue(IssueCode.FORBIDDEN, "users/bob/x.yaml", 3, "/env/LD_PRELOAD", "env name denied")
DESIRED = DesiredState(revision=SHA2, files=(
    FileResult(path="users/bob/x.yaml", user_id="bob",
               documents=(DocumentResult(index=0, line=1, model_id="x", issues=(BAD,)),)),
))


def run(status_dir: Path, records: dict[str, ModelRecord] | None = None, **kw: Any) -> None:
    args: dict[str, Any] = {
        "records": RECORDS if records is None else records, "desired": DESIRED,
        "observed": OBSERVED, "tick": 7, "revision": SHA2, "source_error": None,
        "serving": SERVING, "now": NOW,
    }
    publish(status_dir, **{**args, **kw})


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_files_validate_against_their_schemas(tmp_path: Path) -> None:
    run(tmp_path)
    index = read(tmp_path / "index.json")
    schemas.validator("status-index").validate(index)
    for key in RECORDS:
        schemas.validator("status-model").validate(read(tmp_path / "models" / f"{key}.json"))
    assert [m["model_key"] for m in index["models"]] == sorted(RECORDS)


def test_index_content(tmp_path: Path) -> None:
    run(tmp_path, source_error="refused unsigned commit 222")
    index = read(tmp_path / "index.json")
    assert index["generated_at"] == "2025-03-01T12:00:00Z"
    assert index["servesync_version"] == servesync.__version__
    assert (index["tick"], index["revision"]) == (7, SHA2)
    assert index["source_error"] == "refused unsigned commit 222"
    assert index["openai_base_url"] == "http://127.0.0.1:8123/v1"
    assert index["errors"] == [{"path": "users/bob/x.yaml", "line": 3, "code": 403,
                                "pointer": "/env/LD_PRELOAD", "message": "env name denied"}]
    a = index["models"][0]
    assert (a["model_id"], a["num_replicas"], a["total_gpus"]) == (
        "alice-202503011200-chat", 2, 2)


def test_model_file_content(tmp_path: Path) -> None:
    run(tmp_path)
    b = read(tmp_path / "models" / "svc-alice-b.json")
    assert b["model_id"] == "alice-202503011200-coder"
    assert b["endpoint"] is None  # FAILED, never ran: nothing a client can call
    a = read(tmp_path / "models" / "svc-alice-a.json")  # RUNNING: routed by the gateway
    assert a["endpoint"] == {"openai_base_url": "http://127.0.0.1:8123/v1",
                             "model": a["model_id"], "aliases": []}
    assert a["aliases"] == []  # a record from before aliases reads as none
    assert b["serve_status"] == {"app_name": "svc-alice-b", "app_status": "DEPLOY_FAILED",
                                 "message": "oom", "running_replicas": 0}
    assert b["autoscaling"]["max_replicas"] == 3
    assert (b["num_replicas"], b["total_gpus"]) == (0, 0)  # autoscaling: what runs
    assert b["model_source"] == "$STORAGE/alice/llama"
    assert b["events"][0]["kind"] == "RUNNING"


def test_aliases_show_as_declared_and_as_routed(tmp_path: Path) -> None:
    """``aliases``: the recorded spec's, as written; ``endpoint.aliases``: only
    the names the gateway surely routes (the record's ``routed_aliases``)."""
    a = record("svc-alice-a", spec={"aliases": ["chat", "prod"]},
               routed_aliases=("alice-chat",))
    b = record("svc-alice-b", spec={"aliases": ["coder"]}, routed_aliases=("alice-coder",),
               state=State.STOPPED, enabled=False)
    run(tmp_path, records={"svc-alice-a": a, "svc-alice-b": b})
    a_doc = read(tmp_path / "models" / "svc-alice-a.json")
    schemas.validator("status-model").validate(a_doc)
    assert a_doc["aliases"] == ["chat", "prod"]
    assert a_doc["endpoint"]["aliases"] == ["alice-chat"]  # prod: not routed yet
    b_doc = read(tmp_path / "models" / "svc-alice-b.json")
    assert b_doc["aliases"] == ["coder"] and b_doc["endpoint"] is None  # stopped: not callable


def test_ray_unreachable_shows_unknown_status(tmp_path: Path) -> None:
    run(tmp_path, observed=Observed(reachable=False))
    b = read(tmp_path / "models" / "svc-alice-b.json")
    assert b["serve_status"]["app_status"] is None
    assert b["num_replicas"] == 1  # autoscaling minimum when nothing is known
    assert read(tmp_path / "index.json")["ray_reachable"] is False
    assert "not reachable" in render_table(tmp_path)


def test_while_ray_is_unreachable_no_model_is_published_running(tmp_path: Path) -> None:
    """A model recorded RUNNING shows UNKNOWN (schema-valid) while Ray does not
    answer, other states stay; the record given to publish is not changed."""
    run(tmp_path, observed=Observed(reachable=False, error="Ray GCS unreachable"))
    index = read(tmp_path / "index.json")
    states = {m["model_key"]: m["state"] for m in index["models"]}
    assert states == {"svc-alice-a": "UNKNOWN", "svc-alice-b": "FAILED"}
    assert read(tmp_path / "models" / "svc-alice-a.json")["state"] == "UNKNOWN"
    schemas.validator("status-index").validate(index)
    schemas.validator("status-model").validate(read(tmp_path / "models" / "svc-alice-a.json"))
    assert RECORDS["svc-alice-a"].state is State.RUNNING
    run(tmp_path)  # Ray answers again: RUNNING again
    assert read(tmp_path / "models" / "svc-alice-a.json")["state"] == "RUNNING"


def test_no_env_values_or_secrets_leak(tmp_path: Path) -> None:
    run(tmp_path)
    files = [tmp_path / "index.json", *sorted((tmp_path / "models").iterdir())]
    for path in files:
        text = path.read_text()
        assert SECRET not in text
        assert "plain-value" not in text
    a = read(tmp_path / "models" / "svc-alice-a.json")
    assert a["env_names"] == ["HF_TOKEN", "OTHER"]
    assert a["engine_kwargs"] == {"max_model_len": 4096, "hf_token": "<redacted>",
                                  "extra": ["<redacted>"], "max_num_batched_tokens": 512,
                                  "tokenizer_mode": "auto"}


def test_env_values_quoted_by_ray_and_url_credentials_are_scrubbed(tmp_path: Path) -> None:
    """Ray's messages and recorded errors may quote a deployment's config."""
    quoted = f"pydantic: input_value={{'OTHER': 'plain-value', 'HF_TOKEN': '{SECRET}'}}"
    rec = record("svc-alice-a", state=State.FAILED, error_summary=quoted, spec={
        "engine_kwargs": {"tool_call_parser": "https://bot:pa55word@host/x", "x": f"a {SECRET}"},
    })
    observed = Observed(apps={"svc-alice-a": AppObservation(
        "svc-alice-a", AppStatus.DEPLOY_FAILED, f"replica died: {quoted}", 0)})
    run(tmp_path, {"svc-alice-a": rec}, observed=observed,
        source_error="git source https://bot:pa55word@host/x (main): failed")
    for path in (tmp_path / "index.json", tmp_path / "models" / "svc-alice-a.json"):
        text = path.read_text()
        assert all(s not in text for s in (SECRET, "plain-value", "pa55word")), text
    a = read(tmp_path / "models" / "svc-alice-a.json")
    assert a["engine_kwargs"] == {"tool_call_parser": "https://***@host/x", "x": "a <redacted>"}
    assert a["error_summary"] == \
        "pydantic: input_value={'OTHER': '<redacted>', 'HF_TOKEN': '<redacted>'}"


def test_status_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        run(tmp_path)
        run(tmp_path, records={"svc-alice-a": record("svc-alice-a", error_summary="new")})
    finally:
        os.umask(old)
    for path in (tmp_path / "index.json", tmp_path / "models" / "svc-alice-a.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_stale_model_files_are_removed(tmp_path: Path) -> None:
    run(tmp_path)
    run(tmp_path, records={"svc-alice-b": RECORDS["svc-alice-b"]})
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "svc-alice-b.html", "svc-alice-b.json"]
    assert [m["model_key"] for m in read(tmp_path / "index.json")["models"]] == ["svc-alice-b"]


def test_unchanged_model_files_are_not_rewritten(tmp_path: Path) -> None:
    run(tmp_path)
    a, b = (tmp_path / "models" / f"{k}.json" for k in ("svc-alice-a", "svc-alice-b"))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (a, b)}
    changed = {**RECORDS, "svc-alice-b": replace(RECORDS["svc-alice-b"], error_summary="new")}
    run(tmp_path, records=changed, tick=8, now=NOW + timedelta(seconds=30))
    assert (a.stat().st_ino, a.stat().st_mtime_ns) == before[a]
    assert b.stat().st_ino != before[b][0]
    assert read(tmp_path / "index.json")["tick"] == 8


def test_no_temp_files_left_and_leftovers_cleaned(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / ".index.json.tmp-1-aa").write_text("{")
    (tmp_path / "models" / ".svc-x.json.tmp-1-bb").write_text("{")
    run(tmp_path)
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == ["index.html", "index.json", "models", "page.css", "page.js",
                     "svc-alice-a.html", "svc-alice-a.json", "svc-alice-b.html",
                     "svc-alice-b.json"]


def test_unsafe_model_key_is_not_used_as_a_path(tmp_path: Path) -> None:
    evil = record("../../etc/evil")
    run(tmp_path / "status", records={"../../etc/evil": evil})
    assert not (tmp_path / "etc").exists()
    assert read(tmp_path / "status" / "index.json")["models"] == []


def test_without_desired_state_there_are_no_file_errors(tmp_path: Path) -> None:
    run(tmp_path, desired=None, source_error="git fetch failed")
    index = read(tmp_path / "index.json")
    schemas.validator("status-index").validate(index)
    assert index["errors"] == []


def test_render_table(tmp_path: Path) -> None:
    run(tmp_path, source_error="git fetch failed")
    lines = render_table(tmp_path).splitlines()
    assert lines[0].startswith("tick 7  revision 2222222  at 2025-03-01T12:00:00Z")
    assert lines[1] == "source error: git fetch failed"
    assert lines[2].split() == ["ID", "STATE", "REPLICAS", "REVISION", "ERROR"]
    assert lines[3].split() == ["alice-202503011200-chat", "RUNNING", "2", "1111111", "-"]
    assert lines[4].split()[:4] == ["alice-202503011200-coder", "FAILED", "0",
                                    "1111111->2222222"]
    assert lines[4].endswith("DEPLOY_FAILED: out of GPU memory")
    assert lines[2].index("STATE") == lines[3].index("RUNNING")  # aligned columns
    assert lines[5] == "1 desired-state error(s):"
    assert lines[6] == "  users/bob/x.yaml:3: 403 /env/LD_PRELOAD: env name denied"


def test_render_table_shows_the_revisions_commit_time(tmp_path: Path) -> None:
    run(tmp_path, committed_at=datetime(2025, 3, 1, 11, 58, 30, tzinfo=UTC))
    assert render_table(tmp_path).splitlines()[0].startswith(
        "tick 7  revision 2222222 (committed 2025-03-01T11:58:30Z)  at 2025-03-01T12:00:00Z")


def test_render_table_without_models(tmp_path: Path) -> None:
    run(tmp_path, records={}, desired=None)
    assert "(no models)" in render_table(tmp_path)


def test_load_index_errors(tmp_path: Path) -> None:
    with pytest.raises(StatusFileError, match="no status yet"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text("{half")
    with pytest.raises(StatusFileError, match="unreadable"):
        load_index(tmp_path)


def test_unmanaged_apps_are_reported_not_ours(tmp_path: Path) -> None:
    observed = Observed(apps={
        **OBSERVED.apps,
        "servesync-gateway": AppObservation("servesync-gateway", AppStatus.RUNNING),
        "by-hand": AppObservation("by-hand", AppStatus.RUNNING),
    })
    run(tmp_path, observed=observed)
    index = read(tmp_path / "index.json")
    schemas.validator("status-index").validate(index)
    assert index["unmanaged_apps"] == ["by-hand"]
