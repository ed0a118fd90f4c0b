"""The one fake of the Ray seam (:class:`servesync.converge.ports.Applier`), and a
Reconciler wired to it with a real store and real status files.

For unit tests only: applications live in a dict, a deploy lands as
DEPLOYING until :meth:`FakeRay.settle`. The real Ray Serve LLM path is proven
by tests/e2e.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from servesync.config import Config
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.ports import ModelDeploy
from servesync.converge.reconciling import Reconciler
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError, TransientError
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles

SERVING_HASH = "fake-serving"


class FakeRay:
    """Applications by name; deploys land as DEPLOYING until ``settle()``."""

    def __init__(self) -> None:
        self.apps: dict[str, AppStatus] = {}
        self.replicas: dict[str, int] = {}  # a RUNNING/UNHEALTHY app's replicas (default 1)
        self.calls: list[tuple[str, str]] = []
        self.aliases: tuple[tuple[str, str], ...] = ()  # the gateway's last (alias, public id)s
        self.weights: tuple[tuple[str, str, int], ...] = ()  # ... and (app, version, weight)s
        self.lora: tuple[tuple[str, str], ...] = ()  # ... and (public id, LoRA path)s
        self.batches: list[int] = []  # the size of each deploy_models call
        self.fail_next: Exception | None = None
        self.reachable = True
        self.observations = 0
        self.closed = False

    def observe(self) -> Observed:
        self.observations += 1
        if not self.reachable:
            return Observed(reachable=False, error="fake Ray is down")
        return Observed({n: AppObservation(n, s, "boom" if s is AppStatus.DEPLOY_FAILED else "",
                                           self.replicas.get(n, 1)
                                           if s in (AppStatus.RUNNING, AppStatus.UNHEALTHY)
                                           else 0)
                         for n, s in self.apps.items()})

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e

    def deploy_models(self, batch: Sequence[ModelDeploy]
                      ) -> Mapping[str, TransientError | PermanentError]:
        """Each model through :meth:`deploy_model` (which subclasses and
        ``fail_next`` make fail), its servesync error kept as that model's own."""
        self.batches.append(len(batch))
        failed: dict[str, TransientError | PermanentError] = {}
        for d in batch:
            try:
                self.deploy_model(d.spec, app_name=d.app_name, public_id=d.public_id)
            except (TransientError, PermanentError) as e:
                failed[d.app_name] = e
        return failed

    def deploy_model(self, spec: ModelSpec, *, app_name: str, public_id: str) -> None:
        self._maybe_fail()
        self.calls.append(("deploy", public_id))
        self.apps[app_name] = AppStatus.DEPLOYING
        auto = spec.autoscaling
        self.replicas[app_name] = spec.num_replicas if spec.num_replicas is not None else \
            auto.min_replicas if auto else 0

    def deploy_gateway(self, members: Sequence[tuple[str, str]], *,
                       aliases: Sequence[tuple[str, str]] = (),
                       weights: Sequence[tuple[str, str, int]] = (),
                       lora: Sequence[tuple[str, str]] = ()) -> None:
        self.calls.append(("gateway", ",".join(m[0] for m in members)))
        self.aliases = tuple(aliases)
        self.weights = tuple(weights)
        self.lora = tuple(lora)
        if members:
            self.apps[GATEWAY_APP] = AppStatus.DEPLOYING
        else:
            self.apps.pop(GATEWAY_APP, None)

    def delete_app(self, app_name: str) -> None:
        self.calls.append(("delete", app_name))
        self.apps.pop(app_name, None)

    def serving_hash(self) -> str:
        return SERVING_HASH

    def shutdown(self) -> None:
        self.closed = True

    def settle(self) -> None:
        for name, status in self.apps.items():
            if status is AppStatus.DEPLOYING:
                self.apps[name] = AppStatus.RUNNING


class SettlingRay(FakeRay):
    """Every observe() first lets what was submitted come up."""

    def observe(self) -> Observed:
        observed = super().observe()
        self.settle()
        return observed


def make_reconciler(config: Config, ray: FakeRay, clock: Callable[[], datetime]) -> Reconciler:
    """A Reconciler as the daemon builds it, with ``ray`` in place of Ray."""
    return Reconciler(config, store=Store(Path(config.state_dir)), applier=ray, clock=clock,
                      publisher=StatusFiles(Path(config.status_dir), config.serving))
