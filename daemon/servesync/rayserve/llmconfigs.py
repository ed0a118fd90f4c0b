"""Translate a :class:`~servesync.specs.ModelSpec` into Ray Serve LLM's config.

Pure functions, no ``ray`` import: :mod:`servesync.rayserve.applier` passes the dicts
built here to ``ray.serve.llm.LLMConfig(**kwargs)`` and the gateway's routes
to its ``user_config`` (:mod:`servesync.rayserve.gateway`); unit tests check
them as plain data. No side effects.

Facts from Ray 2.60's source that shape the output:

* a CPU-only model is told by ``placement_group_config={"bundles": [{"CPU":
  n}]}`` (Ray then infers ``accelerator_config.kind == "cpu"`` and runs vLLM
  with the ``mp`` executor); ``accelerator_type`` is rejected with it;
* on GPU the default bundles are ``[{"GPU": 1}] * tensor_parallel_size``, so
  only ``tensor_parallel_size`` and (optionally) ``accelerator_type`` are set;
* Serve LLM's default ``target_ongoing_requests`` is 1e9, so it is always
  set explicitly when autoscaling;
* the replica actor's ``ray_actor_options`` (its CPUs, and ``memory``) are
  added to the *first* placement bundle (``_merge_replica_actor_and_child_actor_bundles``),
  so ``memory`` there reserves the model's host memory on the replica's node;
* ``accelerator_type`` adds ``accelerator_type:<T>: 0.001`` to every GPU bundle
  (one type only); a bundle label selector (``placement_group_bundle_label_selector``
  in the deployment config, passed through untouched, one selector for all
  bundles) with ``ray.io/accelerator-type: in(A,B)`` asks for any of several
  (Ray labels every node with the type it detects);
* the default placement strategy is ``PACK`` (a replica may span nodes:
  needed for pipeline parallelism across nodes; ``STRICT_PACK`` would not);
* the deployment is named ``LLMServer:<deployment_config["name"]>``; we set
  the name ourselves so the gateway can address it (:func:`server_deployment_name`);
* vLLM's CPU build binds each worker of a node to a NUMA node of its own and
  refuses to start more local workers than allowed NUMA nodes ("Not enough
  allowed NUMA nodes to bind threads of 2 local CPUWorkers") unless
  ``VLLM_CPU_OMP_THREADS_BIND`` says how; so a CPU replica of T x P > 1
  workers gets ``nobind`` (:data:`CPU_THREADS_BIND`) unless its env sets it
  (:func:`replica_env`);
* LoRA (``lora_config``): the replica downloads an adapter with boto3 (S3;
  google-cloud-storage / azure for the others) from
  ``<dynamic_lora_loading_path>/<adapter>`` on the first request naming
  ``<model id>:<adapter>`` (Serve's multiplexing, at most
  ``max_num_adapters_per_replica`` per replica, least recently used out);
  Ray does not turn vLLM's LoRA on itself, so ``enable_lora`` and
  ``max_loras`` go into the engine kwargs;
* Serve restarts a deployment's replicas only when its code version (or its
  actor options / placement) changes; ``num_replicas`` and
  ``autoscaling_config`` are lightweight options. So the scaling fields are
  kept out of the LLMConfig (:func:`scaling_options` are passed as deployment
  options instead) and :func:`code_version` hashes everything else: scaling a
  model adds or removes replicas, any other change rolls them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from servesync.config import ServingConfig
from servesync.desired.specs import Autoscaling, ModelSpec
from servesync.rayserve.gateway import Backend, Route

SERVER_NAME_PREFIX = "LLMServer:"
"""``build_llm_deployment``'s default ``name_prefix`` (``LLMServer.__name__ + ":"``)."""

GENERIC_ACCELERATORS = ("gpu", "cpu")
"""``serving.accelerator_type`` values that name a platform, not a Ray accelerator type."""

PLACEMENT_STRATEGY = "PACK"
"""A replica's bundles as few nodes as possible, but more when it must (pipeline
stages on several nodes); ``STRICT_PACK`` would make a T x P replica wait for
one node with T x P GPUs."""

ACCELERATOR_LABEL = "ray.io/accelerator-type"
"""The node label Ray sets from the accelerator it detects
(``ray._raylet.RAY_NODE_ACCELERATOR_TYPE_KEY``)."""

CPU_THREADS_BIND = ("VLLM_CPU_OMP_THREADS_BIND", "nobind")
"""The variable, and its value, that let vLLM's CPU build start T x P > 1 workers
on a node with fewer NUMA nodes (each worker's threads then float, unpinned)."""

GIB = 1024 ** 3
"""``memory_gb_per_replica`` is in GiB; Ray's ``memory`` resource is in bytes."""

VERSION_SCHEME = "servesync-1"
"""Salt of :func:`code_version` / :func:`gateway_version`; bump it when a change
of servesync must restart replicas whose inputs did not change."""


def deployment_base_name(public_id: str) -> str:
    """The ``deployment_config["name"]`` of a model: its public id made safe the
    way Ray itself does it (``/`` → ``--``, ``.`` → ``_``)."""
    return public_id.replace("/", "--").replace(".", "_")


