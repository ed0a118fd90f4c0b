"""The OpenAI gateway's replica code: routes learnt from Serve's ``user_config``.

One gateway application (``servesync-gateway`` at ``/``) routes every model;
its deployment keeps one code version for good (:data:`CODE_ID`), and its
routes (public model id → the model's application, its ``LLMServer:<name>``
deployment and its ``/v1/models`` card) travel as Serve's ``user_config``.
Serve applies a changed ``user_config`` to the running replicas by calling
:meth:`reconfigure` on each, in place: no replica restarts when a model joins
or leaves (docs/ARCHITECTURE.md, "The Serve layout").

A route may carry aliases (the model's ``<user_id>-<alias>`` names): each is
listed on ``/v1/models`` with a card of its own and answered by the same
handle, the request's ``model`` rewritten to the public id on the way (vLLM
answers only to the name it serves, and the answer names it). Aliases ride
in the same ``user_config``, so changing them restarts no replica, neither
the gateway's nor the model's.

LoRA adapters (issue 11) are Ray's: a request for ``<public id>:<adapter>``
goes to the public id's handle with the whole name as Serve's multiplexed
model id (``OpenAiIngress._get_configured_serve_handle``), and the replica
loads the adapter from its own ``lora_config``. ``<alias>:<adapter>`` is
rewritten to ``<public id>:<adapter>`` first (:func:`resolve`). For
``/v1/models`` Ray lists ``<base>:<folder>`` for each folder under a base's
``lora_paths`` entry; each route carries its model's path (``lora_path``, in
the same ``user_config``), so the gateway never asks a model's replica for it
(a call to a model scaled to zero would start it) and a changed path is
listed as soon as Serve hands the new routes to :meth:`reconfigure`. Each
model's adapters are listed on their own: storage that cannot be listed or
an adapter folder whose ``adapter_config.json`` cannot be read leaves out
that model's adapters or that adapter, never another model's. An
adapter name that could step out of that path (:func:`adapter_refusal`:
``/``, ``\\``, ``..``, a control character) is refused with a 400 before Ray
builds ``<path>/<adapter>`` from it.
A route may also be split among a model's *versions* (issue 11), each its own
application: the route lists them with the weight in effect the planner
worked out (only versions whose application serves; the weights sum to 100
unless all are 0), and each unpinned request goes to the next version of a
smooth weighted round-robin (:func:`pick`, nginx's; each replica keeps its
own rotation per model, :class:`Rotation`, restarted when the model's
versions or weights change), so any 100 requests a replica takes split
exactly by weight, interleaved; never to one at weight 0: with all at 0 an
unpinned request is a 503 saying so. A request with the header
``X-Servesync-Version: <name>`` goes to that version (weight 0 included; 404
for a version not routed, 400 on a model without versions) and leaves the
rotation as it was, and every answer of a versioned model names its version
in that header. Weights ride in the ``user_config`` too: a
weight change restarts no replica.

Built by :mod:`servesync.rayserve.applier` (``deploy_gateway``) and run inside
Ray's replica processes, which need not have servesync installed: the applier
ships this module to them by value (cloudpickle), so it imports only the
standard library and Ray, never the rest of servesync. :func:`routes` is pure
and unit-tested without Ray; :func:`ingress_class` imports Ray Serve LLM.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CODE_ID = "servesync-gateway-6"  # 2: aliases; 3: LoRA adapters; 4: versions by weight,
# LoRA paths in the routes; 5: no unpinned request to a version at weight 0; 6: versions
# split by smooth weighted round-robin (exact per replica, was a random draw), adapters
# listed one model at a time (one bad folder no longer hides every model's)
"""Part of the gateway's code version; bump it when replicas must restart for
a change of this module that keeps its routes' format."""

VERSION_HEADER = "X-Servesync-Version"
"""Request header pinning a version; response header naming the version that answered."""

ADAPTER_SEPARATOR = ":"
"""``<model>:<adapter>``: Ray Serve LLM's name of an adapter of a model."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One version of a model, as the gateway routes it."""

    version: str  # its name
    app: str  # its Serve application
    deployment: str  # its LLMServer deployment inside that application
    weight: int  # its share in effect, 0-100


