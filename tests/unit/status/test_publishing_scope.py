"""Whose secrets a status document is scrubbed of: its own model's env values and
the operator's ``replica_env`` values, never another tenant's; and string
values only, never keys (review 2, findings 1 and 2)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from servesync import schemas
from servesync.config import ServingConfig
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.records import ModelRecord, State
from tests.unit.status.test_publishing import OBSERVED, read, record, run

ALICE_ID = "alice-202503011200-chat"


def bob(env: dict[str, str], **changes: Any) -> ModelRecord:
    base = record("svc-bob-b", suffix="x")
    spec = {**base.spec, "user_id": "bob", "env": env, "source_file": "users/bob/b.yaml"}
    return replace(base, user_id="bob", prefix="bob-202503011200", spec=spec,
                   source_file="users/bob/b.yaml", **changes)


def valid(status_dir: Path) -> dict[str, dict[str, Any]]:
    """Every model document (schema-checked) by file stem, and the index."""
    docs = {p.stem: read(p) for p in sorted((status_dir / "models").glob("*.json"))}
    for doc in docs.values():
        schemas.validator("status-model").validate(doc)
    docs["index"] = read(status_dir / "index.json")
    schemas.validator("status-index").validate(docs["index"])
    return docs


def test_another_tenants_env_values_blank_nothing_of_alices(tmp_path: Path) -> None:
    """bob's env values equal to a field name and to alice's public id: alice's
    document keeps both (no oracle on bob's values, no blanked fields), the
    files stay schema-valid and the pages are written."""
    alice = record("svc-alice-a", spec={"description": "bobs-value-1234"})
    records = {"svc-alice-a": alice, "svc-bob-b": bob(
        {"OMP_NUM_THREADS": "model_key", "VLLM_LOGGING_LEVEL": ALICE_ID,
         "X": "bobs-value-1234", "Y": "error_summary"})}
    run(tmp_path, records)
    docs = valid(tmp_path)
    a = docs["svc-alice-a"]
    assert a["model_key"] == "svc-alice-a" and a["model_id"] == ALICE_ID
    assert a["endpoint"]["model"] == ALICE_ID
    assert a["description"] == "bobs-value-1234"
    assert "error_summary" in docs["svc-bob-b"]
    assert ALICE_ID in (tmp_path / "index.html").read_text()
    assert (tmp_path / "models" / "svc-alice-a.html").is_file()
    assert "<redacted>" not in json.dumps({k: v for k, v in a.items() if k != "engine_kwargs"})
    assert a["engine_kwargs"]["hf_token"] == "<redacted>"  # a secret-looking key's value


def test_no_oracle_on_another_tenants_env_values(tmp_path: Path) -> None:
    """A text alice writes comes back as written, whether or not it equals one
    of bob's env values; bob cannot blank alice's public id."""
    alice = record("svc-alice-a", spec={"description": "bobs-value-1234"},
                   error_summary="quoting bobs-value-1234")
    run(tmp_path, {"svc-alice-a": alice,
                   "svc-bob-b": bob({"X": "bobs-value-1234", "Y": ALICE_ID})})
    docs = valid(tmp_path)
    a = docs["svc-alice-a"]
    assert (a["description"], a["error_summary"]) == ("bobs-value-1234",
                                                      "quoting bobs-value-1234")
    assert a["model_id"] == a["endpoint"]["model"] == ALICE_ID
    line = next(m for m in docs["index"]["models"] if m["model_key"] == "svc-alice-a")
    assert (line["model_id"], line["description"]) == (ALICE_ID, "bobs-value-1234")


def test_a_models_own_env_values_are_still_scrubbed_from_its_document(tmp_path: Path) -> None:
    quoted = "Ray: input_value={'X': 'bobs-value-1234'}"
    b = bob({"X": "bobs-value-1234"}, error_summary=quoted)
    observed = Observed(apps={**OBSERVED.apps, "svc-bob-b": AppObservation(
        "svc-bob-b", AppStatus.DEPLOY_FAILED, quoted, 0)})
    run(tmp_path, {"svc-alice-a": record("svc-alice-a"), "svc-bob-b": b}, observed=observed)
    docs = valid(tmp_path)
    assert docs["svc-bob-b"]["error_summary"] == "Ray: input_value={'X': '<redacted>'}"
    assert docs["svc-bob-b"]["serve_status"]["message"] == "Ray: input_value={'X': '<redacted>'}"
    assert "bobs-value-1234" not in (tmp_path / "index.json").read_text()
    assert "bobs-value-1234" not in (tmp_path / "models" / "svc-bob-b.html").read_text()


def test_keys_are_never_rewritten_and_the_files_keep_their_key(tmp_path: Path) -> None:
    """A model's own env value equal to a field name or its own model key: the
    document keeps its shape, and its JSON file and page keep their names."""
    alice = record("svc-alice-a", spec={"env": {"A": "model_key", "B": "svc-alice-a",
                                                "C": "serve_status"}})
    run(tmp_path, {"svc-alice-a": alice})
    docs = valid(tmp_path)
    a = docs["svc-alice-a"]
    assert a["model_key"] == "svc-alice-a"
    assert a["serve_status"]["app_name"] == "<redacted>"  # a value: scrubbed as asked
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "svc-alice-a.html", "svc-alice-a.json"]
    assert docs["index"]["models"][0]["model_key"] == "svc-alice-a"
    assert 'href="models/svc-alice-a.html"' in (tmp_path / "index.html").read_text()


def test_the_operators_replica_env_values_are_scrubbed_from_every_document(
        tmp_path: Path) -> None:
    secret = "operator-secret-value"
    serving = ServingConfig(http_port=8123, replica_env={"K": secret})
    observed = Observed(apps={**OBSERVED.apps, "svc-bob-b": AppObservation(
        "svc-bob-b", AppStatus.DEPLOY_FAILED, f"runtime_env K={secret}", 0)})
    run(tmp_path, {"svc-alice-a": record("svc-alice-a", error_summary=f"x {secret}"),
                   "svc-bob-b": bob({})},
        observed=observed, serving=serving, source_error=f"git: {secret}")
    for path in [*(tmp_path / "models").iterdir(), tmp_path / "index.json",
                 tmp_path / "index.html"]:
        assert secret not in path.read_text(), path.name
    assert valid(tmp_path)["svc-bob-b"]["serve_status"]["message"] == "runtime_env K=<redacted>"


def test_a_versioned_document_is_scrubbed_of_its_versions_env_values_only(
        tmp_path: Path) -> None:
    """One document for a model's versions (here with its plain record turning
    into them): a version's own env values are taken out of it, bob's are not."""
    key = "svc-alice-20250301-120000-1a2b"
    stable = record(key + ".stable", suffix="chat@stable", state=State.FAILED,
                    spec={"weight": 100, "version": "stable", "env": {"A": "version-env-value"}},
                    error_summary="quoting version-env-value and bobs-value-1234")
    run(tmp_path, {key: record(key), key + ".stable": stable,
                   "svc-bob-b": bob({"X": "bobs-value-1234"})})
    doc = read(tmp_path / "models" / f"{key}.json")
    assert doc["error_summary"].startswith("stable: quoting <redacted> and bobs-value-1234")
    assert "version-env-value" not in json.dumps(doc)