def server_deployment_name(public_id: str) -> str:
    """Name of the LLM server deployment inside the model's own application."""
    return SERVER_NAME_PREFIX + deployment_base_name(public_id)


def llm_config_kwargs(
    spec: ModelSpec, *, public_id: str, serving: ServingConfig
) -> dict[str, Any]:
    """The keyword arguments of ``ray.serve.llm.LLMConfig`` for one model.

    Without the scaling fields (see :func:`scaling_options`): these kwargs are
    what every replica is constructed with, and they are equal for two specs
    that differ only in ``num_replicas`` / ``autoscaling``."""
    kwargs: dict[str, Any] = {
        "model_loading_config": {
            "model_id": public_id,
            "model_source": spec.resolved_source,
        },
        "deployment_config": _deployment_config(spec, public_id=public_id, serving=serving),
        "engine_kwargs": _engine_kwargs(spec, serving=serving),
    }
    if spec.lora is not None:
        kwargs["lora_config"] = {
            "dynamic_lora_loading_path": spec.lora.path,
            "max_num_adapters_per_replica": spec.lora.max_adapters_per_replica,
        }
    env = replica_env(spec, serving=serving)
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    workers = spec.tensor_parallel * spec.pipeline_parallel
    if serving.cpu_platform:
        kwargs["placement_group_config"] = {"bundles": [{"CPU": spec.cpus_per_replica}]
                                            * workers}
        if workers > 1:
            kwargs["placement_group_config"]["strategy"] = PLACEMENT_STRATEGY
        return kwargs
    if spec.pipeline_parallel > 1:  # stages may sit on other nodes: say so, don't rely
        # on Ray's default (a single-node replica keeps it, and so its code version)
        kwargs["placement_group_config"] = {"bundles": [{"GPU": 1}] * workers,
                                            "strategy": PLACEMENT_STRATEGY}
    if len(spec.accelerators) == 1:
        kwargs["accelerator_type"] = spec.accelerators[0]
    elif not spec.accelerators and serving.accelerator_type.lower() not in GENERIC_ACCELERATORS:
        kwargs["accelerator_type"] = serving.accelerator_type
    return kwargs


def rollout_options(spec: ModelSpec, *, serving: ServingConfig) -> dict[str, Any]:
    """The model deployment's rollout options, passed to Serve beside the
    LLMConfig like :func:`scaling_options`: ``max_surge_percent`` and (when the
    model or the cluster sets it) ``rolling_update_percentage``, the model's
    value over the cluster's. Both are lightweight in Serve (a change restarts
    no replica), so they stay out of :func:`code_version`."""
    surge = spec.rollout.max_surge_percent
    out: dict[str, Any] = {
        "max_surge_percent": serving.max_surge_percent if surge is None else surge}
    unavailable = spec.rollout.max_unavailable_percent
    if unavailable is None:
        unavailable = serving.max_unavailable_percent
    if unavailable is not None:
        out["rolling_update_percentage"] = unavailable / 100
    return out


def scaling_options(spec: ModelSpec) -> dict[str, Any]:
    """The model deployment's scaling options, passed to Serve beside the
    LLMConfig (``build_llm_deployment(override_serve_options=...)``): exactly one
    of ``num_replicas`` and ``autoscaling_config``. Serve applies a change of
    either to running replicas without restarting them."""
    if spec.autoscaling is not None:
        return {"autoscaling_config": autoscaling_config(spec.autoscaling)}
    return {"num_replicas": spec.num_replicas if spec.num_replicas is not None else 1}


def code_version(spec: ModelSpec, *, public_id: str, serving: ServingConfig) -> str:
    """The Serve code version of the model's deployment: a hash of the
    LLMConfig kwargs, which carry everything of the spec and the serving
    config that reaches a replica except the scaling fields.

    Equal for specs that differ only in ``num_replicas`` / ``autoscaling`` (so
    Serve scales without restarting a replica); different when the source,
    engine kwargs, env, resources, platform or public id change (so Serve
    rolls the replicas to the new version)."""
    return _version("model", llm_config_kwargs(spec, public_id=public_id, serving=serving))


def gateway_version(code_id: str) -> str:
    """The Serve code version of the gateway: fixed by the gateway's code
    (:data:`servesync.rayserve.gateway.CODE_ID`), not by its routes, which
    reach the running replicas as ``user_config``; so a model joining or
    leaving never restarts a gateway replica."""
    return _version("gateway", {"code": code_id})


