"""A model's versions in the gateway: one route split by weight among the
versions' applications, carried in the ``user_config`` (a weight change
keeps every handle), a pin header, and the answering version named in the
response. The replica class runs in this process with stand-in handles, as
in test_gateway_aliases.py; the real thing is tests/e2e (versions)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from servesync.rayserve import gateway
from servesync.rayserve.gateway import (
    VERSION_HEADER,
    Backend,
    Rotation,
    Route,
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


def picks(weights: tuple[int, ...], n: int, current: dict[str, int] | None = None
          ) -> tuple[list[str], dict[str, int]]:
    """``n`` picks among versions v0, v1... at ``weights``, from ``current``
    (fresh: none), and the state after them."""
    backends = tuple(Backend(f"v{i}", f"app-{i}", "d", w) for i, w in enumerate(weights))
    state, out = dict(current or {}), []
    for _ in range(n):
        chosen, state = pick(backends, state)
        assert chosen is not None
        out.append(chosen.version)
    return out, state


@pytest.mark.parametrize("weights", [(72, 18, 10), (80, 20), (50, 50), (1, 99),
                                     (45, 45, 10), (60, 0, 40)])
def test_any_100_picks_split_exactly_by_weight(weights: tuple[int, ...]) -> None:
    """Smooth weighted round-robin: any 100 picks in a row (not only the first
    100) give each version exactly its weight, one at 0 none."""
    got, _ = picks(weights, 300)
    for start in range(201):
        window = Counter(got[start:start + 100])
        assert [window[f"v{i}"] for i in range(len(weights))] == list(weights), start


@pytest.mark.parametrize("weights", [(72, 18, 10), (80, 20), (50, 50), (1, 99),
                                     (45, 45, 10), (97, 2, 1), (40, 30, 20, 10)])
def test_picks_are_interleaved_not_in_blocks(weights: tuple[int, ...]) -> None:
    """After every pick each version's count is within one request of its
    share so far (a random draw or a block per version strays far more)."""
    got, _ = picks(weights, 100)
    for k in range(1, 101):
        seen = Counter(got[:k])
        for i, w in enumerate(weights):
            assert abs(seen[f"v{i}"] - k * w / 100) <= 1, (k, i)


def test_two_versions_alternate_with_no_run_longer_than_needed() -> None:
    assert "".join(v[1] for v in picks((80, 20), 10)[0]) == "0010000100"  # a a b a a
    assert "".join(v[1] for v in picks((50, 50), 6)[0]) == "010101"
    assert "".join(v[1] for v in picks((20, 80), 5)[0]) == "11011"  # the order is weights'
    assert "".join(v[1] for v in picks((72, 18, 10), 10)[0]) == "0010020010"
    for heavy, light in ((80, 20), (72, 28), (99, 1), (51, 49)):
        got = "".join(v[1] for v in picks((heavy, light), 300)[0])
        longest = max(len(run) for run in got.split("1"))
        assert longest == -(-heavy // light), (heavy, light)  # ceil(heavy / light)


def test_pick_is_pure_and_never_takes_a_version_at_0() -> None:
    backends = (Backend("a", "x", "d", 80), Backend("b", "y", "d", 20), Backend("c", "z", "d", 0))
    state = {"a": 10, "b": -10}
    chosen, after = pick(backends, state)
    assert chosen is not None and chosen.version == "a"
    assert state == {"a": 10, "b": -10} and after == {"a": -10, "b": 10}  # a new dict
    assert pick(backends, state) == (chosen, after)  # the same state, the same pick
    zero = (Backend("a", "x", "d", 0), Backend("b", "y", "d", 0))
    assert pick(zero, {}) == (None, {})  # nothing unpinned
    assert pick((), {}) == (None, {})


def test_the_rotation_restarts_when_a_models_versions_or_weights_change() -> None:
    def route(*weights: tuple[str, int], model: str = A) -> Route:
        return Route(model, "x", "d", {"id": model},
                     versions=tuple(Backend(v, f"app-{v}", "d", w) for v, w in weights))

    def take(rotation: Rotation, r: Route, n: int) -> str:
        return "".join(b.version if (b := rotation.next(r)) else "-" for _ in range(n))

    split = {A: route(("a", 80), ("b", 20)), B: route(("c", 50), ("d", 50), model=B)}
    rotation = Rotation()
    assert take(rotation, split[A], 3) == "aab" and take(rotation, split[B], 1) == "c"
    same = rotation.kept(split, dict(split))  # e.g. a card or an alias changed
    assert take(same, split[A], 2) == "aa" and take(same, split[B], 1) == "d"  # carried on
    moved = {A: route(("a", 50), ("b", 50)), B: split[B]}
    fresh = rotation.kept(split, moved)
    assert take(fresh, moved[A], 4) == "abab"  # from the start: exact from its first request
    assert take(fresh, moved[B], 1) == "d"  # the other model's kept
    renamed = {A: route(("a", 80), ("c", 20))}
    assert take(rotation.kept(split, renamed), renamed[A], 3) == "aac"
    assert take(rotation.kept(split, {}), split[A], 3) == "aab"  # a model gone, then back


def test_all_versions_at_weight_0_refuse_unpinned_requests_but_take_pins() -> None:
    zero = ((A, "svc-1.stable", "stable", 0), (A, "svc-1.canary", "canary", 0))
    members = tuple((p, app) for p, app, _, _ in zero)
    weights = tuple((app, v, w) for _, app, v, w in zero)
    route = routes(user_config(gateway_routes(members, (), weights)))[A]
    refused = choose(route, None, Rotation())
    assert isinstance(refused, str) and "weight 0" in refused and VERSION_HEADER in refused
    assert refusal(route, None) == 503 and refusal(route, "v9") == 404
    pinned = choose(route, "canary", Rotation())
    assert isinstance(pinned, Backend) and pinned.version == "canary"


def test_a_pin_names_a_routed_version_or_says_why_not() -> None:
    route = routes(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))[A]
    chosen = choose(route, "canary", Rotation())
    assert isinstance(chosen, Backend) and chosen.version == "canary"
    refused = choose(route, "v9", Rotation())
    assert isinstance(refused, str) and "'v9'" in refused and "canary, stable" in refused
    plain = routes(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))[B]
    assert "has no versions" in str(choose(plain, "canary", Rotation()))


def test_a_pinned_request_leaves_the_rotation_as_it_was() -> None:
    route = routes(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))[A]  # stable 80, canary 20

    def unpinned(rotation: Rotation, n: int) -> list[str]:
        return [b.version for _ in range(n)
                if isinstance(b := choose(route, None, rotation), Backend)]

    rotation, alone = Rotation(), Rotation()
    assert unpinned(rotation, 2) == unpinned(alone, 2) == ["stable", "stable"]
    for pin in ("canary", "stable", "canary", "v9"):
        choose(route, pin, rotation)
    assert unpinned(rotation, 98) == unpinned(alone, 98)
    assert unpinned(rotation, 100).count("canary") == 20


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

    async def ask(n: int, pin: str | None = None) -> list[str]:
        out = []
        for _ in range(n):
            response = await instance._process_llm_request(chat(A), "chat", request(pin))
            out.append(response.headers[gateway.VERSION_HEADER])
        return out

    first = asyncio.run(ask(5))
    assert first == ["stable", "stable", "canary", "stable", "stable"]  # 80/20, interleaved
    assert asyncio.run(ask(5, pin="canary")) == ["canary"] * 5  # the rotation stays put
    answered = Counter(first + asyncio.run(ask(995)))
    assert answered == {"stable": 800, "canary": 200}  # exact, not drawn
    assert len(handles[CANARY].sent) == 200 + 5
    instance.reconfigure(user_config(gateway_routes(  # 50/50: the split starts afresh
        MEMBERS, (), [(STABLE, "stable", 50), (CANARY, "canary", 50)])))
    assert asyncio.run(ask(3)) == ["canary", "stable", "canary"]
    instance.reconfigure(user_config(gateway_routes(MEMBERS, (), WEIGHTS)))  # and again
    assert asyncio.run(ask(5)) == first  # not carried on from 50/50's mid-cycle state
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
