"""The one module that talks to Ray: connect, observe, deploy, delete.

Called by the daemon's tick (and the e2e tests) through :class:`RayApplier`.
Side effects: connects this process to a Ray cluster (or, for address
``"local"``, starts one in-process with a temp dir), starts Ray Serve's HTTP
proxy, and submits or deletes Serve applications. It never waits for a model
to start: every call returns in seconds and later ticks :meth:`observe`.

Layout on the cluster (DESIGN.md, measured): each model is its own Serve
application (``build_llm_deployment``, no route prefix), so deploying one
never restarts another; one small gateway application at ``/`` is the OpenAI
ingress for all of them, holding a handle to each model's ``LLMServer:<name>``
deployment.

Stable versions (measured, see tests/e2e/test_applier_e2e.py): ``serve.run`` /
``serve.run_many`` give a deployment without a version a random one, and
Serve restarts every replica whose code version differs from the target
(``DeploymentVersion.requires_actor_restart``: code version, actor options,
placement group, max replicas per node). Everything else Serve compares is a
lightweight option: ``num_replicas`` and ``autoscaling_config`` change the
replica count of the running version, and the bound init kwargs (the
LLMConfig) are not part of the version at all; a replica started later simply
gets the newer ones. So each model deployment gets
:func:`~servesync.llmconfigs.code_version` (a hash of its LLMConfig kwargs),
and the LLMConfig is built *without* the scaling fields, which go to
``build_llm_deployment(override_serve_options=...)`` instead: every replica of
one version is constructed with identical kwargs, a scale-only change keeps
the serving replicas and adds or removes some, any other change is a new
version that Serve rolls out, and resubmitting an unchanged spec is a no-op.
The gateway's version is a hash of its members. Ray 2.60 removed the public
``version`` option; ``Deployment.options(version=..., _internal=True)`` is
the private way in, checked by :func:`_with_version`. Caveat: Serve leaves a
deployment that failed to start alone when the same version is resubmitted;
only a changed spec (or a scale) makes it try again.

Ray exceptions become :class:`~servesync.errors.TransientError` (connection,
timeouts, dead actors: retry) or :class:`~servesync.errors.PermanentError`
(config Ray or pydantic rejects), by type, never by message text. Every Ray
call runs under a deadline, after a TCP probe of the GCS, because a call
against a dead GCS can hang for Ray's 60 s reconnect timeout.
"""

from __future__ import annotations

import importlib
import queue
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import ray
from ray import serve

from servesync import llmconfigs
from servesync.config import Config
from servesync.errors import PermanentError, ServesyncError, TransientError
from servesync.naming import GATEWAY_APP
from servesync.records import AppObservation, AppStatus, Observed
from servesync.specs import ModelSpec

T = TypeVar("T")
__all__ = ["GATEWAY_APP", "RayApplier", "classify"]

GATEWAY_ROUTE = "/"
CALL_TIMEOUT_S = 30.0  # one Ray call (deploy submission, status, delete)
CONNECT_TIMEOUT_S = 60.0  # ray.init + serve.start; a local start takes ~10-20 s on 2 cores
GCS_PROBE_TIMEOUT_S = 2.0


