"""LoRA adapters in the gateway: ``<model>:<adapter>`` and ``<alias>:<adapter>``
reach the model's deployment with the full adapter name as Serve's
multiplexed model id (Ray's routing), and ``/v1/models`` lists each adapter
folder under the LoRA path the model's own replica reports.

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
from servesync.rayserve.gateway import resolve, user_config
from servesync.rayserve.llmconfigs import gateway_routes

A, B = "alice-202601061230-a", "bob-202601061230-b"
MEMBERS = [(A, "app-a"), (B, "app-b")]
ALIASES = [("alice-chat", A)]
PATH = "s3://adapters/alice/a"


def test_an_alias_with_an_adapter_goes_on_as_the_public_id_with_it() -> None:
    table = {"alice-chat": A}
    assert resolve(table, "alice-chat:greet") == f"{A}:greet"
    assert resolve(table, f"{A}:greet") == f"{A}:greet"
    assert resolve(table, "alice-chat:x:y") == f"{A}:x:y"  # Ray's adapter ids may hold ':'
    assert resolve(table, "other:greet") == "other:greet"  # unknown: Ray's 404 says so


class Handle:
    """A model deployment's handle: records (method, model, multiplexed id) of
    each call and answers ``llm_config`` with the model's LoRA path."""

    def __init__(self, app: str, lora_path: str | None, calls: list[tuple[str, ...]],
                 multiplexed: str = "") -> None:
        self.app, self.lora_path, self.calls, self.multiplexed = app, lora_path, calls, \
            multiplexed
        self.asked = 0

    def options(self, **opts: Any) -> Handle:
        h = Handle(self.app, self.lora_path, self.calls, opts.get("multiplexed_model_id", ""))
        return h

    @property
    def llm_config(self) -> Any:
        async def remote() -> Any:
            self.asked += 1
            lora = types.SimpleNamespace(dynamic_lora_loading_path=self.lora_path) \
                if self.lora_path else None
            return types.SimpleNamespace(lora_config=lora)
        return types.SimpleNamespace(remote=remote)

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
    from ray import serve
    from ray.llm._internal.common.utils import lora_utils
    from ray.llm._internal.serve.core.ingress import ingress

    calls: list[tuple[str, ...]] = []
    handles: dict[str, Handle] = {}

    def get_handle(deployment: str, app_name: str, _check_exists: bool = True) -> Handle:
        handles[app_name] = Handle(app_name, PATH if app_name.startswith("app-a") else None, calls)
        return handles[app_name]

    listed: list[str] = []  # the folders the object storage holds under PATH
    monkeypatch.setattr(serve, "get_deployment_handle", get_handle)
    monkeypatch.setattr(lora_utils.CloudFileSystem, "list_subfolders",
                        staticmethod(lambda uri: list(listed) if uri == PATH else []))
    monkeypatch.setattr(ingress, "get_lora_model_ids", lora_utils.get_lora_model_ids)

    async def metadata(model_id: str, base_path: str) -> dict[str, Any]:
        return {"model_id": model_id, "base_model_id": model_id.split(":")[0],
                "bucket_uri": f"{base_path}/{model_id.split(':', 1)[1]}"}

    monkeypatch.setattr(ingress, "get_lora_model_metadata", metadata)
    wrapped = gateway.ingress_class()
    cls = next(c for c in wrapped.__mro__ if c.__module__ == gateway.__name__)
    instance = cls()
    instance.reconfigure(user_config(gateway_routes(MEMBERS, ALIASES)))
    return instance, handles, [calls, listed]


def chat(model: str) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    return ChatCompletionRequest(model=model, messages=[{"role": "user", "content": "hi"}])


def test_an_adapter_request_is_multiplexed_to_its_models_deployment(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    instance, _, (calls, _) = replica

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


def test_models_lists_the_adapters_found_under_the_models_own_path(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    instance, handles, (_, listed) = replica

    def names() -> list[str]:
        return sorted(m.id for m in asyncio.run(instance.models()).data)

    assert names() == sorted([A, B, "alice-chat"])
    listed.extend(["greet", "shout"])  # uploaded: no commit, no reconfigure
    assert names() == sorted([A, B, "alice-chat", f"{A}:greet", f"{A}:shout"])
    card = asyncio.run(instance.model_data(f"{A}:greet"))
    assert card.id == f"{A}:greet" and card.metadata["bucket_uri"] == f"{PATH}/greet"
    assert asyncio.run(instance.model_data("alice-chat:greet")).id == f"{A}:greet"
    # each model's replica was asked once for its path, not at every listing
    assert (handles["app-a"].asked, handles["app-b"].asked) == (1, 1)


def test_a_new_handle_asks_for_the_path_again(
        replica: tuple[Any, dict[str, Handle], list[Any]]) -> None:
    """A model moved to another deployment (a new handle) may carry another
    ``lora``: its path is asked again; an unchanged model's is kept."""
    instance, handles, _ = replica
    asyncio.run(instance.models())
    instance.reconfigure(user_config(gateway_routes([(A, "app-a2"), (B, "app-b")], ALIASES)))
    assert A not in instance._lora_checked and B in instance._lora_checked
    asyncio.run(instance.models())
    assert handles["app-a2"].asked == 1 and handles["app-b"].asked == 1
    assert instance._lora_paths == {A: PATH}


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