def gateway_routes(members: Sequence[tuple[str, str]],
                   aliases: Sequence[tuple[str, str]] = (),
                   weights: Sequence[tuple[str, str, int]] = (),
                   lora: Sequence[tuple[str, str]] = ()) -> list[Route]:
    """The gateway's routes for ``(public model id, app name)`` members, each
    with its names among ``(alias name, public model id)`` aliases and its
    path among ``(public model id, LoRA path)`` ``lora``. A public
    id with members in ``(app name, version, weight)`` ``weights`` is one
    route split among those versions (a model's versions, each its own
    application); its ``app`` is its first version's."""
    cards = gateway_model_cards(sorted({public_id for public_id, _ in members}))
    names: dict[str, list[str]] = {}
    for alias, public_id in sorted(aliases):
        names.setdefault(public_id, []).append(alias)
    versions = {app: (version, weight) for app, version, weight in weights}
    paths = dict(lora)
    apps: dict[str, list[str]] = {}
    for public_id, app_name in sorted(members):
        apps.setdefault(public_id, []).append(app_name)
    out = []
    for public_id, found in apps.items():
        deployment = server_deployment_name(public_id)
        split = tuple(Backend(version=versions[a][0], app=a, deployment=deployment,
                              weight=versions[a][1]) for a in found if a in versions)
        out.append(Route(model=public_id, app=found[0], deployment=deployment,
                         card=cards[public_id], aliases=tuple(names.get(public_id, ())),
                         versions=split, lora_path=paths.get(public_id)))
    return out


def _version(kind: str, inputs: dict[str, Any]) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{VERSION_SCHEME}:{kind}:{blob}".encode()).hexdigest()
    return f"{VERSION_SCHEME}-{digest[:20]}"


def replica_env(spec: ModelSpec, *, serving: ServingConfig) -> dict[str, str]:
    """Environment of the model's replicas: the model's ``env`` overlaid by the
    operator's ``serving.replica_env`` (the operator's values win: a commit
    cannot undo e.g. ``HF_HUB_OFFLINE``), and on a CPU cluster, for a replica
    of T x P > 1 workers, :data:`CPU_THREADS_BIND` when neither sets that
    variable. Shown in plain text on the Ray dashboard, so never a place for
    secrets."""
    env = {**dict(spec.env), **serving.replica_env}
    if serving.cpu_platform and spec.tensor_parallel * spec.pipeline_parallel > 1:
        name, value = CPU_THREADS_BIND
        env.setdefault(name, value)
    return env


def _deployment_config(
    spec: ModelSpec, *, public_id: str, serving: ServingConfig
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": deployment_base_name(public_id)}
    actor: dict[str, Any] = {}
    if not serving.cpu_platform:
        # On GPU the replica actor shares the first GPU bundle; give it the CPUs asked.
        actor["num_cpus"] = spec.cpus_per_replica
    if spec.memory_gb_per_replica is not None:
        # Ray adds it to the first bundle: reserved on the replica's node
        actor["memory"] = max(1, math.ceil(spec.memory_gb_per_replica * GIB))
    if actor:
        out["ray_actor_options"] = actor
    if len(spec.accelerators) > 1:
        out["placement_group_bundle_label_selector"] = [
            {ACCELERATOR_LABEL: f"in({','.join(spec.accelerators)})"}]
    return out


def autoscaling_config(autoscaling: Autoscaling) -> dict[str, Any]:
    """Ray Serve's ``autoscaling_config``; ``idle_timeout_s`` becomes
    ``downscale_delay_s`` (how long load must stay low before a replica is
    removed; Ray also uses it for the last step 1 → 0)."""
    out = autoscaling.to_json()
    if "idle_timeout_s" in out:
        out["downscale_delay_s"] = out.pop("idle_timeout_s")
    return out


def _engine_kwargs(spec: ModelSpec, *, serving: ServingConfig) -> dict[str, Any]:
    out = dict(spec.engine_kwargs)
    if (not serving.cpu_platform and spec.gpus_per_replica > 0) or spec.tensor_parallel > 1:
        out["tensor_parallel_size"] = spec.tensor_parallel
    if spec.pipeline_parallel > 1:
        out["pipeline_parallel_size"] = spec.pipeline_parallel
    if spec.lora is not None:  # vLLM holds as many adapters as the replica may load
        out["enable_lora"] = True
        out["max_loras"] = spec.lora.max_adapters_per_replica
    return out


def gateway_model_cards(public_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The cards the gateway lists on ``/v1/models``, as the fields of Ray's
    ``ModelCard`` (one per public model id)."""
    return {
        public_id: {
            "id": public_id,
            "object": "model",
            "owned_by": "servesync",
            "permission": [],
            "metadata": {
                "model_id": public_id,
                "input_modality": "text",
                "max_request_context_length": None,
            },
        }
        for public_id in public_ids
    }


def serving_hash(serving: ServingConfig) -> str:
    """Hash of the cluster serving config that reaches every model's replicas
    (platform, operator env, surge, and the rolling update size once set):
    when it changes, every model is updated. (``accelerator_types`` reaches a
    model through its resolved spec, so its spec hash says when.)"""
    inputs: dict[str, Any] = {
        "accelerator_type": serving.accelerator_type,
        "replica_env": dict(sorted(serving.replica_env.items())),
        "max_surge_percent": serving.max_surge_percent,
    }
    if serving.max_unavailable_percent is not None:  # absent: the hash of older configs
        inputs["max_unavailable_percent"] = serving.max_unavailable_percent
    return _version("serving", inputs)
