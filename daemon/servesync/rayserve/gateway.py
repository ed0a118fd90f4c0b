"""The OpenAI gateway's replica code: routes learnt from Serve's ``user_config``.

One gateway application (``servesync-gateway`` at ``/``) routes every model;
its deployment keeps one code version for good (:data:`CODE_ID`), and its
routes (public model id → the model's application, its ``LLMServer:<name>``
deployment and its ``/v1/models`` card) travel as Serve's ``user_config``.
Serve applies a changed ``user_config`` to the running replicas by calling
:meth:`reconfigure` on each, in place: no replica restarts when a model joins
or leaves (docs/ARCHITECTURE.md, "The Serve layout").

Built by :mod:`servesync.rayserve.applier` (``deploy_gateway``) and run inside
Ray's replica processes, which need not have servesync installed: the applier
ships this module to them by value (cloudpickle), so it imports only the
standard library and Ray, never the rest of servesync. :func:`routes` is pure
and unit-tested without Ray; :func:`ingress_class` imports Ray Serve LLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CODE_ID = "servesync-gateway-1"
"""Part of the gateway's code version; bump it when replicas must restart for
a change of this module that keeps its routes' format."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where the gateway sends one public model id."""

    model: str  # the public id clients send
    app: str  # the model's Serve application
    deployment: str  # its LLMServer deployment inside that application
    card: Mapping[str, Any]  # the fields of Ray's ModelCard, listed on /v1/models


def user_config(routes_: list[Route]) -> dict[str, Any]:
    """The gateway deployment's ``user_config`` for these routes (JSON data)."""
    return {"routes": [
        {"model": r.model, "app": r.app, "deployment": r.deployment, "card": dict(r.card)}
        for r in sorted(routes_, key=lambda r: r.model)
    ]}


def routes(config: Mapping[str, Any] | None) -> dict[str, Route]:
    """The routes a ``user_config`` names, by public model id.

    ``None`` (no user_config yet) is no routes. Raises ``ValueError`` on a
    malformed config or a model id routed twice: Serve then keeps the
    replica's previous routes and reports the deployment unhealthy."""
    if config is None:
        return {}
    entries = config.get("routes")
    if not isinstance(entries, list):
        raise ValueError("gateway user_config: 'routes' must be a list")
    out: dict[str, Route] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ValueError("gateway user_config: a route must be a mapping")
        fields = {k: entry.get(k) for k in ("model", "app", "deployment")}
        if not all(isinstance(v, str) and v for v in fields.values()):
            raise ValueError(f"gateway user_config: a route needs model, app, deployment: "
                             f"{sorted(k for k, v in fields.items() if not v)} missing")
        card = entry.get("card")
        if not isinstance(card, Mapping) or card.get("id") != fields["model"]:
            raise ValueError(f"gateway user_config: the card of {fields['model']} must "
                             f"carry its id")
        route = Route(model=str(fields["model"]), app=str(fields["app"]),
                      deployment=str(fields["deployment"]), card=dict(card))
        if route.model in out:
            raise ValueError(f"gateway user_config: {route.model} routed twice")
        out[route.model] = route
    return out


def changed(old: Mapping[str, Route], new: Mapping[str, Route]) -> set[str]:
    """Model ids whose handle must be (re)made: new, or moved to another app or
    deployment. A card-only change keeps the model's handle."""
    return {m for m, r in new.items()
            if m not in old or (old[m].app, old[m].deployment) != (r.app, r.deployment)}


def ingress_class() -> type:
    """The gateway's deployment class: Ray Serve LLM's ``OpenAiIngress`` (its
    ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``... and its 404
    for a model not routed) starting with no routes, plus :meth:`reconfigure`.
    Imports Ray Serve LLM (seconds), so it is called only when deploying."""
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard
    from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

    class ServesyncGateway(OpenAiIngress):
        """``OpenAiIngress`` whose routes Serve sets through ``reconfigure``."""

        def __init__(self) -> None:
            super().__init__(llm_deployments={}, model_cards={})
            self._routes: dict[str, Route] = {}

        def reconfigure(self, config: dict[str, Any] | None) -> None:
            """Serve calls this on each running replica with the new ``user_config``
            (and once at start): swap the routes in, keeping unchanged handles."""
            new = routes(config)
            fresh = changed(self._routes, new)
            # No existence check (a controller round trip each): the planner routes
            # only models whose application Ray lists, and a route whose
            # application is missing must not fail the whole gateway.
            handles = {m: (serve.get_deployment_handle(r.deployment, app_name=r.app,
                                                       _check_exists=False)
                           if m in fresh else self._default_serve_handles[m])
                       for m, r in new.items()}
            cards = {m: ModelCard(**dict(r.card)) for m, r in new.items()}
            # Whole-dict swaps: a request in flight sees the old routes or the new.
            self._configured_serve_handles = {
                m: h for m, h in self._configured_serve_handles.items()
                if m in new and m not in fresh}
            self._default_serve_handles = handles
            self._model_cards = cards
            self._routes = new

    return make_fastapi_ingress(ServesyncGateway)  # type: ignore[no-any-return]
