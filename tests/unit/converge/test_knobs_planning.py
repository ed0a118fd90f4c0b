"""The planner and issue 10's knobs: a change of resources or parallelism is an
update (a new code version, so Serve rolls the replicas); a rollout change is
a lightweight reconfigure; description, labels and the deploy deadline are
recorded without any Ray call; each model's own deadline is honoured."""

from __future__ import annotations

from dataclasses import replace

import pytest

from servesync.converge import naming
from servesync.converge.actions import Action, Deploy, Kind, RecordOnly
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.planning import plan
from servesync.converge.records import GatewayRecord, ModelRecord, State
from servesync.desired.specs import DesiredState, ModelSpec, Parallelism, Rollout
from tests.support.clock import T0, at
from tests.unit.converge.plancases import desired, observed, record, spec

GW = naming.GATEWAY_APP
A = spec("a")
RA = record(A)
CLUSTER_DEADLINE_S = 600


def run(des: DesiredState, rec: ModelRecord, obs: Observed, now_s: float = 100,
        routed: bool = True) -> tuple[Action, ...]:
    gw = GatewayRecord(((rec.public_id, rec.app_name),) if routed else (), T0.isoformat())
    return plan(desired=des, recorded={rec.model_key: rec}, observed=obs, gateway=gw,
                now=at(now_s), deploy_timeout_s=CLUSTER_DEADLINE_S)


RUNNING = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))

# (id, the new spec of a RUNNING model, the kind of deploy planned)
DEPLOYS = [
    ("memory", replace(A, memory_gb_per_replica=32), Kind.UPDATE),
    ("accelerator type", replace(A, accelerator_type="L40S", accelerators=("L40S",)),
     Kind.UPDATE),
    ("min capability", replace(A, min_compute_capability="8.0", accelerators=("A100", "H20")),
     Kind.UPDATE),
    ("parallelism", replace(A, gpus_per_replica=4, parallelism=Parallelism(2, 2)), Kind.UPDATE),
    ("gpus", replace(A, gpus_per_replica=2), Kind.UPDATE),
    ("surge", replace(A, rollout=Rollout(max_surge_percent=0)), Kind.RECONFIGURE),
    ("unavailable and replicas", replace(A, num_replicas=3,
                                         rollout=Rollout(max_unavailable_percent=50)),
     Kind.RECONFIGURE),
    ("replicas alone", replace(A, num_replicas=3), Kind.SCALE),
    ("memory and surge", replace(A, memory_gb_per_replica=8,
                                 rollout=Rollout(max_surge_percent=0)), Kind.UPDATE),
]


@pytest.mark.parametrize(("new", "kind"), [c[1:] for c in DEPLOYS], ids=[c[0] for c in DEPLOYS])
def test_a_change_reaching_ray_is_deployed_as_its_kind(new: ModelSpec, kind: Kind) -> None:
    (action,) = run(desired(new), RA, RUNNING)
    assert isinstance(action, Deploy)
    assert action.kind is kind
    assert action.spec == new and action.record.spec == new.to_json()


METADATA = [
    ("description", replace(A, description="chat for team search")),
    ("labels", replace(A, labels={"team": "search"})),
    ("deploy deadline", replace(A, rollout=Rollout(deploy_timeout_s=1800))),
    ("all three", replace(A, description="d", labels={"a": "b"},
                          rollout=Rollout(deploy_timeout_s=120))),
]


@pytest.mark.parametrize("new", [c[1] for c in METADATA], ids=[c[0] for c in METADATA])
def test_metadata_is_recorded_without_a_ray_call(new: ModelSpec) -> None:
    (action,) = run(desired(new), RA, RUNNING)
    assert isinstance(action, RecordOnly)
    assert action.record.state is State.RUNNING
    assert action.record.spec == new.to_json()
    assert action.record.spec_hash == RA.spec_hash == action.record.applied_hash
    assert action.record.events == RA.events
    # and then nothing more: converged
    assert run(desired(new), action.record, RUNNING) == ()


def test_removing_metadata_is_recorded_too() -> None:
    labelled = replace(A, description="d", labels={"a": "b"})
    (action,) = run(desired(A), record(labelled), RUNNING)
    assert isinstance(action, RecordOnly)
    assert "description" not in action.record.spec and "labels" not in action.record.spec


def test_metadata_rides_along_with_a_transition() -> None:
    """A DEPLOYING model whose application turned RUNNING while its description
    changed: one RecordOnly that does both."""
    deploying = record(A, State.DEPLOYING, applied_hash=RA.spec_hash)
    new = replace(A, description="now running")
    (action,) = run(desired(new), deploying, RUNNING)
    assert isinstance(action, RecordOnly)
    assert action.record.state is State.RUNNING
    assert action.record.spec["description"] == "now running"


def _deploying(s: ModelSpec, message: str = "") -> tuple[ModelRecord, Observed]:
    rec = record(s, State.DEPLOYING)
    obs = Observed(apps={rec.app_name: AppObservation(rec.app_name, AppStatus.DEPLOYING,
                                                      message, 0)}, reachable=True)
    return rec, obs


@pytest.mark.parametrize(("deadline", "quiet_until", "failed_at"), [
    (None, CLUSTER_DEADLINE_S - 1, CLUSTER_DEADLINE_S),
    (120.0, 119, 120),
    (1800.0, 1799, 1800),
], ids=["the cluster's", "a shorter one of the model", "a longer one of the model"])
def test_each_model_has_its_own_deadline(deadline: float | None, quiet_until: float,
                                         failed_at: float) -> None:
    s = replace(A, rollout=Rollout(deploy_timeout_s=deadline))
    rec, obs = _deploying(s)
    assert run(desired(s), rec, obs, now_s=quiet_until, routed=False) == ()
    (action,) = run(desired(s), rec, obs, now_s=failed_at, routed=False)
    assert isinstance(action, RecordOnly)
    assert action.record.state is State.FAILED
    assert f"not RUNNING after {failed_at:.0f} s" in (action.record.error_summary or "")


def test_the_deadline_says_why_ray_is_waiting() -> None:
    """Ray's own words about a replica it cannot place (e.g. more memory than
    any node has) are in the FAILED summary."""
    pending = ("Deployment 'LLMServer:x' has 1 replicas that have taken more than 30s to be "
               "scheduled. Resources required for each replica: {'memory': 1e12}")
    rec, obs = _deploying(A, pending)
    (action,) = run(desired(A), rec, obs, now_s=CLUSTER_DEADLINE_S, routed=False)
    assert isinstance(action, RecordOnly)
    assert action.record.error_summary == \
        f"not RUNNING after {CLUSTER_DEADLINE_S} s (Ray: DEPLOYING ({pending}))"
