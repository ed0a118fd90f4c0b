"""The only code that talks to Ray: connect, observe, deploy, delete.

Called by the reconciler through the :class:`~servesync.converge.ports.Applier`
protocol (wired in :mod:`servesync.wiring`) and by the e2e tests. Side
effects: connects this process to a Ray cluster (for address ``"local"`` it
starts one in-process with a temp dir), starts Serve's HTTP proxy, submits
and deletes Serve applications. It never waits for a model to start: every
call returns in seconds, later ticks observe. Each model is its own Serve
application plus one gateway at ``/``, and each deployment gets a stable
code version: docs/ARCHITECTURE.md, "The Serve layout" and "Stable code
versions". Every call goes through :class:`~servesync.rayserve.calls.RayCalls`.
"""

from __future__ import annotations

import functools
import importlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ray
from ray import serve

from servesync.config import Config
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.ports import ModelDeploy
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError, RayConnectionLost, ServesyncError, TransientError
from servesync.rayserve import gateway, llmconfigs
from servesync.rayserve.calls import CALL_TIMEOUT_S, RayCalls, classify, parse_host_port

T = TypeVar("T")
__all__ = ["GATEWAY_APP", "RayApplier"]

GATEWAY_ROUTE = "/"
BATCH_CALL_S = 0.1  # more deadline per model of a batch deploy, beyond one call's
BATCH_MAX = 100  # applications per run_many: a chunk's deadline (40 s) stays far under the
# Ray thread's stuck bound (calls.STUCK_AFTER_S, 120 s), whatever the batch's size
CONNECT_TIMEOUT_S = 60.0  # ray.init + serve.start; a local start takes ~10-20 s on 2 cores


def quiet_ray_serve_logs() -> None:
    """Keep Ray Serve's INFO lines out of servesync's log: Ray Serve LLM logs a
    model's whole deployment options (its ``runtime_env``: env values, the
    operator's ``replica_env``) when one is built in this process. Its loggers
    sit under ``ray.serve``: with a handler there, they set up none of their
    own and inherit its WARNING level; those already set up are lowered too."""
    serve_logger = logging.getLogger("ray.serve")
    serve_logger.setLevel(logging.WARNING)
    if not serve_logger.handlers:
        serve_logger.addHandler(logging.NullHandler())  # warnings still reach "ray"'s
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("ray.serve."):
            logging.getLogger(name).setLevel(logging.WARNING)


