"""LoRA adapters in the gateway: ``<model>:<adapter>`` and ``<alias>:<adapter>``
reach the model's deployment with the full adapter name as Serve's
multiplexed model id (Ray's routing), and ``/v1/models`` lists each adapter
folder under the LoRA path the model's route carries: no replica is ever
asked for it (a call to a model scaled to zero would start it). An adapter
name that could step out of that path is a 400, as is a version pin on one.

Runs the gateway's real replica class (Ray Serve LLM's ``OpenAiIngress`` with
servesync's overrides) in this process, with stand-ins for the model
deployments' handles and for Ray's object-storage listing: no cluster, no
S3. The real thing answers the ``openai`` client in tests/e2e/test_lora_e2e.py."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servesync.rayserve import gateway
from servesync.rayserve.gateway import adapter_refusal, resolve, routes, user_config
from servesync.rayserve.llmconfigs import gateway_routes
from tests.support.gateways import gateway_replica

A, B = "alice-202601061230-a", "bob-202601061230-b"
MEMBERS = [(A, "app-a"), (B, "app-b")]
ALIASES = [("alice-chat", A)]
PATH, OTHER = "s3://adapters/alice/a", "s3://adapters/alice/a2"
LORA = [(A, PATH)]


def test_an_alias_with_an_adapter_goes_on_as_the_public_id_with_it() -> None:
    table = {"alice-chat": A}
    assert resolve(table, "alice-chat:greet") == f"{A}:greet"
    assert resolve(table, f"{A}:greet") == f"{A}:greet"
    assert resolve(table, "alice-chat:x:y") == f"{A}:x:y"  # Ray's adapter ids may hold ':'
    assert resolve(table, "other:greet") == "other:greet"  # unknown: Ray's 404 says so


def test_an_adapter_name_that_could_leave_the_lora_path_is_refused() -> None:
    for bad in ("../bob/x", "x/y", "..", "a..b", "x\\y", "x\ny", "x\x00", "x\x7f", "x\x85",
                ""):
        assert adapter_refusal(f"{A}:{bad}") is not None, bad
    for good in ("greet", "greet-v2.1", "x:y", "ünï"):
        assert adapter_refusal(f"{A}:{good}") is None, good
    assert adapter_refusal(A) is None  # the base model: no adapter


def test_a_routes_lora_path_round_trips_and_a_malformed_one_is_refused() -> None:
    built = gateway_routes(MEMBERS, ALIASES, lora=LORA)
    assert [r.lora_path for r in built] == [PATH, None]
    config = user_config(built)
    assert [r.get("lora_path") for r in config["routes"]] == [PATH, None]
    assert routes(config) == {r.model: r for r in built}
    entry = config["routes"][0]
    for bad in ("", 3, ["s3://x"]):
        with pytest.raises(ValueError, match="gateway user_config"):
            routes({"routes": [{**entry, "lora_path": bad}]})
    versions = [{"name": "v1", "app": "app-a", "deployment": entry["deployment"], "weight": 100}]
    with pytest.raises(ValueError, match="gateway user_config"):
        routes({"routes": [{**entry, "versions": versions}]})  # versions: no LoRA path
    # validation refuses ``lora`` with versions; were a path to reach a split
    # route anyway, the replica refuses the routes (Serve keeps the last good)
    (split,) = gateway_routes([(A, "app-a@v1")], (), [("app-a@v1", "v1", 100)], LORA)
    with pytest.raises(ValueError, match="has versions: no lora_path"):
        routes(user_config([split]))


class Handle:
    """A model deployment's handle: records (method, model, multiplexed id) of
    each call; ``llm_config`` counts and fails: the gateway must never ask."""

    def __init__(self, app: str, calls: list[tuple[str, ...]], multiplexed: str = "") -> None:
        self.app, self.calls, self.multiplexed = app, calls, multiplexed
        self.asked = 0

    def options(self, **opts: Any) -> Handle:
        return Handle(self.app, self.calls, opts.get("multiplexed_model_id", ""))

    @property
    def llm_config(self) -> Any:
        self.asked += 1
        raise AssertionError("the gateway asked a model's replica for its LoRA path")

    @property
    def chat(self) -> Any:
        def remote(body: Any, raw_request: Any) -> AsyncIterator[dict[str, str]]:
            async def answer() -> AsyncIterator[dict[str, str]]:
                self.calls.append(("chat", body.model, self.multiplexed))
                yield {"app": self.app}
            return answer()
        return types.SimpleNamespace(remote=remote)


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Handle], list[Any]]:
    pytest.importorskip("ray.serve.llm")
    from ray.llm._internal.common.utils import lora_utils
    from ray.llm._internal.serve.core.ingress import ingress

    calls: list[tuple[str, ...]] = []
    listed: list[str] = []  # the folders the object storage holds under PATH
    storage: list[str] = []  # each uri the gateway listed or read

    def subfolders(uri: str) -> list[str]:
        storage.append(uri)
        return list(listed) if uri in (PATH, OTHER) else []

    monkeypatch.setattr(lora_utils.CloudFileSystem, "list_subfolders", staticmethod(subfolders))
    monkeypatch.setattr(ingress, "get_lora_model_ids", lora_utils.get_lora_model_ids)

    async def metadata(model_id: str, base_path: str) -> dict[str, Any]:
        uri = f"{base_path}/{model_id.split(':', 1)[1]}"
        storage.append(uri)
        return {"model_id": model_id, "base_model_id": model_id.split(":")[0],
                "bucket_uri": uri}

    monkeypatch.setattr(ingress, "get_lora_model_metadata", metadata)
    instance, handles = gateway_replica(monkeypatch, lambda app: Handle(app, calls),
                                        user_config(gateway_routes(MEMBERS, ALIASES, lora=LORA)))
    return instance, handles, [calls, listed, storage]


def chat(model: str) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    return ChatCompletionRequest(model=model, messages=[{"role": "user", "content": "hi"}])


def test_an_adapter_request_is_multiplexed_to_its_models_deployment(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    instance, _, (calls, _, _) = replica

    async def ask(model: str) -> list[Any]:
        return [r async for r in instance._get_response(body=chat(model), call_method="chat")]

    assert asyncio.run(ask(f"{A}:greet")) == [{"app": "app-a"}]
    assert asyncio.run(ask("alice-chat:greet")) == [{"app": "app-a"}]
    assert asyncio.run(ask(A)) == [{"app": "app-a"}]
    assert calls == [("chat", f"{A}:greet", f"{A}:greet"),
                     ("chat", f"{A}:greet", f"{A}:greet"),
                     ("chat", A, "")]  # the base model: no multiplexed id (all replicas)


def test_an_adapter_of_an_unknown_model_is_rays_404(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    from fastapi import HTTPException

    instance, _, _ = replica

    async def ask(model: str) -> list[Any]:
        return [r async for r in instance._get_response(body=chat(model), call_method="chat")]

    with pytest.raises(HTTPException) as refused:
        asyncio.run(ask("carol-202601061230-c:greet"))
    assert refused.value.status_code == 404


def names(instance: Any) -> list[str]:
    return sorted(m.id for m in asyncio.run(instance.models()).data)


def test_models_lists_the_adapters_under_the_path_its_route_carries(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    instance, handles, (_, listed, _) = replica
    assert names(instance) == sorted([A, B, "alice-chat"])
    listed.extend(["greet", "shout"])  # uploaded: no commit, no reconfigure
    assert names(instance) == sorted([A, B, "alice-chat", f"{A}:greet", f"{A}:shout"])
    card = asyncio.run(instance.model_data(f"{A}:greet"))
    assert card.id == f"{A}:greet" and card.metadata["bucket_uri"] == f"{PATH}/greet"
    assert asyncio.run(instance.model_data("alice-chat:greet")).id == f"{A}:greet"
    # no model's replica was asked anything: a model at zero replicas stays there
    assert [h.asked for h in handles.values()] == [0, 0]


def test_a_path_changed_by_reconfigure_is_listed_at_once(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    """Serve hands the gateway new routes: the next listing uses the new path
    (the same handle kept), and a path dropped lists no adapters."""
    instance, handles, (_, listed, storage) = replica
    listed.append("greet")
    assert names(instance) == sorted([A, B, "alice-chat", f"{A}:greet"])
    made = dict(handles)
    instance.reconfigure(user_config(gateway_routes(MEMBERS, ALIASES, lora=[(A, OTHER)])))
    assert handles == made  # a path change makes no new handle
    storage.clear()
    assert names(instance) == sorted([A, B, "alice-chat", f"{A}:greet"])
    assert storage == [OTHER, f"{OTHER}/greet"]
    instance.reconfigure(user_config(gateway_routes(MEMBERS, ALIASES)))
    assert names(instance) == sorted([A, B, "alice-chat"])
    assert instance._lora_paths == {}
    assert [h.asked for h in handles.values()] == [0, 0]


def test_an_adapter_name_out_of_the_path_is_a_400_and_never_reaches_storage(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    from fastapi import HTTPException

    instance, _, (calls, _, storage) = replica

    async def ask(model: str) -> list[Any]:
        return [r async for r in instance._get_response(body=chat(model), call_method="chat")]

    for bad in (f"{A}:../bob/x", "alice-chat:../bob/x", f"{A}:x\\..\\y", f"{A}:x\ny",
                f"{A}:"):
        with pytest.raises(HTTPException) as refused:
            asyncio.run(ask(bad))
        assert refused.value.status_code == 400, bad
        assert asyncio.run(instance.model(bad)) is None  # /v1/models/<id>: Ray's 404
    assert calls == [] and storage == []


def test_a_version_pin_on_an_adapter_of_a_plain_model_is_the_plain_models_400(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    from fastapi import HTTPException
    from starlette.requests import Request

    instance, _, (calls, _, _) = replica
    pinned = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions",
                      "headers": [(gateway.VERSION_HEADER.lower().encode(), b"v1")],
                      "query_string": b""})
    messages = []
    for model in (A, f"{A}:greet", "alice-chat:greet"):
        with pytest.raises(HTTPException) as refused:
            asyncio.run(instance._process_llm_request(chat(model), "chat", pinned))
        assert refused.value.status_code == 400, model
        messages.append(refused.value.detail)
    assert len(set(messages)) == 1 and gateway.VERSION_HEADER in messages[0]
    assert calls == []


def test_storage_that_cannot_be_listed_still_lists_the_models(
        replica: tuple[Any, dict[str, Handle], list[Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray raises when boto3 is missing on the gateway's node: the models stay listed."""
    from ray.llm._internal.common.utils import lora_utils

    instance, _, _ = replica

    def no_boto3(uri: str) -> list[str]:
        raise ImportError("boto3 and botocore are required for S3 operations")

    monkeypatch.setattr(lora_utils.CloudFileSystem, "list_subfolders", staticmethod(no_boto3))
    assert sorted(m.id for m in asyncio.run(instance.models()).data) == \
        sorted([A, B, "alice-chat"])
    assert instance._lora_paths == {A: PATH}  # kept: the next listing tries again
