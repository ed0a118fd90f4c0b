"""DEGRADED: a RUNNING model short of replicas (or UNHEALTHY in Ray), and its recovery.

Planner rules on fixed instants, then the tick on a fake Ray whose replica
count drops and comes back, with the status file read back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from servesync.config import Config
from servesync.converge import naming
from servesync.converge.actions import Action, Deploy, Kind, RecordOnly, UpdateGateway
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.planning import (
    DEGRADED_GRACE_S,
    DEGRADED_POLL_S,
    plan,
    requeue_after,
)
from servesync.converge.records import EventKind, GatewayRecord, ModelRecord, State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import Autoscaling, ModelSpec
from tests.support.clock import FakeClock, at
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import desired, record, spec

GW = naming.GATEWAY_APP
A2 = spec("a", num_replicas=2)
B = spec("b", user="bob")


def world(a: ModelRecord, status: AppStatus, running: int, message: str = "") -> Observed:
    """A (in ``status`` with ``running`` replicas), B and the gateway RUNNING."""
    rb = record(B)
    return Observed({a.app_name: AppObservation(a.app_name, status, message, running),
                     rb.app_name: AppObservation(rb.app_name, AppStatus.RUNNING, "", 1),
                     GW: AppObservation(GW, AppStatus.RUNNING, "", 1)})


def tick(a: ModelRecord, obs: Observed, now_s: float, a_spec: ModelSpec = A2,
         ) -> tuple[Action, ...]:
    rb = record(B)
    gw = GatewayRecord(tuple(sorted([(a.public_id, a.app_name), (rb.public_id, rb.app_name)])),
                       at(0).isoformat())
    return plan(desired=desired(a_spec, B), recorded={a.model_key: a, rb.model_key: rb},
                observed=obs, gateway=gw, now=at(now_s), deploy_timeout_s=600)


def only_record(actions: tuple[Action, ...]) -> ModelRecord:
    (action,) = actions  # no gateway change: A stays in it throughout
    assert isinstance(action, RecordOnly)
    return action.record


def test_a_dip_is_remembered_then_degraded_after_the_grace_then_recovered() -> None:
    ra = record(A2)
    short = world(ra, AppStatus.RUNNING, 1)
    # first look: remembered, no event, still RUNNING
    rec = only_record(tick(ra, short, 100))
    assert rec.state is State.RUNNING and rec.events == ra.events
    assert rec.unhealthy_since == at(100).isoformat()
    # within the grace: nothing
    assert tick(rec, short, 100 + DEGRADED_GRACE_S - 1) == ()
    # the grace over: DEGRADED, with the reason, as an event
    rec = only_record(tick(rec, short, 100 + DEGRADED_GRACE_S))
    assert rec.state is State.DEGRADED
    assert rec.error_summary == "1 of 2 replicas running"
    assert rec.events[-1].kind is EventKind.DEGRADED
    assert rec.events[-1].message == "1 of 2 replicas running"
    # still short: nothing more
    assert tick(rec, short, 200) == ()
    # healthy again: RUNNING, the reason cleared
    rec = only_record(tick(rec, world(ra, AppStatus.RUNNING, 2), 300))
    assert rec.state is State.RUNNING and rec.error_summary is None
    assert rec.events[-1].kind is EventKind.RUNNING
    assert rec.events[-1].message == "recovered: 2 of 2 replicas running"
    assert rec.unhealthy_since is None
    # and idle after that
    assert tick(rec, world(ra, AppStatus.RUNNING, 2), 400) == ()


def test_a_dip_shorter_than_the_grace_is_forgotten_without_an_event() -> None:
    ra = replace(record(A2), unhealthy_since=at(100).isoformat())
    rec = only_record(tick(ra, world(ra, AppStatus.RUNNING, 2), 105))
    assert rec.state is State.RUNNING and rec.unhealthy_since is None
    assert rec.events == ra.events


def test_unhealthy_in_ray_is_degraded_with_rays_message_not_failed() -> None:
    ra = replace(record(A2), unhealthy_since=at(0).isoformat())
    message = "The deployments ['LLMServer:x'] are UNHEALTHY."
    rec = only_record(tick(ra, world(ra, AppStatus.UNHEALTHY, 2, message), 100))
    assert rec.state is State.DEGRADED
    assert rec.error_summary == f"2 of 2 replicas running; Ray: UNHEALTHY: {message}"


def test_a_changed_reason_is_a_new_event() -> None:
    ra = record(A2, State.DEGRADED, error_summary="1 of 2 replicas running")
    rec = only_record(tick(ra, world(ra, AppStatus.UNHEALTHY, 0), 100))
    assert rec.state is State.DEGRADED
    assert rec.error_summary == "0 of 2 replicas running; Ray: UNHEALTHY"
    assert rec.events[-1].kind is EventKind.DEGRADED


def test_a_degraded_model_stays_in_the_gateway() -> None:
    ra = record(A2, State.DEGRADED, error_summary="0 of 2 replicas running; Ray: UNHEALTHY")
    assert tick(ra, world(ra, AppStatus.UNHEALTHY, 0), 100) == ()  # no gateway change
    # ... also when the gateway is rebuilt for another reason
    gone = Observed({k: v for k, v in world(ra, AppStatus.UNHEALTHY, 0).apps.items() if k != GW})
    (action,) = tick(ra, gone, 100)
    assert isinstance(action, UpdateGateway)
    assert (ra.public_id, ra.app_name) in action.members


def test_ray_giving_up_fails_a_degraded_model() -> None:
    ra = record(A2, State.DEGRADED, error_summary="0 of 2 replicas running")
    record_a, gateway = tick(ra, world(ra, AppStatus.DEPLOY_FAILED, 0, "gave up"), 100)
    assert isinstance(record_a, RecordOnly) and isinstance(gateway, UpdateGateway)
    assert ra.app_name not in {app for _, app in gateway.members}  # no replica left
    rec = record_a.record
    assert rec.state is State.FAILED
    assert rec.error_summary == "application DEPLOY_FAILED: gave up"


def test_a_degraded_model_missing_from_ray_is_redeployed() -> None:
    ra = record(A2, State.DEGRADED, error_summary="0 of 2 replicas running")
    obs = Observed({k: v for k, v in world(ra, AppStatus.RUNNING, 0).apps.items()
                    if k != ra.app_name})
    deploys = [a for a in tick(ra, obs, 100) if isinstance(a, Deploy)]
    assert [(d.kind, d.record.state) for d in deploys] == [(Kind.REDEPLOY, State.DEPLOYING)]


def test_a_new_spec_supersedes_degraded() -> None:
    ra = record(A2, State.DEGRADED, error_summary="1 of 2 replicas running")
    actions = tick(ra, world(ra, AppStatus.UNHEALTHY, 1), 100, spec("a", num_replicas=3))
    deploys = [a for a in actions if isinstance(a, Deploy)]
    assert [d.kind for d in deploys] == [Kind.SCALE]
    assert deploys[0].record.error_summary is None


def test_autoscaling_counts_against_min_replicas() -> None:
    auto = spec("a", num_replicas=None,
                autoscaling=Autoscaling(min_replicas=2, max_replicas=4, target_ongoing_requests=2))
    ra = record(auto)
    assert ra.asked_replicas == 2
    assert tick(ra, world(ra, AppStatus.RUNNING, 3), 100, auto) == ()
    rec = only_record(tick(ra, world(ra, AppStatus.RUNNING, 1), 100, auto))
    assert rec.unhealthy_since is not None
    rec = only_record(tick(rec, world(ra, AppStatus.RUNNING, 1), 100 + DEGRADED_GRACE_S, auto))
    assert rec.error_summary == "1 replicas running, autoscaling min_replicas 2"


def test_deploying_then_running_is_not_degraded_by_an_update() -> None:
    """An update or scale is DEPLOYING until Ray says RUNNING: never DEGRADED meanwhile."""
    ra = record(A2, State.DEPLOYING, applied_hash=A2.spec_hash())  # an update
    actions = tick(ra, world(ra, AppStatus.DEPLOYING, 1), 100)
    assert actions == ()


def test_requeue_at_the_end_of_the_grace_and_while_degraded() -> None:
    suspect = replace(record(A2), unhealthy_since=at(100).isoformat())
    assert requeue_after({"a": suspect}, now=at(103), in_flight=False) == DEGRADED_GRACE_S - 3
    degraded = record(A2, State.DEGRADED)
    assert requeue_after({"a": degraded}, now=at(103), in_flight=False) == DEGRADED_POLL_S
    assert requeue_after({"a": record(A2)}, now=at(103), in_flight=False) is None


MODEL = """\
model_id: a
model_source: $HOME/common/hf/tiny
num_replicas: 2
cpus_per_replica: 1
"""


def test_tick_records_the_dip_and_the_recovery_in_the_status_file(
        cpu_config: Config, desired_tree: Path) -> None:
    (desired_tree / "users" / "alice" / "a.yaml").write_text(MODEL)
    ray, clock = FakeRay(), FakeClock(at(0))
    rec = make_reconciler(cpu_config, ray, clock)
    snap = Snapshot(desired_tree, None)
    for _ in range(6):
        clock.advance(5)
        result = rec.tick(snap)
        ray.settle()
    assert result.converged
    (model,) = rec.store.models().values()
    status_file = Path(cpu_config.status_dir) / "models" / f"{model.model_key}.json"

    ray.replicas[model.app_name] = 1  # a replica died; Ray is starting another
    ray.apps[model.app_name] = AppStatus.UNHEALTHY
    clock.advance(5)
    result = rec.tick(snap)
    assert rec.store.models()[model.model_key].state is State.RUNNING  # within the grace
    assert result.requeue_after_s == DEGRADED_GRACE_S
    clock.advance(DEGRADED_GRACE_S)
    result = rec.tick(snap)
    doc = json.loads(status_file.read_text())
    assert doc["state"] == "DEGRADED" and not result.converged and result.settled
    assert doc["error_summary"].startswith("1 of 2 replicas running; Ray: UNHEALTHY")
    assert result.requeue_after_s == DEGRADED_POLL_S
    index = json.loads((Path(cpu_config.status_dir) / "index.json").read_text())
    assert index["models"][0]["state"] == "DEGRADED"

    ray.replicas[model.app_name] = 2
    ray.apps[model.app_name] = AppStatus.RUNNING
    clock.advance(DEGRADED_POLL_S)
    result = rec.tick(snap)
    doc = json.loads(status_file.read_text())
    assert doc["state"] == "RUNNING" and doc["error_summary"] is None and result.converged
    kinds = [e["kind"] for e in doc["events"]]
    assert kinds[-2:] == ["DEGRADED", "RUNNING"]
    assert doc["events"][-1]["message"] == "recovered: 2 of 2 replicas running"
    assert not [c for c in ray.calls[-2:] if c[0] == "gateway" and "a" not in c[1]]