class RayApplier:
    """Applies servesync's decisions to one Ray Serve cluster."""

    def __init__(self, config: Config, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._config = config
        self._connected = False
        self._owns_cluster = False  # True for address "local": shutdown() ends Ray
        self._temp_dir: str | None = None
        self._calls = RayCalls(call_timeout_s=call_timeout_s)

    # -- connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Connect to Ray and start Serve's HTTP proxy; a no-op when connected.

        Ray 2.60 enables token auth for a cluster started while
        ``~/.ray/auth_token`` exists. A driver finds the token by itself only
        for address ``"auto"``; with an explicit ``host:port`` set
        ``RAY_AUTH_MODE=token`` in servesync's environment.
        """
        if self._connected and ray.is_initialized():
            return
        address = self._config.ray.address
        if "://" not in address:  # a head that is down fails in seconds, not in ray.init's 60
            self._calls.probe_gcs(parse_host_port(address))
        self._bounded(self._connect, what="connect to Ray", timeout_s=CONNECT_TIMEOUT_S)
        self._connected = True

    def _connect(self) -> None:
        address = self._config.ray.address
        if not ray.is_initialized():
            if address == "local":
                self._temp_dir = tempfile.mkdtemp(prefix="servesync-ray-", dir="/tmp")
                ray.init(
                    address="local",
                    num_cpus=self._config.ray.num_cpus,
                    namespace=self._config.ray.namespace,
                    include_dashboard=False,
                    log_to_driver=False,
                    _temp_dir=self._temp_dir,
                )
                self._owns_cluster = True
            else:
                ray.init(
                    address=address,
                    namespace=self._config.ray.namespace,
                    log_to_driver=False,
                )
        self._calls.gcs = parse_host_port(ray.get_runtime_context().gcs_address)
        serving = self._config.serving
        serve.start(http_options={"host": serving.http_host, "port": serving.http_port})
        # Import Ray Serve LLM (and vLLM's config types) in the background now,
        # not in the first deploy: it takes 5 s on an idle 2-core head and close
        # to a minute under load, and a commit should start converging at once.
        # Not inline either: that would hold back the first tick (adoption, READY).
        quiet_ray_serve_logs()
        threading.Thread(target=_import_serve_llm, name="servesync-warm-imports",
                         daemon=True).start()

    def shutdown(self) -> None:
        """Disconnect. Only a cluster this process started (``"local"``) is shut
        down; on an external cluster every application keeps serving. A lost
        connection is left alone: ``ray.shutdown`` would wait on the dead GCS."""
        if not ray.is_initialized() or self._calls.lost is not None:
            self._connected = False
            return
        try:
            if self._owns_cluster:
                # Graceful first, so vLLM engine processes exit with their replicas.
                self._bounded(serve.shutdown, what="shut Serve down", timeout_s=120.0)
        except ServesyncError:
            pass  # the cluster goes away with ray.shutdown() below in any case
        finally:
            ray.shutdown()
            self._connected = False
            self._owns_cluster = False
            self._calls.gcs = None
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    def serving_hash(self) -> str:
        return llmconfigs.serving_hash(self._config.serving)

    # -- reading ----------------------------------------------------------------------

    def observe(self) -> Observed:
        """One snapshot of every Serve application; unreachable → ``reachable=False``;
        a lost connection raises :class:`~servesync.errors.RayConnectionLost`."""
        try:
            self._ensure_reachable()
            status = self._bounded(serve.status, what="read serve.status()")
        except RayConnectionLost:
            raise
        except ServesyncError as e:
            return Observed(reachable=False, error=str(e))
        apps: dict[str, AppObservation] = {}
        for name, app in status.applications.items():
            running = sum(
                int(count)
                for dep in app.deployments.values()
                for state, count in dep.replica_states.items()
                if str(getattr(state, "value", state)) == "RUNNING"
            )
            apps[name] = AppObservation(
                name=name,
                status=_app_status(app.status),
                message=app_message(app),
                running_replicas=running,
            )
        return Observed(apps=apps, reachable=True)

    def replica_actor_ids(self, app_name: str) -> set[str]:
        """Actor ids of the live replicas of one application (empty if none)."""
        self._ensure_reachable()
        details = self._bounded(_serve_details, what="read Serve details")
        app = details.get("applications", {}).get(app_name)
        if app is None:
            return set()
        return {
            str(replica["actor_id"])
            for deployment in app.get("deployments", {}).values()
            for replica in deployment.get("replicas", [])
            if replica.get("actor_id") and replica.get("state") != "STOPPING"
        }

    def replica_pids(self, app_name: str) -> dict[str, int]:
        """Process id of each RUNNING replica of one application, by actor id
        (the e2e tests kill one to check the gateway's second replica)."""
        self._ensure_reachable()
        details = self._bounded(_serve_details, what="read Serve details")
        app = details.get("applications", {}).get(app_name) or {}
        return {
            str(replica["actor_id"]): int(replica["pid"])
            for deployment in app.get("deployments", {}).values()
            for replica in deployment.get("replicas", [])
            if replica.get("pid") and replica.get("state") == "RUNNING"
        }

    # -- writing ----------------------------------------------------------------------

    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None:
        """One model through :meth:`deploy_models`; raises its error."""
        failed = self.deploy_models([ModelDeploy(spec, app_name, public_id)])
        if app_name in failed:
            raise failed[app_name]

    def deploy_models(self, batch: Sequence[ModelDeploy]
                      ) -> Mapping[str, TransientError | PermanentError]:
        """Submit (or update in place) each model's own application, in
        ``serve.run_many`` calls of at most :data:`BATCH_MAX` applications;
        returns once Serve accepted them, not when they run.

        Each application is built on its own, so a spec Ray or pydantic refuses
        fails only its model (returned by app name). A chunk whose submission
        Ray refuses for good is submitted again one application at a time, so
        that one tenant's refused application never fails another's; a
        transient failure (Ray busy or gone) fails the chunk's models with it,
        each retried after its backoff. Chunks keep every call's deadline well
        under the Ray thread's stuck bound (:mod:`servesync.rayserve.calls`)."""
        self._ensure_reachable()
        serving = self._config.serving
        failed: dict[str, TransientError | PermanentError] = {}
        plans = []
        for d in batch:
            try:
                plans.append((d.app_name, llmconfigs.llm_config_kwargs(
                    d.spec, public_id=d.public_id, serving=serving),
                    {**llmconfigs.scaling_options(d.spec),
                     **llmconfigs.rollout_options(d.spec, serving=serving)},
                    llmconfigs.code_version(d.spec, public_id=d.public_id, serving=serving)))
            except Exception as e:  # any one model's config: never the whole batch's tick
                failed[d.app_name] = PermanentError(f"cannot build {d.app_name!r}: "
                                                    f"{type(e).__name__}: {e}")

        def build(chunk: list[tuple[str, dict[str, Any], dict[str, Any], str]]
                  ) -> list[tuple[str, Any]]:
            from ray.serve.llm import LLMConfig, build_llm_deployment

            apps = []
            for app_name, kwargs, options, version in chunk:
                try:
                    app = build_llm_deployment(
                        LLMConfig(**kwargs), name_prefix=llmconfigs.SERVER_NAME_PREFIX,
                        override_serve_options=options)
                    apps.append((app_name, _with_version(app, version)))
                except Exception as e:  # classified per model, by type
                    error = classify(e, what=f"build application {app_name!r}")
                    failed[app_name] = error if isinstance(error, TransientError) \
                        else PermanentError(str(error))
            return apps

        for start in range(0, len(plans), BATCH_MAX):
            chunk = plans[start:start + BATCH_MAX]
            timeout_s = self._calls.call_timeout_s + BATCH_CALL_S * len(chunk)
            apps = self._bounded(functools.partial(build, chunk),
                                 what=f"build {len(chunk)} applications", timeout_s=timeout_s)
            if apps:
                failed.update(self._submit_chunk(apps, timeout_s=timeout_s))
        return failed

    def _submit_chunk(self, apps: list[tuple[str, Any]], *, timeout_s: float
                      ) -> dict[str, TransientError | PermanentError]:
        """One ``run_many`` for ``apps``; refused for good: each alone (its own error)."""
        try:
            self._bounded(lambda: _submit_many(apps),
                          what=f"deploy {len(apps)} applications", timeout_s=timeout_s)
            return {}
        except TransientError as e:
            return {app_name: e for app_name, _ in apps}
        except PermanentError as e:
            if len(apps) == 1:
                return {apps[0][0]: e}
        failed: dict[str, TransientError | PermanentError] = {}
        for app_name, app in apps:
            try:
                self._bounded(functools.partial(_submit_many, [(app_name, app)]),
                              what=f"deploy application {app_name!r}")
            except (TransientError, PermanentError) as e:
                failed[app_name] = e
        return failed

    def deploy_gateway(self, members: Sequence[tuple[str, str]], *,
                       aliases: Sequence[tuple[str, str]] = (),
                       weights: Sequence[tuple[str, str, int]] = (),
                       lora: Sequence[tuple[str, str]] = ()) -> None:
        """Deploy the OpenAI gateway for ``(public model id, app_name)`` pairs,
        with ``(alias name, public model id)`` aliases, the ``(app_name,
        version, weight)`` of a model's versions and the ``(public model id,
        LoRA path)`` of the models with adapters; no members deletes the
        gateway application.

        The deployment's code version never depends on the members, their
        aliases or LoRA paths: they are its ``user_config``, which Serve hands to the running
        replicas' ``reconfigure`` in place (no replica restarts; measured in
        tests/e2e/test_applier_e2e.py). Returns once Serve accepted it."""
        self._ensure_reachable()
        if not members:
            self.delete_app(GATEWAY_APP)
            return
        config = gateway.user_config(
            llmconfigs.gateway_routes(members, aliases, weights, lora))
        replicas = self._config.serving.gateway_replicas

        def submit() -> None:
            _submit(_gateway_app(config, replicas=replicas), name=GATEWAY_APP,
                    route_prefix=GATEWAY_ROUTE)

        self._bounded(submit, what="deploy the gateway")

    def delete_app(self, app_name: str) -> None:
        """Ask Serve to delete one application; does not wait for it to go."""
        self._ensure_reachable()
        self._bounded(
            lambda: serve.delete(app_name, _blocking=False), what=f"delete {app_name!r}"
        )

    # -- plumbing ---------------------------------------------------------------------

    def _ensure_reachable(self) -> None:
        """Connect if needed, then probe the GCS port so a dead head fails fast."""
        if not self._connected or not ray.is_initialized():
            self._connected = False
            self.connect()
        self._calls.probe_gcs()

    def _bounded(self, fn: Callable[[], T], *, what: str, timeout_s: float | None = None) -> T:
        return self._calls.bounded(fn, what=what, timeout_s=timeout_s)


def _with_version(app: Any, version: str) -> Any:
    """``app`` (a one-deployment Serve application) with its deployment's code
    version set to ``version`` instead of the random one ``serve.run_many``
    would give it. Ray 2.60 keeps this only as ``Deployment.options(version=...,
    _internal=True)``; a Ray without it fails loudly here, not silently random."""
    deployment = app._bound_deployment.options(version=version, _internal=True)
    if deployment.version != version:
        raise TypeError(f"Ray ignored the deployment version {version!r}")
    app._bound_deployment = deployment
    return app


def _gateway_app(config: dict[str, Any], *, replicas: int) -> Any:
    """The gateway application: :func:`gateway.ingress_class` with a fixed code
    version, ``replicas`` replicas and its routes as ``user_config``.

    The replicas get :mod:`servesync.rayserve.gateway` by value (cloudpickle),
    so a worker node needs Ray, not servesync."""
    from ray import cloudpickle
    from ray.serve.llm.ingress import OpenAiIngress

    cloudpickle.register_pickle_by_value(gateway)  # type: ignore[no-untyped-call]
    options = OpenAiIngress.get_deployment_options()
    options.pop("autoscaling_config", None)  # a fixed count: Ray's default is 1 replica
    options.update(num_replicas=replicas, max_surge_percent=100, user_config=config)
    ingress: Any = serve.deployment(gateway.ingress_class())
    app = ingress.options(**options).bind()
    return _with_version(app, llmconfigs.gateway_version(gateway.CODE_ID))


def _import_serve_llm() -> None:
    for module in ("ray.serve.llm", "ray.serve.llm.ingress"):
        importlib.import_module(module)


def _submit_many(apps: Sequence[tuple[str, Any]]) -> None:
    """Hand model applications (name, app) to Serve in one call, without waiting."""
    from ray.serve.api import RunTarget

    serve.run_many(
        [RunTarget(target=app, name=name, route_prefix=None) for name, app in apps],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def _submit(app: Any, *, name: str, route_prefix: str | None) -> None:
    """Hand one application to Serve without waiting for it to run.

    ``serve.run`` blocks until RUNNING (forever when resources can't be
    scheduled); ``serve.run_many`` can skip both waits.
    """
    from ray.serve.api import RunTarget

    serve.run_many(
        [RunTarget(target=app, name=name, route_prefix=route_prefix)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def _serve_details() -> dict[str, Any]:
    """Serve's detailed view (replicas with actor ids), as ``serve.status`` reads it."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return {}
    details: dict[str, Any] = client.get_serve_details()
    return details


def app_message(app: Any) -> str:
    """What Ray says of an application: its own message, else its deployments'
    (Serve puts a replica it cannot place there, not on the application:
    "... taken more than 30s to be scheduled ... Resources required for each
    replica: ..., total resources available: ...")."""
    if app.message:
        return str(app.message)
    return "; ".join(str(dep.message) for dep in app.deployments.values() if dep.message)


def _app_status(value: Any) -> AppStatus:
    text = str(getattr(value, "value", value))
    try:
        return AppStatus(text)
    except ValueError:
        return AppStatus.UNHEALTHY
