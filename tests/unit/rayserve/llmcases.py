"""What the llmconfigs tests share: a public id, the serving configs and one
spec factory (each test file sets its own fields on top)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from servesync.config import ServingConfig
from servesync.desired.specs import ModelSpec

PUBLIC_ID = "alice-202501011200-chat"
CPU = ServingConfig(accelerator_type="cpu")
GPU = ServingConfig(accelerator_type="gpu")


def spec(**changes: Any) -> ModelSpec:
    """alice's ``chat``: 2 replicas of 1 GPU and 4 CPUs, ``max_model_len``
    4096; ``changes`` on top."""
    base = ModelSpec(user_id="alice", suffix="chat", model_source="$HOME/m",
                     resolved_source="/private/users/alice/m", num_replicas=2,
                     autoscaling=None, gpus_per_replica=1, cpus_per_replica=4,
                     engine_kwargs={"max_model_len": 4096})
    return replace(base, **changes)
