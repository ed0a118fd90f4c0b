"""The stable code versions reach Serve, and Serve's rule for them is what
:mod:`servesync.rayserve.applier` relies on: a change of ``num_replicas`` or
``autoscaling_config`` under one code version restarts no replica, a new
code version does. Imports Ray's Serve classes; starts nothing."""

from __future__ import annotations

from typing import Any

import pytest

serve = pytest.importorskip("ray.serve")

from ray.serve._private.config import DeploymentConfig  # noqa: E402
from ray.serve._private.version import DeploymentVersion  # noqa: E402

from servesync.rayserve.applier import _with_version  # noqa: E402


class Echo:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config


def test_with_version_sets_it_and_keeps_everything_else() -> None:
    app = serve.deployment(Echo, name="echo", num_replicas=2).bind(config={"a": 1})
    assert app._bound_deployment.version is None
    out = _with_version(app, "servesync-1-abc")
    deployment = out._bound_deployment
    assert deployment.version == "servesync-1-abc"
    assert deployment.name == "echo"
    assert deployment.num_replicas == 2
    assert deployment.init_kwargs == {"config": {"a": 1}}


def version(code: str, **config: Any) -> DeploymentVersion:
    return DeploymentVersion(code, DeploymentConfig(**config), {"num_cpus": 1})


@pytest.mark.parametrize("new", [
    {"num_replicas": 3},
    {"num_replicas": None, "autoscaling_config": {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}},
], ids=["num_replicas", "to autoscaling"])
def test_serve_scales_one_code_version_without_restart(new: dict[str, Any]) -> None:
    old = version("v1", num_replicas=1)
    assert not old.requires_actor_restart(version("v1", **new))
    assert old.requires_actor_restart(version("v2", **new))


def test_serve_changes_between_autoscaling_bounds_without_restart() -> None:
    def bounds(low: int, high: int) -> dict[str, Any]:
        return {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 2}

    old = version("v1", num_replicas=None, autoscaling_config=bounds(1, 2))
    new = version("v1", num_replicas=None, autoscaling_config=bounds(0, 5))
    assert not old.requires_actor_restart(new)
    assert not old.requires_actor_reconfigure(new)


def test_a_new_user_config_reconfigures_the_gateway_in_place() -> None:
    """The gateway's routes are its user_config: Serve hands a change to the
    running replicas' ``reconfigure``, restarting none (its version is fixed)."""
    routes = {"routes": [{"model": "a", "app": "x", "deployment": "d", "card": {"id": "a"}}]}
    old = version("gw", num_replicas=2, user_config={"routes": []})
    new = version("gw", num_replicas=2, user_config=routes)
    assert not old.requires_actor_restart(new)
    assert old.requires_actor_reconfigure(new)
    assert not new.requires_actor_reconfigure(version("gw", num_replicas=2, user_config=routes))
