"""Issue 11's LoRA adapters reach Ray: the LLMConfig kwargs of a model with
``lora`` (``lora_config``, and vLLM's ``enable_lora`` / ``max_loras``), what
Ray's own pydantic ``LLMConfig`` makes of them (its multiplex settings; its
validator refusing a local path), and that changing ``lora`` rolls the
replicas while a model without it keeps its code version. No cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from servesync.config import ServingConfig
from servesync.desired.specs import Lora, ModelSpec
from servesync.rayserve.llmconfigs import code_version, llm_config_kwargs
from tests.unit.rayserve import llmcases
from tests.unit.rayserve.llmcases import CPU, GPU, PUBLIC_ID

LORA = Lora(path="s3://adapters/alice/chat", max_adapters_per_replica=3)


def spec(**changes: Any) -> ModelSpec:
    return llmcases.spec(**{"num_replicas": 1, "gpus_per_replica": 0, "cpus_per_replica": 2,
                            "engine_kwargs": {"max_model_len": 256, "max_lora_rank": 32},
                            **changes})


def test_lora_becomes_rays_lora_config_and_vllms_enable_lora() -> None:
    out = llm_config_kwargs(spec(lora=LORA), public_id=PUBLIC_ID, serving=CPU)
    assert out["lora_config"] == {"dynamic_lora_loading_path": "s3://adapters/alice/chat",
                                  "max_num_adapters_per_replica": 3}
    assert out["engine_kwargs"] == {"max_model_len": 256, "max_lora_rank": 32,
                                    "enable_lora": True, "max_loras": 3}


def test_a_model_without_lora_is_built_as_before() -> None:
    out = llm_config_kwargs(spec(), public_id=PUBLIC_ID, serving=CPU)
    assert "lora_config" not in out
    assert "enable_lora" not in out["engine_kwargs"]


@pytest.mark.parametrize("serving", [CPU, GPU], ids=["cpu", "gpu"])
def test_rays_own_llmconfig_takes_it(serving: ServingConfig) -> None:
    """Ray's pydantic LLMConfig validates the kwargs, keeps the path as Ray
    uses it and turns the count into Serve's multiplex limit."""
    llm = pytest.importorskip("ray.serve.llm")
    s = spec(lora=LORA, gpus_per_replica=0 if serving.cpu_platform else 1)
    config = llm.LLMConfig(**llm_config_kwargs(s, public_id=PUBLIC_ID, serving=serving))
    assert config.lora_config.dynamic_lora_loading_path == "s3://adapters/alice/chat"
    assert config.lora_config.max_num_adapters_per_replica == 3
    assert config.multiplex_config().max_num_models_per_replica == 3
    engine = config.get_engine_config()
    assert engine.engine_kwargs["enable_lora"] is True
    assert engine.engine_kwargs["max_loras"] == 3


def test_rays_validator_refuses_what_the_schema_refuses() -> None:
    """The reason the schema allows only object storage: Ray's own validator."""
    llm = pytest.importorskip("ray.serve.llm")
    from pydantic import ValidationError

    kwargs = llm_config_kwargs(spec(lora=replace(LORA, path="/private/users/alice/loras")),
                               public_id=PUBLIC_ID, serving=CPU)
    with pytest.raises(ValidationError, match="Invalid lora_config"):
        llm.LLMConfig(**kwargs)


def test_changing_lora_is_a_new_code_version() -> None:
    versions = {code_version(s, public_id=PUBLIC_ID, serving=CPU) for s in (
        spec(), spec(lora=LORA), spec(lora=replace(LORA, max_adapters_per_replica=4)),
        spec(lora=replace(LORA, path="s3://adapters/alice/other")))}
    assert len(versions) == 4
