"""RayApplier against a real Ray Serve + vLLM (CPU) + the tiny model + the openai client.

The layout docs/ARCHITECTURE.md describes, checked end to end: each model is its own
Serve application behind one gateway application (two replicas, routes set in
place by user_config: routed within 2 s, no gateway replica restarted, one
killed loses no request of the default ``openai`` client, and at most the one in
flight of a client that never retries); adding model B keeps
model A's replica and every request to A succeeds meanwhile; removing B
takes it off ``/v1/models`` and out of Serve. Stable code versions:
resubmitting an unchanged spec or gateway restarts nothing (scaling and a real
spec change are proven through the reconciler, in test_reconcile_e2e.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from openai import NotFoundError, OpenAI

from servesync.config import Config
from servesync.converge.observed import AppStatus
from servesync.desired.specs import ModelSpec
from servesync.rayserve.applier import GATEWAY_APP, RayApplier
from tests.e2e.clients import POLL_S, ask, listed, requests_to
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

START_DEADLINE_S = 180.0
GATEWAY_DEADLINE_S = 60.0
ROUTE_DEADLINE_S = 2.0  # a gateway route change, from the update's submission
A = ("e2e-202601010000-tiny-a", "svc-e2e-a")
B = ("e2e-202601010000-tiny-b", "svc-e2e-b")


def tiny_spec(model: Path, suffix: str) -> ModelSpec:
    return ModelSpec(
        user_id="e2e", suffix=suffix, model_source=str(model), resolved_source=str(model),
        num_replicas=1, autoscaling=None, gpus_per_replica=0, cpus_per_replica=1,
        engine_kwargs={"max_model_len": 256},
    )


def wait_running(applier: RayApplier, app_name: str) -> float:
    def running() -> bool:
        status = applier.observe().status(app_name)
        assert status not in (AppStatus.DEPLOY_FAILED, AppStatus.UNHEALTHY), status
        return status is AppStatus.RUNNING

    return wait_for(f"{app_name} RUNNING", running, deadline_s=START_DEADLINE_S, poll_s=POLL_S)


@pytest.fixture(scope="module")
def client(e2e_config: Config) -> OpenAI:
    return OpenAI(base_url=e2e_config.serving.base_url, api_key="x", timeout=30.0,
                  max_retries=0)


@pytest.fixture(scope="module")
def served_a(
    applier: RayApplier, tiny_model: Path, client: OpenAI, timings: dict[str, str]
) -> Iterator[str]:
    """Model A deployed as its own application and published by the gateway."""
    start = time.monotonic()
    applier.deploy_model(tiny_spec(tiny_model, "tiny-a"), app_name=A[1], public_id=A[0])
    timings["deploy_model() call (A)"] = f"{time.monotonic() - start:.1f} s"
    timings["model A start to RUNNING"] = f"{wait_running(applier, A[1]):.1f} s"
    start = time.monotonic()
    applier.deploy_gateway([A])
    timings["deploy_gateway() call (first)"] = f"{time.monotonic() - start:.1f} s"
    took = wait_for("gateway lists A", lambda: listed(client) == {A[0]},
                    deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)
    timings["gateway first deploy (lists A)"] = f"{took:.1f} s"
    took = wait_for("gateway RUNNING (both replicas)",
                    lambda: applier.observe().status(GATEWAY_APP) is AppStatus.RUNNING,
                    deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S, started=start)
    timings["gateway first deploy (2 replicas RUNNING)"] = f"{took:.1f} s"
    yield A[0]
    # Leave the session's Ray as found, for the next e2e module.
    applier.deploy_gateway([])
    applier.delete_app(A[1])
    wait_for("A and the gateway deleted",
             lambda: not {A[1], GATEWAY_APP} & set(applier.observe().apps),
             deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)


def test_model_answers_through_the_gateway(
    applier: RayApplier, client: OpenAI, served_a: str
) -> None:
    assert ask(client, served_a).strip()
    assert {m.id for m in client.models.list().data} == {served_a}
    observed = applier.observe()
    assert observed.reachable
    assert observed.status(A[1]) is AppStatus.RUNNING
    assert observed.apps[A[1]].running_replicas == 1
    assert observed.status(GATEWAY_APP) is AppStatus.RUNNING


def routed_within(client: OpenAI, want: set[str], deadline_s: float) -> float:
    """Seconds until ``/v1/models`` lists exactly ``want`` (polled every 50 ms)."""
    return wait_for(f"gateway lists {sorted(want)}", lambda: listed(client) == want,
                    deadline_s=deadline_s, poll_s=0.05)


def wait_gateway_settled(applier: RayApplier) -> float:
    """Seconds until the gateway application is RUNNING with both replicas
    RUNNING. Serve applies a ``user_config`` change to one replica at a time
    (its rolling update), so ``/v1/models`` may list the new routes from one
    replica while the other still answers with the old ones; the daemon calls a
    route sure only once the gateway settled, and so do these tests."""
    def settled() -> bool:
        return (applier.observe().status(GATEWAY_APP) is AppStatus.RUNNING
                and len(applier.replica_pids(GATEWAY_APP)) == 2)

    return wait_for("gateway settled", settled, deadline_s=GATEWAY_DEADLINE_S, poll_s=0.1)


def test_adding_and_removing_b_leaves_a_alone(
    applier: RayApplier, client: OpenAI, tiny_model: Path, served_a: str,
    timings: dict[str, str],
) -> None:
    """B joins and leaves the gateway by its user_config: routed within 2 s of
    the update, and no gateway replica restarts (nor A's)."""
    a_replicas = applier.replica_actor_ids(A[1])
    assert len(a_replicas) == 1
    gateway_replicas = applier.replica_actor_ids(GATEWAY_APP)
    assert len(gateway_replicas) == 2  # serving.gateway_replicas, default 2
    with requests_to(client, served_a) as loop:
        start = time.monotonic()
        applier.deploy_model(tiny_spec(tiny_model, "tiny-b"), app_name=B[1], public_id=B[0])
        timings["model B start to RUNNING"] = f"{wait_running(applier, B[1]):.1f} s"
        gw_start = time.monotonic()
        applier.deploy_gateway([A, B])
        submitted = time.monotonic() - gw_start
        took = routed_within(client, {A[0], B[0]}, ROUTE_DEADLINE_S)
        timings["gateway route change (A → A+B): submit, then listed"] = (
            f"{submitted:.2f} s + {took:.2f} s")
        wait_gateway_settled(applier)
        timings["gateway update applied (A → A+B, to RUNNING)"] = (
            f"{time.monotonic() - gw_start:.2f} s")
        assert ask(client, B[0]).strip()  # B answers through either replica
        timings["adding B, total"] = f"{time.monotonic() - start:.1f} s"
        time.sleep(3.0)  # a few more requests to A through the reconfigured gateway
    timings["requests to A while adding B"] = loop.summary()
    assert loop.failures == []
    assert loop.ok > 0
    assert applier.replica_actor_ids(A[1]) == a_replicas
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_replicas

    gw_start = time.monotonic()
    applier.deploy_gateway([A])
    submitted = time.monotonic() - gw_start
    took = routed_within(client, {A[0]}, ROUTE_DEADLINE_S)
    timings["gateway route change (A+B → A): submit, then listed"] = (
        f"{submitted:.2f} s + {took:.2f} s")
    wait_gateway_settled(applier)
    with pytest.raises(NotFoundError):
        ask(client, B[0])  # not routed: a 404, as for any unknown model
    applier.delete_app(B[1])
    took = wait_for("B's application deleted",
                    lambda: applier.observe().status(B[1]) is AppStatus.MISSING,
                    deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)
    timings["delete B's application"] = f"{took:.1f} s"
    assert ask(client, served_a).strip()
    assert applier.replica_actor_ids(A[1]) == a_replicas
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_replicas


RAW_LOOPS = 2  # clients with max_retries=0: what Serve alone gives
RETRYING_LOOPS = 2  # clients as the openai package makes them by default (max_retries=2)


def test_a_gateway_replica_killed_loses_no_request(
    applier: RayApplier, client: OpenAI, e2e_config: Config, served_a: str,
    timings: dict[str, str],
) -> None:
    """kill -9 one of the two gateway replicas while clients loop on A: Serve's
    proxy sends new requests to the other one, and Serve starts a replacement.

    Serve cannot retry a request the dead replica had already accepted: its
    router re-routes a request only until a replica accepts it
    (``ray/serve/_private/router.py``, ``_route_and_send_request_once`` and the
    ``while True`` of ``_route_and_send_request``), after that the replica's
    ``ActorDiedError`` reaches the proxy, which answers 500
    (``http_util.get_http_response_status``). So a client that never retries
    loses at most its request in flight (one per loop), and the ``openai``
    client as users make it (``max_retries`` 2, which retries a 5xx) loses none.
    """
    retrying = OpenAI(base_url=e2e_config.serving.base_url, api_key="x", timeout=30.0)
    assert retrying.max_retries == 2  # the openai package's default, untouched
    wait_gateway_settled(applier)
    pids = applier.replica_pids(GATEWAY_APP)
    assert len(pids) == 2
    victim, pid = sorted(pids.items())[0]
    with ExitStack() as stack:
        raw = [stack.enter_context(requests_to(client, served_a)) for _ in range(RAW_LOOPS)]
        retried = [stack.enter_context(requests_to(retrying, served_a))
                   for _ in range(RETRYING_LOOPS)]
        time.sleep(2.0)
        before = [loop.ok for loop in raw + retried]
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()

        def replaced() -> bool:
            now = applier.replica_pids(GATEWAY_APP)
            return len(now) == 2 and victim not in now

        took = wait_for("a new gateway replica", replaced, deadline_s=GATEWAY_DEADLINE_S,
                        poll_s=0.5)
        timings["gateway replica kill -9: replacement RUNNING"] = f"{took:.1f} s"
        time.sleep(2.0)
    seconds = time.monotonic() - start
    raw_failures = [f for loop in raw for f in loop.failures]
    timings["gateway replica kill -9: clients with max_retries=0"] = (
        f"{RAW_LOOPS} loops: {sum(loop.ok for loop in raw)} ok, {len(raw_failures)} failed"
        f"{': ' if raw_failures else ''}{'; '.join(f[:100] for f in raw_failures)}")
    timings["gateway replica kill -9: openai default client (max_retries=2)"] = (
        f"{RETRYING_LOOPS} loops: {sum(loop.ok for loop in retried)} ok "
        f"({sum(loop.retried for loop in retried)} after a client retry), "
        f"{sum(len(loop.failures) for loop in retried)} failed; {seconds:.1f} s from the kill")
    for loop in retried:
        assert loop.failures == []
    # One request in flight a loop: only that one can be lost, as Serve's 500.
    assert len(raw_failures) <= RAW_LOOPS, raw_failures
    assert all(f.startswith("InternalServerError") for f in raw_failures), raw_failures
    for loop, ok_before in zip(raw + retried, before, strict=True):
        assert loop.ok > ok_before  # every client kept being answered after the kill


def test_resubmitting_an_unchanged_spec_and_gateway_restarts_nothing(
    applier: RayApplier, client: OpenAI, tiny_model: Path, served_a: str,
) -> None:
    """A retry or a drift repair submits the same spec again: Serve sees the same
    code version and user_config, so no replica of A nor of the gateway restarts.
    (Scaling 1 → 2 keeping the serving replica, and a real spec change rolling
    the replicas with no failed request, are proven through the reconciler in
    test_reconcile_e2e.py's lifecycle.)"""
    wait_gateway_settled(applier)
    before = applier.replica_actor_ids(A[1])
    gateway_before = applier.replica_actor_ids(GATEWAY_APP)
    assert len(before) == 1 and len(gateway_before) == 2
    with requests_to(client, served_a) as loop:
        applier.deploy_model(tiny_spec(tiny_model, "tiny-a"), app_name=A[1], public_id=A[0])
        applier.deploy_gateway([A])
        time.sleep(5.0)
    assert applier.observe().status(A[1]) is AppStatus.RUNNING
    assert applier.replica_actor_ids(A[1]) == before
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_before
    assert loop.failures == []
    assert loop.ok > 0
