"""A model's versions in the gateway: one route split by weight among the
versions' applications, carried in the ``user_config`` (a weight change
keeps every handle), a pin header, and the answering version named in the
response. The replica class runs in this process with stand-in handles, as
in test_gateway_aliases.py; the real thing is tests/e2e (versions)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from servesync.rayserve import gateway
from servesync.rayserve.gateway import (
    VERSION_HEADER,
    Backend,
    choose,
    pick,
    refusal,
    routes,
    user_config,
)
from servesync.rayserve.llmconfigs import gateway_routes, server_deployment_name
from tests.support.gateways import gateway_replica
from tests.unit.rayserve.test_gateway_aliases import Handle, chat

A, B = "alice-202601061230-m", "bob-202601061230-b"
STABLE, CANARY = "svc-alice-x.stable", "svc-alice-x.canary"
MEMBERS = [(A, STABLE), (A, CANARY), (B, "app-b")]
WEIGHTS = [(STABLE, "stable", 80), (CANARY, "canary", 20)]


def test_one_route_per_model_split_among_its_versions() -> None:
    built = {r.model: r for r in gateway_routes(MEMBERS, [("alice-chat", A)], WEIGHTS)}
    assert sorted(built) == [A, B]  # listed once
    route = built[A]
    assert [(b.version, b.app, b.weight) for b in route.versions] == [
        ("canary", CANARY, 20), ("stable", STABLE, 80)]
    assert {b.deployment for b in route.versions} == {server_deployment_name(A)}
    assert built[B].versions == ()
    parsed = routes(user_config(list(built.values())))
    assert parsed[A].versions == route.versions and parsed[A].aliases == ("alice-chat",)
    assert "versions" not in user_config([built[B]])["routes"][0]  # a plain route as before


def test_pick_follows_the_weights() -> None:
    backends = (Backend("a", "x", "d", 80), Backend("b", "y", "d", 20), Backend("c", "z", "d", 0))
    rng = random.Random(7)
    counts = Counter(pick(backends, rng.random()).version for _ in range(10_000))
    assert 7_800 < counts["a"] < 8_200 and counts["c"] == 0
    assert pick(backends, 0.0).version == "a" and pick(backends, 0.999999).version == "b"
    zero = (Backend("a", "x", "d", 0), Backend("b", "y", "d", 0))
    assert {pick(zero, d) for d in (0.0, 0.5, 0.999999)} == {None}  # nothing unpinned


def test_all_versions_at_weight_0_refuse_unpinned_requests_but_take_pins() -> None:
    zero = ((A, "svc-1.stable", "stable", 0), (A, "svc-1.canary", "canary", 0))
    members = tuple((p, app) for p, app, _, _ in zero)
    weights = tuple((app, v, w) for _, app, v, w in zero)
    route = routes(user_config(gateway_routes(members, (), weights)))[A]
    refused = choose(route, None, 0.5)
    assert isinstance(refused, str) and "weight 0" in refused and VERSION_HEADER in refused
    assert refusal(route, None) == 503 and refusal(route, "v9") == 404
    pinned = choose(route, "canary", 0.5)
    assert isinstance(pinned, Backend) and pinned.version == "canary"


def test_a_pin_names_a_routed_version_or_says_why_not() -> None:
    route = routes(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))[A]
    chosen = choose(route, "canary", 0.0)
    assert isinstance(chosen, Backend) and chosen.version == "canary"
    refused = choose(route, "v9", 0.0)
    assert isinstance(refused, str) and "'v9'" in refused and "canary, stable" in refused
    plain = routes(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))[B]
    assert "has no versions" in str(choose(plain, "canary", 0.0))


@pytest.mark.parametrize("versions", [
    "all", [{"name": "a", "app": "x", "deployment": "d"}],
    [{"name": "a", "app": "x", "deployment": "d", "weight": 101}],
    [{"name": "a", "app": "x", "deployment": "d", "weight": 1}] * 2,
])
def test_malformed_versions_are_refused(versions: Any) -> None:
    with pytest.raises(ValueError, match="gateway user_config"):
        routes({"routes": [{"model": A, "app": "x", "deployment": "d", "card": {"id": A},
                            "versions": versions}]})


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Handle]]:
    return gateway_replica(monkeypatch, Handle,
                           user_config(gateway_routes(MEMBERS, (), WEIGHTS)))


def request(pin: str | None = None) -> Any:
    from starlette.requests import Request

    headers = [(gateway.VERSION_HEADER.lower().encode(), pin.encode())] if pin else []
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions",
                    "headers": headers, "query_string": b""})


def test_the_replica_splits_requests_by_weight_and_names_the_version(
        replica: tuple[Any, dict[str, Handle]]) -> None:
    instance, handles = replica
    random.seed(3)

    async def ask(n: int, pin: str | None = None) -> list[str]:
        out = []
        for _ in range(n):
            response = await instance._process_llm_request(chat(A), "chat", request(pin))
            out.append(response.headers[gateway.VERSION_HEADER])
        return out

    answered = Counter(asyncio.run(ask(1000)))
    assert 740 < answered["stable"] < 860, answered
    assert answered["stable"] + answered["canary"] == 1000
    assert len(handles[CANARY].sent) == answered["canary"]
    assert asyncio.run(ask(5, pin="canary")) == ["canary"] * 5
    listed = asyncio.run(instance.models())
    assert sorted(m.id for m in listed.data) == [A, B]  # the model once


def test_a_weight_change_keeps_every_handle_and_a_bad_pin_is_a_404(
        replica: tuple[Any, dict[str, Handle]]) -> None:
    from fastapi import HTTPException

    instance, handles = replica
    made = dict(handles)
    kept = dict(instance._versions[A])
    instance.reconfigure(user_config(gateway_routes(
        MEMBERS, (), [(STABLE, "stable", 0), (CANARY, "canary", 100)])))
    assert handles == made and instance._versions[A] == kept  # no handle asked of Serve

    async def ask(pin: str | None = None, model: str = A) -> str:
        response = await instance._process_llm_request(chat(model), "chat", request(pin))
        return str(response.headers.get(gateway.VERSION_HEADER))

    assert {asyncio.run(ask()) for _ in range(20)} == {"canary"}
    assert asyncio.run(ask("stable")) == "stable"  # weight 0: only when pinned
    with pytest.raises(HTTPException) as refused:
        asyncio.run(ask("v9"))
    assert refused.value.status_code == 404
    with pytest.raises(HTTPException) as plain:
        asyncio.run(ask("canary", model=B))
    assert plain.value.status_code == 400
    assert asyncio.run(ask(model=B)) == "None"  # a plain model: no header
    instance.reconfigure(user_config(gateway_routes(  # only a version asking 0 serves
        [(A, CANARY), (B, "app-b")], (), [(CANARY, "canary", 0)])))
    with pytest.raises(HTTPException) as unpinned:
        asyncio.run(ask())
    assert unpinned.value.status_code == 503 and "weight 0" in str(unpinned.value.detail)
    assert asyncio.run(ask("canary")) == "canary"


def test_the_replica_class_pickles_by_value() -> None:
    """Serve ships the class to the replicas with cloudpickle, by value: nothing
    it holds at class level may be unpicklable (a module-level ContextVar was)."""
    pytest.importorskip("ray.serve.llm")
    import cloudpickle

    cloudpickle.register_pickle_by_value(gateway)
    try:
        assert cloudpickle.dumps(gateway.ingress_class())  # loading it here recurses, as
        # it always did (the class is already this process's): the replicas load it
    finally:
        cloudpickle.unregister_pickle_by_value(gateway)
