"""Issue 10's knobs reach Ray: the exact LLMConfig kwargs and Serve options for
CPU, GPU, a named GPU type, several types, T x P and memory; what Ray's own
``LLMConfig`` and ``LLMServer.get_deployment_options`` make of them (the
placement a GPU cluster will be asked for, though no GPU is here); and which
changes roll the replicas (a new code version) and which restart nothing.
Imports Ray's classes; starts no cluster."""

from __future__ import annotations

import types
from dataclasses import replace
from typing import Any

import pytest

from servesync.config import ServingConfig
from servesync.desired.specs import ModelSpec, Parallelism, Rollout
from servesync.rayserve.llmconfigs import (
    ACCELERATOR_LABEL,
    GIB,
    code_version,
    llm_config_kwargs,
    rollout_options,
    serving_hash,
)
from tests.unit.rayserve.llmcases import CPU, GPU, PUBLIC_ID, spec

H20 = ServingConfig(accelerator_type="H20",
                    accelerator_types={"H20": "9.0", "A100-80G": "8.0", "L40S": "8.9"})


def kwargs(s: ModelSpec, serving: ServingConfig) -> dict[str, Any]:
    return llm_config_kwargs(s, public_id=PUBLIC_ID, serving=serving)


TP2_PP2 = Parallelism(tensor=2, pipeline=2)

