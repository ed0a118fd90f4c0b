"""ModelSpec → Ray Serve LLM's LLMConfig kwargs: CPU/GPU/accelerator, scaling, env, names,
and the stable code versions that let Serve scale without restarting replicas."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from servesync.config import ServingConfig
from servesync.desired.specs import Autoscaling, ModelSpec
from servesync.rayserve.llmconfigs import (
    code_version,
    deployment_base_name,
    gateway_model_cards,
    gateway_routes,
    gateway_version,
    llm_config_kwargs,
    scaling_options,
    server_deployment_name,
)
from tests.unit.rayserve import llmcases
from tests.unit.rayserve.llmcases import CPU, GPU, PUBLIC_ID

H20 = ServingConfig(accelerator_type="H20")


def spec(**changes: Any) -> ModelSpec:
    return llmcases.spec(**{"model_source": "${STORAGE_ROOT}/alice/m",
                            "resolved_source": "/private/alice/m", "env": {"USER_VAR": "1"},
                            **changes})


def kwargs(s: ModelSpec, serving: ServingConfig) -> dict[str, Any]:
    return llm_config_kwargs(s, public_id=PUBLIC_ID, serving=serving)


PLATFORM_CASES = [
    pytest.param(
        spec(gpus_per_replica=0, cpus_per_replica=2), CPU,
        {"placement_group_config": {"bundles": [{"CPU": 2}]}},
        ("accelerator_type",),
        {"max_model_len": 4096},
        {"name": "alice-202501011200-chat"},
        id="cpu-platform: CPU bundle, no accelerator_type, no TP",
    ),
    pytest.param(
        spec(gpus_per_replica=2), GPU,
        {},
        ("accelerator_type", "placement_group_config"),
        {"max_model_len": 4096, "tensor_parallel_size": 2},
        {"name": "alice-202501011200-chat",
         "ray_actor_options": {"num_cpus": 4}},
        id="any GPU: default bundles, TP = GPUs per replica",
    ),
    pytest.param(
        spec(gpus_per_replica=1), H20,
        {"accelerator_type": "H20"},
        ("placement_group_config",),
        {"max_model_len": 4096, "tensor_parallel_size": 1},
        {"name": "alice-202501011200-chat",
         "ray_actor_options": {"num_cpus": 4}},
        id="specific accelerator type is passed through",
    ),
    pytest.param(
        spec(gpus_per_replica=1), ServingConfig(accelerator_type="GPU"),
        {},
        ("accelerator_type", "placement_group_config"),
        {"max_model_len": 4096, "tensor_parallel_size": 1},
        {"name": "alice-202501011200-chat",
         "ray_actor_options": {"num_cpus": 4}},
        id="'GPU' in any case is generic, not an accelerator type",
    ),
]


@pytest.mark.parametrize(
    ("s", "serving", "expected", "absent", "engine", "deployment"), PLATFORM_CASES
)
def test_platform_shapes_the_config(
    s: ModelSpec,
    serving: ServingConfig,
    expected: dict[str, Any],
    absent: tuple[str, ...],
    engine: dict[str, Any],
    deployment: dict[str, Any],
) -> None:
    out = kwargs(s, serving)
    assert out["model_loading_config"] == {
        "model_id": PUBLIC_ID, "model_source": "/private/alice/m",
    }
    for key, value in expected.items():
        assert out[key] == value
    for key in absent:
        assert key not in out
    assert out["engine_kwargs"] == engine
    assert out["deployment_config"] == deployment


SCALING_CASES = [
    pytest.param(
        Autoscaling(min_replicas=1, max_replicas=3, target_ongoing_requests=8),
        {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8},
        id="explicit target, no idle timeout",
    ),
    pytest.param(
        Autoscaling(min_replicas=0, max_replicas=2, target_ongoing_requests=2.5,
                    idle_timeout_s=600),
        {"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 2.5,
         "downscale_delay_s": 600},
        id="idle timeout becomes downscale_delay_s",
    ),
]


@pytest.mark.parametrize(("autoscaling", "expected"), SCALING_CASES)
def test_autoscaling_replaces_num_replicas(
    autoscaling: Autoscaling, expected: dict[str, Any]
) -> None:
    s = spec(num_replicas=None, autoscaling=autoscaling)
    assert scaling_options(s) == {"autoscaling_config": expected}
    out = kwargs(s, GPU)["deployment_config"]
    assert "autoscaling_config" not in out and "num_replicas" not in out


@pytest.mark.parametrize(("replicas", "expected"), [(2, 2), (0, 0), (None, 1)])
def test_num_replicas_is_a_scaling_option(replicas: int | None, expected: int) -> None:
    s = spec(num_replicas=replicas)
    assert scaling_options(s) == {"num_replicas": expected}
    assert "num_replicas" not in kwargs(s, CPU)["deployment_config"]


def version(s: ModelSpec, serving: ServingConfig = CPU, public_id: str = PUBLIC_ID) -> str:
    return code_version(s, public_id=public_id, serving=serving)


SCALE_ONLY = [
    pytest.param(spec(num_replicas=5), id="num_replicas 2 → 5"),
    pytest.param(spec(num_replicas=0), id="num_replicas 2 → 0"),
    pytest.param(spec(num_replicas=None, autoscaling=SCALING_CASES[0].values[0]),
                 id="fixed → autoscaling"),
    pytest.param(spec(num_replicas=None, autoscaling=SCALING_CASES[1].values[0]),
                 id="fixed → autoscaling with idle timeout"),
    pytest.param(spec(source_file="users/alice/other.yaml", line=7, enabled=False),
                 id="where it is written, enabled"),
]


@pytest.mark.parametrize("other", SCALE_ONLY)
def test_code_version_ignores_scaling(other: ModelSpec) -> None:
    assert version(other) == version(spec())
    assert version(other, GPU) == version(spec(), GPU)


RESTARTING = [
    pytest.param(spec(resolved_source="/private/alice/m2"), CPU, PUBLIC_ID, id="source"),
    pytest.param(spec(engine_kwargs={"max_model_len": 2048}), CPU, PUBLIC_ID,
                 id="engine_kwargs value"),
    pytest.param(spec(engine_kwargs={"max_model_len": 4096, "dtype": "half"}), CPU, PUBLIC_ID,
                 id="engine_kwargs key"),
    pytest.param(spec(env={"USER_VAR": "2"}), CPU, PUBLIC_ID, id="env"),
    pytest.param(spec(cpus_per_replica=8), CPU, PUBLIC_ID, id="cpus_per_replica"),
    pytest.param(spec(), replace(CPU, replica_env={"HF_HUB_OFFLINE": "1"}), PUBLIC_ID,
                 id="operator's replica_env"),
    pytest.param(spec(), GPU, PUBLIC_ID, id="platform"),
    pytest.param(spec(), CPU, "alice-202501011200-chat2", id="public id"),
]


@pytest.mark.parametrize(("other", "serving", "public_id"), RESTARTING)
def test_code_version_changes_with_anything_else(
    other: ModelSpec, serving: ServingConfig, public_id: str
) -> None:
    assert version(other, serving, public_id) != version(spec())


def test_code_version_changes_with_gpus_on_gpu() -> None:
    assert version(spec(gpus_per_replica=2), GPU) != version(spec(gpus_per_replica=1), GPU)


def test_code_version_is_deterministic_and_short() -> None:
    a, b = version(spec()), version(spec(engine_kwargs={"max_model_len": 4096}))
    assert a == b
    assert a.startswith("servesync-1-") and len(a) <= 40
    assert version(spec(env={"A": "1", "B": "2"})) == version(spec(env={"B": "2", "A": "1"}))


def test_gateway_version_is_fixed_by_its_code_not_its_members() -> None:
    assert gateway_version("servesync-gateway-1") == gateway_version("servesync-gateway-1")
    assert gateway_version("servesync-gateway-1") != gateway_version("servesync-gateway-2")
    assert gateway_version("servesync-gateway-1").startswith("servesync-1-")


def test_gateway_routes_name_each_models_server_and_card() -> None:
    got = gateway_routes([("b-2-y.1", "app-b"), ("a-1-x", "app-a")])
    assert [(r.model, r.app, r.deployment) for r in got] == [
        ("a-1-x", "app-a", "LLMServer:a-1-x"), ("b-2-y.1", "app-b", "LLMServer:b-2-y_1")]
    assert got[1].card == gateway_model_cards(["b-2-y.1"])["b-2-y.1"]


def test_replica_env_merges_model_env_under_operator_env() -> None:
    serving = replace(CPU, replica_env={"HF_HUB_OFFLINE": "1", "SHARED": "operator"})
    s = spec(gpus_per_replica=0, env={"SHARED": "user", "USER_VAR": "1"})
    assert kwargs(s, serving)["runtime_env"] == {
        "env_vars": {"HF_HUB_OFFLINE": "1", "SHARED": "operator", "USER_VAR": "1"},
    }


def test_no_env_means_no_runtime_env() -> None:
    assert "runtime_env" not in kwargs(spec(env={}), GPU)


def test_spec_engine_kwargs_are_not_mutated() -> None:
    s = spec(gpus_per_replica=2)
    kwargs(s, GPU)
    assert dict(s.engine_kwargs) == {"max_model_len": 4096}


@pytest.mark.parametrize(
    ("public_id", "base"),
    [("alice-202501011200-chat", "alice-202501011200-chat"),
     ("bob-202501011200-qwen2.5", "bob-202501011200-qwen2_5")],
)
def test_deployment_names_follow_rays_rule(public_id: str, base: str) -> None:
    assert deployment_base_name(public_id) == base
    assert server_deployment_name(public_id) == f"LLMServer:{base}"


def test_gateway_cards_one_per_model() -> None:
    cards = gateway_model_cards(["a-1-x", "b-2-y"])
    assert sorted(cards) == ["a-1-x", "b-2-y"]
    assert cards["a-1-x"]["id"] == "a-1-x"
    assert cards["a-1-x"]["object"] == "model"


ALL_CASES = [
    (spec(gpus_per_replica=0, cpus_per_replica=2), CPU),
    (spec(gpus_per_replica=2), GPU),
    (spec(gpus_per_replica=1), H20),
    (spec(num_replicas=None, autoscaling=SCALING_CASES[1].values[0]), GPU),
]


@pytest.mark.parametrize(("s", "serving"), ALL_CASES)
def test_real_llmconfig_accepts_the_kwargs(s: ModelSpec, serving: ServingConfig) -> None:
    """Pydantic validation of Ray's own LLMConfig (imports Ray, starts nothing)."""
    llm = pytest.importorskip("ray.serve.llm")
    config = llm.LLMConfig(**kwargs(s, serving))
    assert config.model_id == PUBLIC_ID
    expected_kind = "cpu" if serving.cpu_platform else "gpu"
    assert config.accelerator_config.kind == expected_kind


def test_real_llmconfig_rejects_an_unknown_accelerator() -> None:
    llm = pytest.importorskip("ray.serve.llm")
    with pytest.raises(ValueError, match="accelerator"):
        llm.LLMConfig(**kwargs(spec(), ServingConfig(accelerator_type="NoSuchGPU")))
