"""Status files show issue 10's knobs: description and labels (model file and
index), total_gpus = tensor x pipeline x replicas, parallelism, memory, GPU
types and rollout; both files stay valid against their schemas."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from servesync import schemas
from servesync.config import ServingConfig
from servesync.converge.observed import AppStatus
from servesync.desired.specs import Parallelism, Rollout
from servesync.status.publishing import publish
from tests.unit.converge.plancases import observed, record, spec

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KNOBS = spec("big", num_replicas=3, gpus_per_replica=16, parallelism=Parallelism(8, 2),
             memory_gb_per_replica=256, min_compute_capability="9.0",
             accelerators=("H100", "H20"),
             rollout=Rollout(max_surge_percent=0, deploy_timeout_s=1800),
             description="the big one, for team search",
             labels={"team": "search", "example.com/tier": "prod"})
PLAIN = spec("small")


def _publish(tmp_path: Path) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    recs = {r.model_key: r for r in (record(KNOBS), record(PLAIN))}
    publish(tmp_path, records=recs, desired=None,
            observed=observed(*((r, AppStatus.RUNNING) for r in recs.values())),
            tick=1, revision="r1", source_error=None, serving=ServingConfig(), now=NOW)
    index = json.loads((tmp_path / "index.json").read_text())
    schemas.validator("status-index").validate(index)
    models = {}
    for key, rec in recs.items():
        doc = json.loads((tmp_path / "models" / f"{key}.json").read_text())
        schemas.validator("status-model").validate(doc)
        models[rec.suffix] = doc
    return index, models


def test_the_knobs_are_in_the_model_file(tmp_path: Path) -> None:
    _, models = _publish(tmp_path)
    big = models["big"]
    assert {k: big[k] for k in (
        "num_replicas", "gpus_per_replica", "total_gpus", "parallelism",
        "memory_gb_per_replica", "accelerator_type", "min_compute_capability",
        "accelerator_types", "rollout", "description", "labels")} == {
        "num_replicas": 3, "gpus_per_replica": 16, "total_gpus": 48,
        "parallelism": {"tensor": 8, "pipeline": 2}, "memory_gb_per_replica": 256,
        "accelerator_type": None, "min_compute_capability": "9.0",
        "accelerator_types": ["H100", "H20"],
        "rollout": {"max_surge_percent": 0, "deploy_timeout_s": 1800},
        "description": "the big one, for team search",
        "labels": {"example.com/tier": "prod", "team": "search"}}


def test_a_model_without_knobs_shows_the_defaults(tmp_path: Path) -> None:
    _, models = _publish(tmp_path)
    small = models["small"]
    assert {k: small[k] for k in (
        "total_gpus", "parallelism", "memory_gb_per_replica", "accelerator_types", "rollout",
        "description", "labels")} == {
        "total_gpus": 1, "parallelism": {"tensor": 1, "pipeline": 1},
        "memory_gb_per_replica": None, "accelerator_types": [], "rollout": {},
        "description": None, "labels": {}}


def test_the_index_lets_people_find_models_by_description_and_labels(tmp_path: Path) -> None:
    index, _ = _publish(tmp_path)
    lines = {m["model_id"].rsplit("-", 1)[-1]: (m["description"], m["labels"], m["total_gpus"])
             for m in index["models"]}  # type: ignore[attr-defined]
    assert lines == {
        "small": (None, {}, 1),
        "big": ("the big one, for team search", {"example.com/tier": "prod", "team": "search"},
                48)}


def test_a_cpu_model_split_in_stages_has_no_gpus(tmp_path: Path) -> None:
    cpu = replace(PLAIN, gpus_per_replica=0, parallelism=Parallelism(1, 2))
    recs = {record(cpu).model_key: record(cpu)}
    publish(tmp_path, records=recs, desired=None, observed=observed(), tick=1, revision="r1",
            source_error=None, serving=ServingConfig(accelerator_type="cpu"), now=NOW)
    [doc] = [json.loads(p.read_text()) for p in (tmp_path / "models").glob("*.json")]
    schemas.validator("status-model").validate(doc)
    assert (doc["total_gpus"], doc["parallelism"]) == (0, {"tensor": 1, "pipeline": 2})