class RayApplier:
    """Applies servesync's decisions to one Ray Serve cluster."""

    def __init__(self, config: Config, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._config = config
        self._call_timeout_s = call_timeout_s
        self._connected = False
        self._owns_cluster = False  # True for address "local": shutdown() ends Ray
        self._temp_dir: str | None = None
        self._gcs: tuple[str, int] | None = None
        self._thread = _RayThread()

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
        self._gcs = _parse_host_port(ray.get_runtime_context().gcs_address)
        serving = self._config.serving
        serve.start(http_options={"host": serving.http_host, "port": serving.http_port})
        # Import Ray Serve LLM (and vLLM's config types) in the background now,
        # not in the first deploy: it takes 5 s on an idle 2-core head and close
        # to a minute under load, and a commit should start converging at once.
        # Not inline either: that would hold back the first tick (adoption, READY).
        threading.Thread(target=_import_serve_llm, name="servesync-warm-imports",
                         daemon=True).start()

    def shutdown(self) -> None:
        """Disconnect. Only a cluster this process started (``"local"``) is shut
        down; on an external cluster every application keeps serving."""
        if not ray.is_initialized():
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
            self._gcs = None
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    # -- reading ----------------------------------------------------------------------

    def observe(self) -> Observed:
        """One snapshot of every Serve application; unreachable → ``reachable=False``."""
        try:
            self._ensure_reachable()
            status = self._bounded(serve.status, what="read serve.status()")
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
                message=app.message or "",
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

    # -- writing ----------------------------------------------------------------------

    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None:
        """Submit (or update in place) the model's own application; returns once
        Serve accepted it, not when the model runs."""
        self._ensure_reachable()
        serving = self._config.serving
        kwargs = llmconfigs.llm_config_kwargs(spec, public_id=public_id, serving=serving)
        scaling = llmconfigs.scaling_options(spec)
        version = llmconfigs.code_version(spec, public_id=public_id, serving=serving)

        def submit() -> None:
            from ray.serve.llm import LLMConfig, build_llm_deployment

            app = build_llm_deployment(
                LLMConfig(**kwargs), name_prefix=llmconfigs.SERVER_NAME_PREFIX,
                override_serve_options={
                    **scaling, "max_surge_percent": serving.max_surge_percent},
            )
            _submit(_with_version(app, version), name=app_name, route_prefix=None)

        self._bounded(submit, what=f"deploy application {app_name!r}")

    def deploy_gateway(self, members: Sequence[tuple[str, str]]) -> None:
        """Deploy the OpenAI gateway for ``(public model id, app_name)`` pairs;
        no members deletes the gateway application."""
        self._ensure_reachable()
        if not members:
            self.delete_app(GATEWAY_APP)
            return
        pairs = sorted(members)
        cards = llmconfigs.gateway_model_cards([public_id for public_id, _ in pairs])
        version = llmconfigs.gateway_version(pairs, cards)

        def submit() -> None:
            from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard
            from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

            handles = {
                public_id: serve.get_deployment_handle(
                    llmconfigs.server_deployment_name(public_id), app_name=app_name
                )
                for public_id, app_name in pairs
            }
            ingress: Any = serve.deployment(make_fastapi_ingress(OpenAiIngress))
            options = {**OpenAiIngress.get_deployment_options(), "max_surge_percent": 100}
            app = ingress.options(**options).bind(
                llm_deployments=handles,
                model_cards={pid: ModelCard(**card) for pid, card in cards.items()},
            )
            _submit(_with_version(app, version), name=GATEWAY_APP, route_prefix=GATEWAY_ROUTE)

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
        if self._gcs is None:
            return
        try:
            with socket.create_connection(self._gcs, timeout=GCS_PROBE_TIMEOUT_S):
                pass
        except OSError as e:
            host, port = self._gcs
            raise TransientError(f"Ray GCS at {host}:{port} unreachable: {e}") from e

    def _bounded(
        self, fn: Callable[[], T], *, what: str, timeout_s: float | None = None
    ) -> T:
        """Run one Ray call on the Ray thread under a deadline; map its errors."""
        deadline = timeout_s if timeout_s is not None else self._call_timeout_s
        try:
            return self._thread.call(fn, what=what, timeout_s=deadline)
        except ServesyncError:
            raise
        except Exception as e:
            raise classify(e, what=what) from e


class _RayThread:
    """One long-lived thread that makes every Ray call of the applier.

    Long-lived because Ray starts a local cluster's GCS and raylet with
    ``PR_SET_PDEATHSIG``, which fires when the *thread* that spawned them ends
    (measured: a ``ray.init`` on a short-lived thread lost its GCS at once).
    A daemon thread because a call stuck on a dead GCS must not hold the
    process at exit; while one is stuck, further calls fail fast.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._busy: str | None = None  # what the thread is doing now
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="servesync-ray", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T], *, what: str, timeout_s: float) -> T:
        with self._lock:
            busy = self._busy
            if busy is not None:
                raise TransientError(f"cannot {what}: Ray is still busy with: {busy}")
            self._busy = what
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as e:
            raise TransientError(f"cannot {what}: no answer from Ray in {timeout_s:.0f} s") from e

    def _loop(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                result = fn()
            except BaseException as e:  # handed to the caller
                self._busy = None
                future.set_exception(e)
            else:
                self._busy = None
                future.set_result(result)


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


def _import_serve_llm() -> None:
    for module in ("ray.serve.llm", "ray.serve.llm.ingress"):
        importlib.import_module(module)


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


def _app_status(value: Any) -> AppStatus:
    text = str(getattr(value, "value", value))
    try:
        return AppStatus(text)
    except ValueError:
        return AppStatus.UNHEALTHY


def _parse_host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return (host.strip("[]") or "127.0.0.1", int(port))


def classify(error: BaseException, *, what: str) -> ServesyncError:
    """Map an exception from Ray to Transient or Permanent, by its type."""
    from ray import exceptions as rex
    from ray.serve.exceptions import RayServeException

    cause: BaseException = error
    while isinstance(cause, rex.RayTaskError) and cause.cause is not None:
        cause = cause.cause
    message = f"cannot {what}: {type(cause).__name__}: {cause}"
    transient = (
        ConnectionError, TimeoutError, rex.RaySystemError, rex.RayActorError,
        rex.LocalRayletDiedError, rex.WorkerCrashedError, rex.NodeDiedError,
        rex.ObjectLostError, rex.RpcError, rex.ObjectStoreFullError, rex.OutOfMemoryError,
    )
    permanent = (
        ValueError, TypeError, RayServeException, rex.RuntimeEnvSetupError,
        rex.AuthenticationError,
    )
    if isinstance(cause, transient):
        return TransientError(message)
    if isinstance(cause, permanent):
        return PermanentError(message)
    return TransientError(message, delay_s=30.0)
