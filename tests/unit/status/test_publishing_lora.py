"""Status files show issue 11's LoRA adapters: the path, the count and the call
form ``<public id>:<adapter>``; null for a model without; valid against the schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from servesync import schemas
from servesync.config import ServingConfig
from servesync.converge.observed import AppStatus
from servesync.desired.specs import Lora
from servesync.status.publishing import publish
from tests.unit.converge.plancases import observed, record, spec

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_the_model_file_shows_the_lora_path_and_how_to_call_an_adapter(
        tmp_path: Path) -> None:
    with_lora = record(spec("tuned", lora=Lora("s3://adapters/alice/tuned", 2)))
    plain = record(spec("plain"))
    recs = {r.model_key: r for r in (with_lora, plain)}
    publish(tmp_path, records=recs, desired=None,
            observed=observed(*((r, AppStatus.RUNNING) for r in recs.values())),
            tick=1, revision="r1", source_error=None, serving=ServingConfig(), now=NOW)
    docs = {}
    for key, rec in recs.items():
        doc = json.loads((tmp_path / "models" / f"{key}.json").read_text())
        schemas.validator("status-model").validate(doc)
        docs[rec.suffix] = doc
    assert docs["tuned"]["lora"] == {"path": "s3://adapters/alice/tuned",
                                     "max_adapters_per_replica": 2,
                                     "call_as": f"{with_lora.public_id}:<adapter>"}
    assert docs["plain"]["lora"] is None