# (id, spec, serving, exact kwargs beyond model_loading_config)
EXACT = [
    ("cpu, memory", spec(gpus_per_replica=0, cpus_per_replica=2, memory_gb_per_replica=8),
     CPU, {
         "deployment_config": {"name": PUBLIC_ID, "ray_actor_options": {"memory": 8 * GIB}},
         "engine_kwargs": {"max_model_len": 4096},
         "placement_group_config": {"bundles": [{"CPU": 2}]}}),
    ("cpu, pipeline 2: a CPU bundle per stage, PACK",
     spec(gpus_per_replica=0, cpus_per_replica=2, parallelism=Parallelism(1, 2)), CPU, {
         "deployment_config": {"name": PUBLIC_ID},
         "engine_kwargs": {"max_model_len": 4096, "pipeline_parallel_size": 2},
         "runtime_env": {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}},
         "placement_group_config": {"bundles": [{"CPU": 2}, {"CPU": 2}], "strategy": "PACK"}}),
    ("any gpu, memory", spec(gpus_per_replica=2, memory_gb_per_replica=1.5), GPU, {
        "deployment_config": {"name": PUBLIC_ID,
                              "ray_actor_options": {"num_cpus": 4, "memory": int(1.5 * GIB)}},
        "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 2}}),
    ("the cluster's default type", spec(), H20, {
        "deployment_config": {"name": PUBLIC_ID, "ray_actor_options": {"num_cpus": 4}},
        "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 1},
        "accelerator_type": "H20"}),
    ("a named type overrides the default",
     spec(accelerator_type="L40S", accelerators=("L40S",)), H20, {
         "deployment_config": {"name": PUBLIC_ID, "ray_actor_options": {"num_cpus": 4}},
         "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 1},
         "accelerator_type": "L40S"}),
    ("one type satisfies the capability: by name",
     spec(min_compute_capability="9.0", accelerators=("H20",)), GPU, {
         "deployment_config": {"name": PUBLIC_ID, "ray_actor_options": {"num_cpus": 4}},
         "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 1},
         "accelerator_type": "H20"}),
    ("several satisfy it: any of them, by node label",
     spec(min_compute_capability="8.9", accelerators=("H20", "L40S")), H20, {
         "deployment_config": {
             "name": PUBLIC_ID, "ray_actor_options": {"num_cpus": 4},
             "placement_group_bundle_label_selector": [{ACCELERATOR_LABEL: "in(H20,L40S)"}]},
         "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 1}}),
    ("T x P: T x P GPU bundles, PACK, both sizes to vLLM",
     spec(gpus_per_replica=4, parallelism=TP2_PP2, accelerators=("H20",)), H20, {
         "deployment_config": {"name": PUBLIC_ID, "ray_actor_options": {"num_cpus": 4}},
         "engine_kwargs": {"max_model_len": 4096, "tensor_parallel_size": 2,
                           "pipeline_parallel_size": 2},
         "placement_group_config": {"bundles": [{"GPU": 1}] * 4, "strategy": "PACK"},
         "accelerator_type": "H20"}),
]


@pytest.mark.parametrize(("s", "serving", "expected"), [c[1:] for c in EXACT],
                         ids=[c[0] for c in EXACT])
def test_the_exact_llmconfig_kwargs(s: ModelSpec, serving: ServingConfig,
                                    expected: dict[str, Any]) -> None:
    out = kwargs(s, serving)
    assert out.pop("model_loading_config") == {"model_id": PUBLIC_ID,
                                               "model_source": "/private/users/alice/m"}
    assert out == expected


BIND = "VLLM_CPU_OMP_THREADS_BIND"


@pytest.mark.parametrize(("s", "serving", "env_vars"), [
    pytest.param(spec(gpus_per_replica=0, parallelism=Parallelism(1, 2)), CPU,
                 {BIND: "nobind"}, id="cpu, pipeline 2"),
    pytest.param(spec(gpus_per_replica=0, parallelism=Parallelism(2, 1),
                      env={"OMP_NUM_THREADS": "2"}), CPU,
                 {"OMP_NUM_THREADS": "2", BIND: "nobind"}, id="cpu, tensor 2, beside the env"),
    pytest.param(spec(gpus_per_replica=0, parallelism=TP2_PP2, env={BIND: "0-3|4-7|8-11|12-15"}),
                 CPU, {BIND: "0-3|4-7|8-11|12-15"}, id="cpu, the model's own binding wins"),
    pytest.param(spec(gpus_per_replica=0, parallelism=TP2_PP2),
                 replace(CPU, replica_env={BIND: "auto"}), {BIND: "auto"},
                 id="cpu, the operator's binding wins"),
    pytest.param(spec(gpus_per_replica=0), CPU, None, id="cpu, T x P = 1: nothing"),
    pytest.param(spec(gpus_per_replica=0, parallelism=Parallelism(1, 1),
                      env={"OMP_NUM_THREADS": "2"}), CPU, {"OMP_NUM_THREADS": "2"},
                 id="cpu, parallelism 1 x 1: the env as written"),
    pytest.param(spec(gpus_per_replica=4, parallelism=TP2_PP2), H20, None,
                 id="gpu, T x P = 4: nothing"),
    pytest.param(spec(gpus_per_replica=2), GPU, None, id="gpu, tensor 2: nothing"),
])
def test_a_cpu_replica_of_several_workers_is_told_not_to_bind_threads(
        s: ModelSpec, serving: ServingConfig, env_vars: dict[str, str] | None) -> None:
    """vLLM's CPU build refuses T x P > 1 workers on a node with fewer NUMA nodes
    unless VLLM_CPU_OMP_THREADS_BIND says how: servesync says ``nobind``
    unless the model's env (or the operator's) already says something."""
    out = kwargs(s, serving)
    if env_vars is None:
        assert "runtime_env" not in out
    else:
        assert out["runtime_env"] == {"env_vars": env_vars}


@pytest.fixture
def no_ray_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_deployment_options`` reads the driver's runtime env, which would start a
    local Ray; an empty one is all it needs."""
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "get_runtime_context",
                        lambda: types.SimpleNamespace(runtime_env={}))


# (id, spec, serving, placement group bundles, strategy, label selector)
PLACEMENT = [
    ("cpu: the replica actor's CPU joins the one bundle, memory too",
     spec(gpus_per_replica=0, cpus_per_replica=2, memory_gb_per_replica=8), CPU,
     [{"CPU": 3, "GPU": 0, "memory": 8 * GIB}], "PACK", None),
    ("gpu x 2: two GPU bundles, the replica's CPUs and memory on the first",
     spec(gpus_per_replica=2, memory_gb_per_replica=2), GPU,
     [{"GPU": 1, "CPU": 4, "memory": 2 * GIB}, {"GPU": 1}], "PACK", None),
    ("a named type: Ray's accelerator resource on every bundle",
     spec(gpus_per_replica=2, accelerator_type="A100-80G", accelerators=("A100-80G",)), H20,
     [{"GPU": 1, "CPU": 4, "accelerator_type:A100-80G": 0.001},
      {"GPU": 1, "accelerator_type:A100-80G": 0.001}], "PACK", None),
    ("several types: plain GPU bundles, one label selector",
     spec(accelerators=("A100-80G", "H20")), H20,
     [{"GPU": 1, "CPU": 4}], "PACK", [{ACCELERATOR_LABEL: "in(A100-80G,H20)"}]),
    ("T x P = 2 x 2 on H20: four bundles that may span nodes",
     spec(gpus_per_replica=4, parallelism=TP2_PP2), H20,
     [{"GPU": 1, "CPU": 4, "accelerator_type:H20": 0.001}]
     + [{"GPU": 1, "accelerator_type:H20": 0.001}] * 3, "PACK", None),
]


@pytest.mark.usefixtures("no_ray_context")
@pytest.mark.parametrize(("s", "serving", "bundles", "strategy", "selector"),
                         [c[1:] for c in PLACEMENT], ids=[c[0] for c in PLACEMENT])
def test_ray_asks_for_this_placement(s: ModelSpec, serving: ServingConfig,
                                     bundles: list[dict[str, float]], strategy: str,
                                     selector: list[dict[str, str]] | None) -> None:
    """Ray's own LLMConfig (pydantic) and LLMServer.get_deployment_options: the
    placement group a cluster with these GPUs would be asked for."""
    llm = pytest.importorskip("ray.serve.llm")
    from ray.llm._internal.serve.core.server.llm_server import LLMServer

    config = llm.LLMConfig(**kwargs(s, serving))
    assert config.accelerator_config.kind == ("cpu" if serving.cpu_platform else "gpu")
    options = LLMServer.get_deployment_options(config)
    assert options["placement_group_bundles"] == bundles
    assert options["placement_group_strategy"] == strategy
    assert options.get("placement_group_bundle_label_selector") == selector
    engine = config.get_engine_config()
    assert (engine.tensor_parallel_degree, engine.pipeline_parallel_degree) == \
        (s.tensor_parallel, s.pipeline_parallel)


def test_the_accelerator_label_is_rays(no_ray_context: None) -> None:
    """The label key servesync selects on is the one Ray sets on every node
    from the accelerator it detects."""
    raylet = pytest.importorskip("ray._raylet")
    assert raylet.RAY_NODE_ACCELERATOR_TYPE_KEY == ACCELERATOR_LABEL


@pytest.mark.usefixtures("no_ray_context")
def test_serve_takes_the_options_of_a_several_types_tp_pp_model() -> None:
    """The whole application as the applier builds it: Serve's own deployment
    validation accepts the bundles, the label selector (given once, for every
    bundle) and the rollout options."""
    llm = pytest.importorskip("ray.serve.llm")
    s = spec(gpus_per_replica=4, parallelism=TP2_PP2, accelerators=("A100-80G", "H20"),
             rollout=Rollout(max_surge_percent=50, max_unavailable_percent=25))
    app = llm.build_llm_deployment(
        llm.LLMConfig(**kwargs(s, H20)), name_prefix="LLMServer:",
        override_serve_options={"num_replicas": 2, **rollout_options(s, serving=H20)})
    deployment = app._bound_deployment
    replica = deployment._replica_config
    assert replica.placement_group_bundles == [{"GPU": 1, "CPU": 4}] + [{"GPU": 1}] * 3
    assert replica.placement_group_strategy == "PACK"
    assert replica.placement_group_bundle_label_selector == \
        [{ACCELERATOR_LABEL: "in(A100-80G,H20)"}] * 4
    config = deployment._deployment_config
    assert (config.max_surge_percent, config.rolling_update_percentage) == (50, 0.25)


@pytest.mark.parametrize(("s", "serving", "expected"), [
    (spec(), CPU, {"max_surge_percent": 100}),
    (spec(), replace(CPU, max_surge_percent=0, max_unavailable_percent=50),
     {"max_surge_percent": 0, "rolling_update_percentage": 0.5}),
    (spec(rollout=Rollout(max_surge_percent=25)), CPU, {"max_surge_percent": 25}),
    (spec(rollout=Rollout(max_unavailable_percent=100, deploy_timeout_s=60)),
     replace(CPU, max_unavailable_percent=10),
     {"max_surge_percent": 100, "rolling_update_percentage": 1.0}),
], ids=["cluster defaults", "cluster max unavailable", "model surge", "model over cluster"])
def test_rollout_options_the_model_over_the_cluster(s: ModelSpec, serving: ServingConfig,
                                                    expected: dict[str, Any]) -> None:
    assert rollout_options(s, serving=serving) == expected


def test_serve_applies_rollout_options_without_a_restart() -> None:
    """Serve's rule the RECONFIGURE plan relies on: under one code version, a
    change of max_surge_percent or rolling_update_percentage restarts nothing."""
    pytest.importorskip("ray.serve")
    from ray.serve._private.config import DeploymentConfig
    from ray.serve._private.version import DeploymentVersion

    def version(**config: Any) -> DeploymentVersion:
        return DeploymentVersion("v1", DeploymentConfig(num_replicas=2, **config),
                                 {"num_cpus": 1})

    old = version(max_surge_percent=100)
    new = version(max_surge_percent=0, rolling_update_percentage=0.5)
    assert not old.requires_actor_restart(new)
    assert not old.requires_actor_reconfigure(new)


def version(s: ModelSpec, serving: ServingConfig = H20) -> str:
    return code_version(s, public_id=PUBLIC_ID, serving=serving)


ROLLS = [
    pytest.param(spec(memory_gb_per_replica=16), id="memory"),
    pytest.param(spec(accelerator_type="L40S", accelerators=("L40S",)), id="accelerator type"),
    pytest.param(spec(min_compute_capability="8.0", accelerators=("A100-80G", "H20", "L40S")),
                 id="capability: several types"),
    pytest.param(spec(gpus_per_replica=2), id="gpus_per_replica"),
    pytest.param(spec(gpus_per_replica=2, parallelism=Parallelism(1, 2)), id="pipeline"),
]


@pytest.mark.parametrize("other", ROLLS)
def test_resources_and_parallelism_roll_the_replicas(other: ModelSpec) -> None:
    assert version(other) != version(spec())
    assert other.spec_hash() != spec().spec_hash()


def test_tp_x_pp_is_not_the_same_replica_as_tp() -> None:
    four = spec(gpus_per_replica=4)
    assert version(spec(gpus_per_replica=4, parallelism=TP2_PP2)) != version(four)


RESTARTS_NOTHING = [
    pytest.param(spec(description="the chat model of team search"), id="description"),
    pytest.param(spec(labels={"team": "search", "example.com/tier": "prod"}), id="labels"),
    pytest.param(spec(rollout=Rollout(deploy_timeout_s=1800)), id="rollout deploy_timeout_s"),
    pytest.param(spec(rollout=Rollout(max_surge_percent=0, max_unavailable_percent=50)),
                 id="rollout surge and unavailable"),
]


@pytest.mark.parametrize("other", RESTARTS_NOTHING)
def test_rollout_description_labels_keep_the_code_version(other: ModelSpec) -> None:
    assert version(other) == version(spec())
    assert kwargs(other, H20) == kwargs(spec(), H20)


@pytest.mark.parametrize("other", RESTARTS_NOTHING[:3])
def test_metadata_is_not_in_the_spec_hash(other: ModelSpec) -> None:
    """Description, labels and the deadline never reach Ray: not even a
    resubmission (the planner records them; tests/unit/converge/test_knobs_planning.py)."""
    assert other.spec_hash() == spec().spec_hash()
    assert other.to_json() != spec().to_json()


def test_a_spec_without_knobs_hashes_as_before_they_existed() -> None:
    """Every existing file keeps its meaning: its spec hash and code version are
    those of the fields it always had (no churn of running models on upgrade)."""
    assert set(spec().serving_json()) == {
        "user_id", "model_id", "model_source", "num_replicas", "autoscaling",
        "gpus_per_replica", "cpus_per_replica", "engine_kwargs", "env"}
    for serving in (CPU, GPU, H20):
        out = kwargs(spec(gpus_per_replica=0 if serving is CPU else 2), serving)
        assert "pipeline_parallel_size" not in out["engine_kwargs"]
        assert "memory" not in out["deployment_config"].get("ray_actor_options", {})


def test_the_shorthand_and_its_parallelism_are_one_replica() -> None:
    """gpus_per_replica: 2 and parallelism {tensor: 2} are one spelling apart:
    validation records both as the shorthand (test_knobs.py), so one version."""
    assert spec(gpus_per_replica=2).tensor_parallel == 2
    assert spec(gpus_per_replica=2).pipeline_parallel == 1


def test_the_cluster_max_unavailable_joins_the_serving_hash_only_once_set() -> None:
    assert serving_hash(GPU) == serving_hash(replace(GPU, accelerator_types={"H100": "9.0"}))
    assert serving_hash(GPU) != serving_hash(replace(GPU, max_unavailable_percent=20))


def test_an_unplaceable_replica_is_explained_by_its_deployment() -> None:
    """Serve says why a replica waits (e.g. more memory than any node has free)
    on the deployment, not the application: the observation takes it from there."""
    applier = pytest.importorskip("servesync.rayserve.applier")
    pending = "has 1 replicas that have taken more than 30s to be scheduled"

    def app(message: str, *deployments: str) -> Any:
        deps = {f"d{i}": types.SimpleNamespace(message=m) for i, m in enumerate(deployments)}
        return types.SimpleNamespace(message=message, deployments=deps)

    assert applier.app_message(app("", "", pending)) == pending
    assert applier.app_message(app("app failed", pending)) == "app failed"
    assert applier.app_message(app("", "", "")) == ""