@dataclass(frozen=True, slots=True)
class Route:
    """Where the gateway sends one public model id."""

    model: str  # the public id clients send
    app: str  # the model's Serve application
    deployment: str  # its LLMServer deployment inside that application
    card: Mapping[str, Any]  # the fields of Ray's ModelCard, listed on /v1/models
    aliases: tuple[str, ...] = ()  # other names clients may send for the same model
    versions: tuple[Backend, ...] = ()  # a model with versions: each request goes to one
    lora_path: str | None = None  # where its LoRA adapters are (a folder each); none: no LoRA

    def backends(self) -> tuple[tuple[str, str], ...]:
        """Every (app, deployment) this route sends requests to."""
        return tuple((b.app, b.deployment) for b in self.versions) or \
            ((self.app, self.deployment),)


def user_config(routes_: list[Route]) -> dict[str, Any]:
    """The gateway deployment's ``user_config`` for these routes (JSON data)."""
    return {"routes": [
        {"model": r.model, "app": r.app, "deployment": r.deployment, "card": dict(r.card),
         **({"aliases": sorted(r.aliases)} if r.aliases else {}),
         **({"versions": [{"name": b.version, "app": b.app, "deployment": b.deployment,
                           "weight": b.weight} for b in r.versions]} if r.versions else {}),
         **({"lora_path": r.lora_path} if r.lora_path else {})}
        for r in sorted(routes_, key=lambda r: r.model)
    ]}


def _versions(entry: Mapping[str, Any], model: str) -> tuple[Backend, ...]:
    found = entry.get("versions", [])
    if not isinstance(found, list):
        raise ValueError(f"gateway user_config: the versions of {model} must be a list")
    out = []
    for v in found:
        if not isinstance(v, Mapping) or not all(
                isinstance(v.get(k), str) and v.get(k) for k in ("name", "app", "deployment")) \
                or not isinstance(v.get("weight"), int) or not 0 <= v["weight"] <= 100:
            raise ValueError(f"gateway user_config: a version of {model} needs name, app, "
                             "deployment and a weight 0-100")
        out.append(Backend(version=v["name"], app=v["app"], deployment=v["deployment"],
                           weight=v["weight"]))
    if len({b.version for b in out}) != len(out):
        raise ValueError(f"gateway user_config: a version of {model} is listed twice")
    return tuple(out)


def pick(backends: Sequence[Backend], current: Mapping[str, int]
         ) -> tuple[Backend | None, dict[str, int]]:
    """The version the next unpinned request goes to, and the rotation's
    state after it: smooth weighted round-robin (nginx's). ``current`` is each
    version's current value by name (none yet: 0). Each pick, every version at
    weight > 0 adds its weight to its current value, the largest wins (the
    first listed on a tie) and the winner's is lowered by the total weight.
    From a fresh state the picks repeat every ``total``, so any ``total``
    picks in a row give each version exactly its weight, interleaved rather
    than in blocks (80/20: a a b a a, ...). Never one at 0; None when all are
    at 0 (every version that serves asks 0: only a pinned request is taken).
    Pure: the caller keeps the state (:class:`Rotation`)."""
    live = [b for b in backends if b.weight > 0]
    if not live:
        return None, dict(current)
    raised = {b.version: current.get(b.version, 0) + b.weight for b in live}
    best = max(live, key=lambda b: raised[b.version])  # max keeps the first of equals
    raised[best.version] -= sum(b.weight for b in live)
    return best, raised


