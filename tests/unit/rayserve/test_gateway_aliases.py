"""Aliases in the gateway: carried in the routes' ``user_config``, listed on
``/v1/models`` and answered by the same model deployment, the request's
``model`` rewritten to the public id (vLLM answers only to its served name).

The last tests run the gateway's real replica class (Ray Serve LLM's
``OpenAiIngress`` with servesync's ``reconfigure``) in this process, with a
recording stand-in for the model deployment's handle: no cluster. The real
thing answers the ``openai`` client in tests/e2e/test_reconcile_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servesync.config import ServingConfig
from servesync.rayserve import gateway, llmconfigs
from servesync.rayserve.gateway import aliases, cards, resolve, routes, user_config
from servesync.rayserve.llmconfigs import gateway_routes
from tests.support.gateways import gateway_replica
from tests.unit.converge.plancases import spec

A, B = "alice-202601061230-a", "bob-202601061230-b"
MEMBERS = [(A, "app-a"), (B, "app-b")]
ALIASES = [("alice-chat", A), ("alice-prod", A)]


def test_aliases_travel_with_their_model_in_the_user_config() -> None:
    built = gateway_routes(MEMBERS, ALIASES)
    config = user_config(built)
    assert config["routes"][0]["aliases"] == ["alice-chat", "alice-prod"]
    assert "aliases" not in config["routes"][1]  # none: the route reads as before aliases
    parsed = routes(config)
    assert parsed[A].aliases == ("alice-chat", "alice-prod") and parsed[B].aliases == ()
    assert parsed[A].deployment == llmconfigs.server_deployment_name(A)  # the model's own
    assert aliases(parsed) == {"alice-chat": A, "alice-prod": A}


def test_an_alias_is_listed_with_a_card_of_its_own() -> None:
    listed = cards(routes(user_config(gateway_routes(MEMBERS, ALIASES))))
    assert sorted(listed) == sorted([A, B, "alice-chat", "alice-prod"])
    assert listed["alice-chat"]["id"] == "alice-chat"
    assert listed["alice-chat"]["metadata"]["alias_of"] == A
    assert listed["alice-chat"]["metadata"]["model_id"] == A
    assert "alias_of" not in listed[A]["metadata"]


def test_a_request_for_an_alias_goes_on_with_the_public_id() -> None:
    table = {"alice-chat": A}
    assert resolve(table, "alice-chat") == A
    assert resolve(table, A) == A
    assert resolve(table, "bob-chat") == "bob-chat"  # unknown: Ray's 404 says so
    assert resolve(table, None) is None


@pytest.mark.parametrize("entries", [
    [{"model": A, "app": "x", "deployment": "d", "card": {"id": A}, "aliases": "alice-chat"}],
    [{"model": A, "app": "x", "deployment": "d", "card": {"id": A}, "aliases": [""]}],
    [{"model": A, "app": "x", "deployment": "d", "card": {"id": A}, "aliases": [3]}],
    # one name twice: an alias that is a model id, or two models' alias
    [{"model": A, "app": "x", "deployment": "d", "card": {"id": A}, "aliases": [B]},
     {"model": B, "app": "y", "deployment": "e", "card": {"id": B}}],
    [{"model": A, "app": "x", "deployment": "d", "card": {"id": A}, "aliases": ["n"]},
     {"model": B, "app": "y", "deployment": "e", "card": {"id": B}, "aliases": ["n"]}],
])
def test_a_malformed_alias_is_refused(entries: list[dict[str, Any]]) -> None:
    """Serve then keeps the replica's previous routes (the planner never sends these)."""
    with pytest.raises(ValueError, match="gateway user_config"):
        routes({"routes": entries})


def test_aliases_change_neither_a_model_nor_the_gateway_code_version() -> None:
    serving = ServingConfig(accelerator_type="cpu")
    plain, aliased = spec("a", gpus_per_replica=0), spec("a", gpus_per_replica=0,
                                                         aliases=("chat",))
    assert llmconfigs.code_version(plain, public_id=A, serving=serving) == \
        llmconfigs.code_version(aliased, public_id=A, serving=serving)
    assert llmconfigs.llm_config_kwargs(plain, public_id=A, serving=serving) == \
        llmconfigs.llm_config_kwargs(aliased, public_id=A, serving=serving)
    assert llmconfigs.gateway_version(gateway.CODE_ID).startswith(llmconfigs.VERSION_SCHEME)


# --- the replica class itself, in this process ----------------------------------------


class Handle:
    """Stands in for a model deployment's handle: records what each call was sent."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.sent: list[tuple[str, str]] = []

    def options(self, **_: Any) -> Handle:
        return self

    def __getattr__(self, method: str) -> Any:
        handle = self

        class Call:
            def remote(self, body: Any, raw_request: Any) -> AsyncIterator[dict[str, str]]:
                async def answer() -> AsyncIterator[dict[str, str]]:
                    handle.sent.append((method, body.model))
                    yield {"app": handle.app, "model": body.model}
                return answer()

        return Call()


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Handle]]:
    """The gateway's replica class (unwrapped from FastAPI), with the routes of
    MEMBERS and ALIASES applied by ``reconfigure`` as Serve does."""
    return gateway_replica(monkeypatch, Handle, user_config(gateway_routes(MEMBERS, ALIASES)))


def chat(model: str | None) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    return ChatCompletionRequest(model=model, messages=[{"role": "user", "content": "hi"}])


def test_the_replica_routes_an_alias_to_its_model(
        replica: tuple[Any, dict[str, Handle]]) -> None:
    instance, handles = replica

    async def ask(model: str) -> list[Any]:
        return [r async for r in instance._get_response(body=chat(model), call_method="chat")]

    assert asyncio.run(ask("alice-chat")) == [{"app": "app-a", "model": A}]
    assert asyncio.run(ask(A)) == [{"app": "app-a", "model": A}]
    assert handles["app-a"].sent == [("chat", A), ("chat", A)]
    assert handles["app-b"].sent == []
    listed = asyncio.run(instance.models())
    assert sorted(m.id for m in listed.data) == sorted([A, B, "alice-chat", "alice-prod"])
    card = asyncio.run(instance.model_data("alice-prod"))
    assert card.id == "alice-prod" and card.metadata["alias_of"] == A


def test_a_new_alias_keeps_the_model_handle_and_a_removed_one_is_gone(
        replica: tuple[Any, dict[str, Handle]]) -> None:
    """An alias-only change reuses the model's handle (no new handle, as for a
    card-only change), and an alias no longer routed gets Ray's 404."""
    from fastapi import HTTPException

    instance, handles = replica
    made = dict(handles)
    before = dict(instance._default_serve_handles)
    instance.reconfigure(user_config(gateway_routes(MEMBERS, [("alice-new", A)])))
    assert instance._default_serve_handles == before
    assert handles == made  # no handle asked of Serve
    assert instance._aliases == {"alice-new": A}

    async def ask(model: str) -> list[Any]:
        return [r async for r in instance._get_response(body=chat(model), call_method="chat")]

    assert asyncio.run(ask("alice-new")) == [{"app": "app-a", "model": A}]
    with pytest.raises(HTTPException) as refused:
        asyncio.run(ask("alice-chat"))
    assert refused.value.status_code == 404


def test_no_model_named_is_the_only_model_despite_its_aliases(
        replica: tuple[Any, dict[str, Handle]]) -> None:
    instance, _ = replica
    instance.reconfigure(user_config(gateway_routes(MEMBERS[:1], ALIASES)))
    assert asyncio.run(instance._get_model_id(None)) == A
