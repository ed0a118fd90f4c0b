"""The gateway's routes as Serve's ``user_config``: built by the applier, read
by the replicas' ``reconfigure`` (pure parts; the replica itself runs in
tests/e2e/test_applier_e2e.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from servesync.rayserve import gateway
from servesync.rayserve.gateway import Route, changed, routes, user_config
from servesync.rayserve.llmconfigs import gateway_routes


def test_user_config_round_trips_to_the_same_routes() -> None:
    built = gateway_routes([("b-2-y", "app-b"), ("a-1-x", "app-a")])
    config = user_config(built)
    assert [r["model"] for r in config["routes"]] == ["a-1-x", "b-2-y"]
    assert routes(config) == {r.model: r for r in built}


def test_no_user_config_is_no_routes() -> None:
    assert routes(None) == {}
    assert routes({"routes": []}) == {}


@pytest.mark.parametrize("config", [
    {},
    {"routes": "a"},
    {"routes": ["a"]},
    {"routes": [{"model": "a", "app": "", "deployment": "d", "card": {"id": "a"}}]},
    {"routes": [{"model": "a", "app": "x", "deployment": "d", "card": {"id": "b"}}]},
    {"routes": [{"model": "a", "app": "x", "deployment": "d", "card": {"id": "a"}}] * 2},
])
def test_a_malformed_user_config_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="gateway user_config"):
        routes(config)


def test_only_new_or_moved_models_get_a_new_handle() -> None:
    def route(model: str, app: str, title: str = "") -> Route:
        return Route(model, app, f"LLMServer:{model}", {"id": model, "title": title})

    old = {"a": route("a", "app-a"), "b": route("b", "app-b"), "gone": route("gone", "x")}
    new = {"a": route("a", "app-a", title="new card"), "b": route("b", "app-b2"),
           "c": route("c", "app-c")}
    assert changed(old, new) == {"b", "c"}
    assert changed(new, new) == set()


def test_the_gateway_module_needs_no_servesync_on_a_worker() -> None:
    """Replicas get this module by value: it may import Ray (and fastapi, which
    Ray Serve needs), never servesync."""
    tree = ast.parse(Path(gateway.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("servesync")}
    assert {m.split(".")[0] for m in imported} <= {"__future__", "collections", "contextvars",
                                                   "dataclasses", "random", "typing", "ray",
                                                   "fastapi", "asyncio", "logging", "time"}
