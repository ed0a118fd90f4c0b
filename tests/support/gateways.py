"""The gateway's replica in this process, no cluster: its class unwrapped from
FastAPI, each model deployment's handle a test's stand-in, its routes applied
by ``reconfigure`` as Serve does (tests/unit/rayserve/test_gateway_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest

H = TypeVar("H")


def gateway_replica(monkeypatch: pytest.MonkeyPatch, handle: Callable[[str], H],
                    config: Mapping[str, Any]) -> tuple[Any, dict[str, H]]:
    """A replica reconfigured with ``config`` (a ``user_config``), and the
    handle (``handle(app name)``) it looked up for each application, by name."""
    pytest.importorskip("ray.serve.llm")
    from ray import serve

    from servesync.rayserve import gateway

    handles: dict[str, H] = {}

    def get_handle(deployment: str, app_name: str, _check_exists: bool = True) -> H:
        handles[app_name] = handle(app_name)
        return handles[app_name]

    monkeypatch.setattr(serve, "get_deployment_handle", get_handle)
    wrapped = gateway.ingress_class()
    cls = next(c for c in wrapped.__mro__ if c.__module__ == gateway.__name__)
    instance = cls()
    instance.reconfigure(config)
    return instance, handles