class Rotation:
    """One replica's round-robin state (:func:`pick`'s ``current``) of each
    model with versions. Not shared between replicas: each splits its own
    requests exactly."""

    def __init__(self, current: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._current: dict[str, Mapping[str, int]] = dict(current or {})

    def next(self, route: Route) -> Backend | None:
        """The version of ``route`` the next unpinned request goes to (the
        rotation advanced by one)."""
        chosen, self._current[route.model] = pick(route.versions,
                                                  self._current.get(route.model, {}))
        return chosen

    def kept(self, old: Mapping[str, Route], new: Mapping[str, Route]) -> Rotation:
        """The rotation for ``new`` routes: a model's state is kept when its
        versions and their weights (in order) are as in ``old``, else it
        starts afresh (so the new split is exact from its first request)."""
        return Rotation({m: c for m, c in self._current.items()
                         if m in old and m in new and _split(old[m]) == _split(new[m])})


def _split(route: Route) -> tuple[tuple[str, int], ...]:
    return tuple((b.version, b.weight) for b in route.versions)


def choose(route: Route, pinned: str | None, rotation: Rotation) -> Backend | str:
    """The version for a request to ``route`` (``pinned``: the header's name;
    unpinned: the next of ``rotation``, which a pinned request leaves as it
    is), or why none: an error message (the caller answers 400 for a pin on a
    model without versions, 404 for a pin to a version not routed, 503 for an
    unpinned request when every routed version is at weight 0: :func:`refusal`)."""
    if pinned is not None:
        if not route.versions:
            return f"model {route.model} has no versions: drop the {VERSION_HEADER} header"
        for b in route.versions:
            if b.version == pinned:
                return b
        return (f"version {pinned[:64]!r} of model {route.model} is not routed (unknown, or "
                f"its application is not RUNNING); routed: "
                f"{', '.join(b.version for b in route.versions)}")
    chosen = rotation.next(route)
    if chosen is None:
        return (f"model {route.model} takes no unpinned request now: every version that "
                f"serves ({', '.join(b.version for b in route.versions)}) has weight 0; "
                f"name one in the {VERSION_HEADER} header")
    return chosen


def refusal(route: Route, pinned: str | None) -> int:
    """The HTTP status for :func:`choose`'s refusal of a request to ``route``."""
    if not route.versions:
        return 400
    return 404 if pinned is not None else 503


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
        names = entry.get("aliases", [])
        if not isinstance(names, list) or not all(isinstance(a, str) and a for a in names):
            raise ValueError(f"gateway user_config: the aliases of {fields['model']} must "
                             f"be a list of names")
        lora_path = entry.get("lora_path")
        if lora_path is not None and not (isinstance(lora_path, str) and lora_path):
            raise ValueError(f"gateway user_config: the lora_path of {fields['model']} must "
                             f"be a non-empty string")
        route = Route(model=str(fields["model"]), app=str(fields["app"]),
                      deployment=str(fields["deployment"]), card=dict(card),
                      aliases=tuple(names), versions=_versions(entry, str(fields["model"])),
                      lora_path=lora_path)
        if route.versions and route.lora_path is not None:
            raise ValueError(f"gateway user_config: {route.model} has versions: no lora_path")
        if route.model in out:
            raise ValueError(f"gateway user_config: {route.model} routed twice")
        out[route.model] = route
    aliases(out)  # no name routed twice, alias or not
    return out


def aliases(routes_: Mapping[str, Route]) -> dict[str, str]:
    """Alias name → the public model id it stands for. Raises ``ValueError``
    when an alias is also a model id or another route's alias."""
    out: dict[str, str] = {}
    for route in routes_.values():
        for name in route.aliases:
            if name in routes_ or name in out:
                raise ValueError(f"gateway user_config: {name} routed twice")
            out[name] = route.model
    return out


def cards(routes_: Mapping[str, Route]) -> dict[str, dict[str, Any]]:
    """What ``/v1/models`` lists, by name: each route's card, and for each of
    its aliases a copy with the alias as ``id`` and ``metadata.alias_of``
    naming the public id."""
    out: dict[str, dict[str, Any]] = {}
    for model, route in routes_.items():
        out[model] = dict(route.card)
        metadata = route.card.get("metadata")
        for name in route.aliases:
            out[name] = {**route.card, "id": name, "metadata": {
                **(metadata if isinstance(metadata, Mapping) else {}), "alias_of": model}}
    return out


def resolve(aliases_: Mapping[str, str], model: object) -> object:
    """The ``model`` a request is sent on with: an alias's public id (also as
    the base of ``<alias>:<adapter>``), else as sent."""
    if not isinstance(model, str):
        return model
    base, sep, adapter = model.partition(ADAPTER_SEPARATOR)
    return aliases_.get(base, base) + sep + adapter


def adapter_refusal(model: str) -> str | None:
    """Why ``<model>:<adapter>`` is refused (a 400), or None: an empty
    adapter, or one holding ``/``, ``\\``, ``..`` or a control character,
    which Ray would append to the model's LoRA path (``<path>/<adapter>``)
    and could so name another folder than one under it."""
    base, sep, adapter = model.partition(ADAPTER_SEPARATOR)
    if not sep:
        return None
    if not adapter or "/" in adapter or "\\" in adapter or ".." in adapter or any(
            ord(c) < 32 or 127 <= ord(c) < 160 for c in adapter):
        return (f"adapter {adapter[:64]!r} of model {base[:128]!r}: an adapter name is one "
                f"folder under the model's LoRA path (no '/', '\\', '..' or control "
                f"characters)")
    return None


def changed(old: Mapping[str, Route], new: Mapping[str, Route]) -> set[str]:
    """Model ids whose handle must be (re)made: new, or moved to another app or
    deployment (or another set of versions). A card-only or weight-only change
    keeps the model's handles."""
    return {m for m, r in new.items()
            if m not in old or old[m].backends() != r.backends()}


def ingress_class() -> type:
    """The gateway's deployment class: Ray Serve LLM's ``OpenAiIngress`` (its
    ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``... and its 404
    for a model not routed) starting with no routes, plus :meth:`reconfigure`.
    Imports Ray Serve LLM (seconds), so it is called only when deploying."""
    import asyncio
    import logging

    from fastapi import HTTPException
    from ray import serve
    from ray.llm._internal.common.utils import lora_utils
    from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard, ModelList
    from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

    log = logging.getLogger(__name__)

    class ServesyncGateway(OpenAiIngress):
        """``OpenAiIngress`` whose routes Serve sets through ``reconfigure``."""

        def __init__(self) -> None:
            super().__init__(llm_deployments={}, model_cards={})
            self._routes: dict[str, Route] = {}
            self._aliases: dict[str, str] = {}
            self._versions: dict[str, dict[str, Any]] = {}  # model -> version -> handle
            self._rotation = Rotation()  # where each model's split stands in this replica
            # per request: the version pinned (``pin``) and the one chosen (``version``);
            # made here, in the replica: a ContextVar cannot be pickled with the class
            self._request: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
                "servesync_request")

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
            versions = {m: {b.version: (serve.get_deployment_handle(
                b.deployment, app_name=b.app, _check_exists=False).options(stream=True)
                if m in fresh else self._versions[m][b.version]) for b in r.versions}
                for m, r in new.items() if r.versions}
            listed = {name: ModelCard(**card) for name, card in cards(new).items()}
            # Whole-dict swaps: a request in flight sees the old routes or the new.
            self._configured_serve_handles = {
                m: h for m, h in self._configured_serve_handles.items()
                if m in new and m not in fresh}
            self._default_serve_handles = handles
            self._versions = versions
            self._aliases = aliases(new)
            self._model_cards = listed
            self._lora_paths = {m: r.lora_path for m, r in new.items() if r.lora_path}
            self._rotation = self._rotation.kept(self._routes, new)
            self._routes = new

        async def models(self) -> Any:
            """Ray's listing (every model, and ``<model>:<adapter>`` for each
            adapter folder under the LoRA path its route carries), one model's
            adapters at a time: a model whose storage cannot be listed (no
            boto3 on this node, no access...) is listed without adapters, and
            an adapter whose config cannot be read is left out (:meth:`model`),
            neither hiding any other model's. The storage is listed in a worker
            thread (boto3 blocks), from the routes as they stood at the call:
            ``reconfigure`` swaps whole dicts, this never writes them."""
            listed: dict[str, Any] = dict(self._model_cards)
            paths = self._lora_paths
            for model_id in list(listed):
                path = paths.get(model_id)
                if path is None:
                    continue
                try:
                    found = await asyncio.to_thread(
                        lora_utils.get_lora_model_ids,
                        dynamic_lora_loading_path=path, base_model_id=model_id)
                except Exception as e:
                    log.warning("gateway: cannot list the LoRA adapters of %s (%s)",
                                model_id, type(e).__name__)
                    continue
                for adapter_id in found:
                    card = await self.model(adapter_id)
                    if card is not None:
                        listed[adapter_id] = card
            return ModelList(data=list(listed.values()))

        async def model(self, model_id: str) -> Any:
            """Ray's card of one name; ``<alias>:<adapter>`` as its public id's;
            none (Ray's 404) for a refused adapter name, storage never asked,
            and for an adapter whose config cannot be read (Ray turns only a
            missing one into none: a malformed ``adapter_config.json`` raises)."""
            resolved = resolve(self._aliases, model_id)
            if isinstance(resolved, str) and ADAPTER_SEPARATOR in resolved:
                if adapter_refusal(resolved) is not None:
                    return None
                try:
                    return await super().model(resolved)
                except Exception as e:
                    log.warning("gateway: cannot read the config of LoRA adapter %s (%s); "
                                "not listed", resolved[:256], type(e).__name__)
                    return None
            return await super().model(model_id)

        def _get_configured_serve_handle(self, model_id: str) -> Any:
            """Ray's, except for a model with versions: one version's handle,
            by weight or by the request's pin (a 404/400 when it cannot be).
            ``<model>:<adapter>``: a 400 for a refused adapter name
            (:func:`adapter_refusal`), for a pin (as on the model itself) and
            on a model with versions (they serve no adapters)."""
            refused = adapter_refusal(model_id)
            if refused is not None:
                raise HTTPException(400, refused)
            base, sep, _ = model_id.partition(ADAPTER_SEPARATOR)
            route = self._routes.get(base)
            request = self._request.get(None)
            pinned = request.get("pin") if request is not None else None
            if sep and route is not None and route.versions:
                raise HTTPException(400, f"model {base} has versions: they serve no "
                                         f"LoRA adapters")
            if route is None or (not route.versions and pinned is None):
                return super()._get_configured_serve_handle(model_id)
            chosen = choose(route, pinned, self._rotation)
            if isinstance(chosen, str):
                raise HTTPException(refusal(route, pinned), chosen)
            if request is not None:
                request["version"] = chosen.version
            return self._versions[model_id][chosen.version]

        async def _process_llm_request(self, body: Any, call_method: str,
                                       raw_request: Any = None) -> Any:
            """Ray's, with the version that answered in the response's header."""
            request: dict[str, str] = {}
            pinned = raw_request.headers.get(VERSION_HEADER) if raw_request is not None \
                else None
            if pinned is not None:
                request["pin"] = pinned
            token = self._request.set(request)
            try:
                response = await super()._process_llm_request(body, call_method, raw_request)
            finally:
                self._request.reset(token)
            if "version" in request:
                response.headers[VERSION_HEADER] = request["version"]
            return response

        async def _get_model_id(self, model: str | None) -> str:
            """As Ray's (no model: the only one), counting models, not aliases."""
            if model is None and len(self._routes) == 1:
                model = next(iter(self._routes))
            return await super()._get_model_id(model)

        async def _get_response(  # type: ignore[override]  # Ray's return type, loosened
                self, *, body: Any, call_method: str,
                raw_request: Any = None) -> AsyncIterator[Any]:
            """Ray's, with an alias in ``body.model`` replaced by its public id."""
            model = resolve(self._aliases, body.model)
            if model != body.model:
                body = body.model_copy(update={"model": model})
            async for response in super()._get_response(
                    body=body, call_method=call_method, raw_request=raw_request):
                yield response

    return make_fastapi_ingress(ServesyncGateway)  # type: ignore[no-any-return]
