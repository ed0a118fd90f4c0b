"""Table-driven tests of the pure planner (no Ray, no clock, no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from servesync.converge import naming
from servesync.converge.actions import (
    Action,
    DeleteApp,
    Deploy,
    Forget,
    Kind,
    RecordOnly,
    UpdateGateway,
)
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.planning import after_permanent, after_transient, backoff_s, plan
from servesync.converge.records import EventKind, GatewayRecord, ModelRecord, State
from servesync.desired.specs import DesiredState
from tests.support.clock import T0, at
from tests.unit.converge.plancases import desired, observed, record, spec

GW = naming.GATEWAY_APP
A = spec("a")
B = spec("b", user="bob")
RA = record(A)
RB = record(B)


def members(*recs: ModelRecord) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((r.public_id, r.app_name) for r in recs))


def run(des: DesiredState, recs: tuple[ModelRecord, ...], obs: Observed,
        gw: GatewayRecord | None = None, now_s: float = 100) -> tuple[Action, ...]:
    if gw is None:
        running = (r for r in recs if r.state is State.RUNNING)
        gw = GatewayRecord(members(*running), T0.isoformat())
    return plan(desired=des, recorded={r.model_key: r for r in recs}, observed=obs, gateway=gw,
                now=at(now_s), deploy_timeout_s=600)


def shape(actions: tuple[Action, ...]) -> list[tuple[str, str]]:
    """(kind, who) per action: the model suffix, or the gateway's member suffixes."""
    out = []
    for a in actions:
        if isinstance(a, UpdateGateway):
            out.append((str(a.kind), ",".join(m[0].rsplit("-", 1)[-1] for m in a.members)))
        elif isinstance(a, Forget):
            out.append((str(a.kind), a.public_id.rsplit("-", 1)[-1]))
        else:
            out.append((str(a.kind), a.record.suffix))
    return out


RUNNING_BOTH = observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
# A's model_source fails the path rules (e.g. a file in its folder became a symlink out)
STOPPED_A = "stopped: " + desired(revoked=(A,)).revoked[A.name]

CASES = [
    # id, desired, recorded, observed, expected (kind, who) in order
    ("idle: nothing changed", desired(A, B), (RA, RB), RUNNING_BOTH, []),
    ("new model is created", desired(A), (), observed(), [("create", "a")]),
    ("new stopped model is only recorded", desired(spec("a", enabled=False)), (), observed(),
     [("record", "a")]),
    ("add B keeps A untouched", desired(A, B), (RA,),
     observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)), [("create", "b")]),
    ("spec change updates in place", desired(spec("a", engine_kwargs={"max_model_len": 64}), B),
     (RA, RB), RUNNING_BOTH, [("update", "a")]),
    ("replica change is a scale", desired(spec("a", num_replicas=3), B), (RA, RB), RUNNING_BOTH,
     [("scale", "a")]),
    ("removed model leaves the gateway first", desired(A), (RA, RB), RUNNING_BOTH,
     [("record", "b"), ("gateway", "a")]),
    ("bad file keeps its model", desired(A, bad_files=("users/bob/b.yaml",)), (RA, RB),
     RUNNING_BOTH, []),
    ("bad document keeps its model", desired(A, bad_names=(("users/bob/x.yaml", "bob", "b"),)),
     (RA, RB), RUNNING_BOTH, []),
    # a folder that can't be read (permissions, too deep) is not empty: what it held is kept
    ("unreadable folder keeps its models", desired(A, unread_folders=("users/bob/",)),
     (RA, RB), RUNNING_BOTH, []),
    ("unreadable subfolder keeps its models",
     desired(A, unread_folders=("users/bob/team/",)),
     (RA, record(spec("b", user="bob", source_file="users/bob/team/deep/b.yaml"))),
     observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING)), []),
    ("unreadable folder holds only what is under it",
     desired(A, unread_folders=("users/bob/team/", "users/bo/", "users/bob/b.yaml/")),
     (RA, RB), RUNNING_BOTH, [("record", "b"), ("gateway", "a")]),
    ("unreadable folder keeps a stopped model", desired(A, unread_folders=("users/bob/",)),
     (RA, record(B, State.STOPPED, enabled=False)),
     observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)), []),
    ("drift: missing app is redeployed", desired(A, B), (RA, RB),
     observed((RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING)),
     [("gateway", "b"), ("redeploy", "a")]),
    ("drift: missing gateway is redeployed", desired(A, B), (RA, RB),
     observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING)), [("gateway", "a,b")]),
    ("deploying becomes running and joins", desired(A), (record(A, State.DEPLOYING),),
     observed((RA, AppStatus.RUNNING)), [("record", "a"), ("gateway", "a")]),
    ("deploying that failed is recorded", desired(A), (record(A, State.DEPLOYING),),
     observed((RA, AppStatus.DEPLOY_FAILED)), [("record", "a")]),
    ("deploying still loading waits", desired(A), (record(A, State.DEPLOYING),),
     observed((RA, AppStatus.DEPLOYING)), []),
    ("failed waits for a new spec", desired(A), (record(A, State.FAILED),),
     observed((RA, AppStatus.DEPLOY_FAILED)), []),
    ("new spec supersedes a failed one", desired(spec("a", num_replicas=2)),
     (record(A, State.FAILED),), observed((RA, AppStatus.DEPLOY_FAILED)), [("scale", "a")]),
    ("new spec supersedes a pending one",
     desired(spec("a", model_source="/x", resolved_source="/x")),
     (record(A, State.DEPLOYING),), observed((RA, AppStatus.DEPLOYING)), [("update", "a")]),
    ("Ray unreachable: nothing", desired(A), (), observed(reachable=False), []),
    ("disable stops via the gateway", desired(spec("a", enabled=False), B), (RA, RB),
     RUNNING_BOTH, [("record", "a"), ("gateway", "b")]),
    ("re-enable starts", desired(A), (record(A, State.STOPPED, enabled=False),),
     observed(), [("start", "a")]),
    ("undeclared with no app is forgotten", desired(), (record(A, State.FAILED),), observed(),
     [("forget", "a")]),
    # revoked: the source no longer passes the path rules -> stopped, not held
    ("revoked running model leaves the gateway", desired(B, revoked=(A,)), (RA, RB),
     RUNNING_BOTH, [("record", "a"), ("gateway", "b")]),
    ("revoked deploying model is stopped", desired(revoked=(A,)),
     (record(A, State.DEPLOYING),), observed((RA, AppStatus.DEPLOYING)), [("record", "a")]),
    ("revoked update leaves the gateway", desired(revoked=(A,)),
     (record(A, State.DEPLOYING, applied_hash=A.spec_hash()),),
     observed((RA, AppStatus.DEPLOYING), (GW, AppStatus.RUNNING)),
     [("record", "a"), ("gateway", "")]),
    ("revoked queued model without app is stopped", desired(revoked=(A,)),
     (record(A, State.QUEUED, retry_at=at(500).isoformat()),), observed(), [("record", "a")]),
    ("revoked failed model is stopped", desired(revoked=(A,)), (record(A, State.FAILED),),
     observed((RA, AppStatus.DEPLOY_FAILED)), [("record", "a")]),
    ("revoked and stopping: app deleted", desired(B, revoked=(A,)),
     (record(A, State.DELETING, error_summary=STOPPED_A), RB),
     observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING)),
     [("stop", "a")]),
    ("revoked and app gone: stopped, not forgotten", desired(revoked=(A,)),
     (record(A, State.DELETING, error_summary=STOPPED_A),), observed(), [("record", "a")]),
    ("revoked and stopped: idle", desired(revoked=(A,)),
     (record(A, State.STOPPED, error_summary=STOPPED_A),), observed(), []),
    ("revoked, never recorded: nothing", desired(revoked=(A,)), (), observed(), []),
    ("source passes again: started", desired(A),
     (record(A, State.STOPPED, error_summary=STOPPED_A),), observed(), [("start", "a")]),
    ("source passes, app not yet deleted: running again", desired(A),
     (record(A, State.DELETING, error_summary=STOPPED_A, applied_hash=A.spec_hash()),),
     observed((RA, AppStatus.RUNNING)), [("record", "a"), ("gateway", "a")]),
]


@pytest.mark.parametrize(("des", "recs", "obs", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_table(des: DesiredState, recs: tuple[ModelRecord, ...], obs: Observed,
                    expected: list[tuple[str, str]]) -> None:
    assert shape(run(des, recs, obs)) == expected


def test_idle_plan_is_empty_and_mutates_nothing() -> None:
    assert run(desired(A, B), (RA, RB), RUNNING_BOTH) == ()


def test_create_fixes_the_public_name_at_admission() -> None:
    (action,) = run(desired(A), (), observed(), now_s=0)
    assert isinstance(action, Deploy)
    assert action.record.public_id == "alice-202601061230-a"
    assert action.record.state is State.DEPLOYING
    assert action.record.attempted_revision == "rev1"
    assert action.record.model_key.startswith("svc-alice-20260106-123000-")


def test_update_keeps_name_and_serving_gateway() -> None:
    new = spec("a", engine_kwargs={"max_model_len": 64})
    actions = run(desired(new), (RA,), observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)))
    (deploy,) = actions
    assert isinstance(deploy, Deploy)
    assert deploy.record.model_key == RA.model_key
    assert deploy.record.public_id == RA.public_id
    assert deploy.record.applied_hash == RA.applied_hash  # last good still recorded
    # next tick, while the rolling update runs, A stays in the gateway
    assert deploy.record.submitted_at is None  # set by the executor once Ray accepts it
    accepted = replace(deploy.record, submitted_at=at(100).isoformat())
    later = run(desired(new), (accepted,),
                observed((RA, AppStatus.DEPLOYING), (GW, AppStatus.RUNNING)),
                gw=GatewayRecord(members(RA), T0.isoformat()))
    assert later == ()


def test_deleted_app_only_after_gateway_settled() -> None:
    deleting = record(B, State.DELETING)
    gw_without_b = GatewayRecord(members(RA), at(99).isoformat())
    obs = RUNNING_BOTH
    # gateway redeployed 1 s ago: too soon
    assert shape(run(desired(A), (RA, deleting), obs, gw=gw_without_b, now_s=100)) == []
    # settled: delete
    actions = run(desired(A), (RA, deleting), obs, gw=gw_without_b, now_s=110)
    assert shape(actions) == [("delete", "b")]
    assert isinstance(actions[0], DeleteApp)
    # gone from Ray: forget
    gone = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    assert shape(run(desired(A), (RA, deleting), gone, gw=gw_without_b)) == [("forget", "b")]


def test_stopping_model_becomes_stopped_not_forgotten() -> None:
    off = spec("a", enabled=False)
    stopping = record(off, State.DELETING, enabled=False)
    actions = run(desired(off), (stopping,), observed((GW, AppStatus.MISSING)),
                  gw=GatewayRecord())
    assert shape(actions) == [("record", "a")]
    assert isinstance(actions[0], RecordOnly)
    assert actions[0].record.state is State.STOPPED


def test_deadline_marks_failed() -> None:
    rec = record(A, State.DEPLOYING)
    obs = observed((rec, AppStatus.DEPLOYING))
    assert run(desired(A), (rec,), obs, now_s=599) == ()
    (action,) = run(desired(A), (rec,), obs, now_s=601)
    assert isinstance(action, RecordOnly)
    assert action.record.state is State.FAILED
    assert "not RUNNING after 600 s" in (action.record.error_summary or "")


def test_failed_carries_ray_message() -> None:
    rec = record(A, State.DEPLOYING)
    (action,) = run(desired(A), (rec,), observed((rec, AppStatus.DEPLOY_FAILED)))
    assert isinstance(action, RecordOnly)
    assert action.record.error_summary == "DEPLOY_FAILED: boom"
    assert action.record.events[-1].kind is EventKind.FAILED


def test_queued_waits_for_backoff_then_retries() -> None:
    rec = record(A, State.QUEUED, retry_at=at(50).isoformat())
    assert run(desired(A), (rec,), observed(), now_s=49) == ()
    assert shape(run(desired(A), (rec,), observed(), now_s=51)) == [("retry", "a")]


def test_backoff_grows_and_caps() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff_s(30) == 300.0


def test_after_transient_and_permanent() -> None:
    rec = record(A, State.DEPLOYING)
    queued = after_transient(rec, "GCS away", at(0))
    assert queued.state is State.QUEUED and queued.attempts == 1
    assert queued.retry_at == at(5).isoformat(timespec="seconds")
    failed = after_permanent(rec, "bad engine kwarg", at(0))
    assert failed.state is State.FAILED and failed.error_summary == "bad engine kwarg"


def test_moved_file_is_recorded_without_redeploy() -> None:
    moved = replace(A, source_file="users/alice/sub/a.yaml")
    obs = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    (action,) = run(desired(moved), (RA,), obs)
    assert isinstance(action, RecordOnly)
    assert action.record.source_file == "users/alice/sub/a.yaml"
    assert action.record.state is State.RUNNING


def test_gateway_members_are_public_ids_and_apps() -> None:
    rec = record(A, State.DEPLOYING)
    actions = run(desired(A), (rec,), observed((rec, AppStatus.RUNNING)), gw=GatewayRecord())
    gw = actions[-1]
    assert isinstance(gw, UpdateGateway)
    assert gw.members == ((rec.public_id, rec.app_name),)
    assert gw.kind is Kind.GATEWAY


def test_last_gateway_member_removed_deletes_gateway() -> None:
    actions = run(desired(), (RA,), observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)))
    assert shape(actions) == [("record", "a"), ("gateway", "")]


def test_failed_update_keeps_the_last_good_version_in_the_gateway() -> None:
    """A spec that passes validation but fails in vLLM (DEPLOY_FAILED) must not
    take down the replicas still serving the last good spec."""
    bad = replace(A, engine_kwargs={"not_a_vllm_arg": 1})
    updating = replace(record(bad, State.DEPLOYING), applied_hash=A.spec_hash)
    gw = GatewayRecord(members(updating), T0.isoformat())

    def ray(running: int) -> Observed:
        return Observed(apps={
            updating.app_name: AppObservation(updating.app_name, AppStatus.DEPLOY_FAILED,
                                              "bad kwarg", running),
            GW: AppObservation(GW, AppStatus.RUNNING)})

    (failed,) = run(desired(bad), (updating,), ray(running=1), gw=gw)
    assert isinstance(failed, RecordOnly) and failed.record.state is State.FAILED
    assert run(desired(bad), (failed.record,), ray(running=1), gw=gw) == ()
    # once no replica is left, the model leaves the gateway
    (leave,) = run(desired(bad), (failed.record,), ray(running=0), gw=gw)
    assert isinstance(leave, UpdateGateway) and leave.members == ()


def test_unconfirmed_submission_is_resubmitted_not_trusted() -> None:
    """servesync died after recording an update but before Ray accepted it: Ray
    still runs the old version (RUNNING); the update must be submitted again."""
    new = spec("a", engine_kwargs={"max_model_len": 64})
    (deploy,) = run(desired(new), (RA,), observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)))
    assert isinstance(deploy, Deploy)
    again = run(desired(new), (deploy.record,),
                observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING)), now_s=200,
                gw=GatewayRecord(members(RA), T0.isoformat()))
    assert shape(again) == [("retry", "a")]


def test_transient_backoff_of_an_update_keeps_the_model_in_the_gateway() -> None:
    queued = after_transient(replace(record(A), state=State.DEPLOYING), "timeout", at(0))
    assert queued.applied_hash is not None
    obs = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    assert run(desired(A), (queued,), obs, now_s=1,
               gw=GatewayRecord(members(RA), T0.isoformat())) == ()


def test_serving_config_change_updates_every_model() -> None:
    obs = RUNNING_BOTH
    actions = plan(desired=desired(A, B), recorded={r.model_key: r for r in (RA, RB)},
                   observed=obs, gateway=GatewayRecord(members(RA, RB), T0.isoformat()),
                   now=at(100), deploy_timeout_s=600, serving_hash="other")
    assert [(str(a.kind), a.record.suffix) for a in actions if isinstance(a, Deploy)] == [
        ("update", "a"), ("update", "b")]
    assert all(a.record.serving_hash == "other" for a in actions if isinstance(a, Deploy))


def test_a_revoked_model_is_stopped_through_the_gateway_and_started_again() -> None:
    """RUNNING -> (source refused) DELETING, out of the gateway -> app deleted once the
    gateway settled -> STOPPED with the reason, kept -> (source passes) started again."""
    (leave, gw) = run(desired(B, revoked=(A,)), (RA, RB), RUNNING_BOTH)
    assert isinstance(leave, RecordOnly) and isinstance(gw, UpdateGateway)
    stopping = leave.record
    assert stopping.state is State.DELETING and stopping.error_summary == STOPPED_A
    assert stopping.error_summary.startswith(
        "stopped: model_source $HOME/a: model.safetensors in /private/users/alice/a is a symlink")
    assert stopping.events[-1].kind is EventKind.STOP_REQUESTED
    assert gw.members == members(RB)
    without_a = GatewayRecord(members(RB), at(100).isoformat())
    assert run(desired(B, revoked=(A,)), (stopping, RB), RUNNING_BOTH, gw=without_a,
               now_s=101) == ()  # the gateway without A has not settled yet
    (delete,) = run(desired(B, revoked=(A,)), (stopping, RB), RUNNING_BOTH, gw=without_a,
                    now_s=110)
    assert isinstance(delete, DeleteApp) and delete.kind is Kind.STOP
    gone = observed((RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    (stopped,) = run(desired(B, revoked=(A,)), (stopping, RB), gone, gw=without_a)
    assert isinstance(stopped, RecordOnly) and stopped.record.state is State.STOPPED
    assert stopped.record.error_summary == STOPPED_A
    assert run(desired(B, revoked=(A,)), (stopped.record, RB), gone, gw=without_a) == ()
    (start,) = run(desired(A, B), (stopped.record, RB), gone, gw=without_a)
    assert isinstance(start, Deploy) and start.kind is Kind.START
    assert start.record.model_key == RA.model_key and start.record.error_summary is None


def test_a_new_reason_replaces_the_summary_of_a_revoked_model() -> None:
    stopped = record(A, State.STOPPED, error_summary="stopped: an older reason")
    (action,) = run(desired(revoked=(A,)), (stopped,), observed())
    assert isinstance(action, RecordOnly) and action.record.state is State.STOPPED
    assert action.record.error_summary == STOPPED_A


def test_a_revoked_model_restored_with_enabled_false_drops_the_reason() -> None:
    off = spec("a", enabled=False)
    stopped = record(off, State.STOPPED, error_summary=STOPPED_A)
    (action,) = run(desired(off), (stopped,), observed())
    assert isinstance(action, RecordOnly) and action.record.state is State.STOPPED
    assert action.record.error_summary is None
    assert run(desired(off), (action.record,), observed()) == ()


def test_any_other_issue_still_holds_the_model() -> None:
    """Only a document refused by its model_source alone is revoked (validating
    builds ``revoked``); a schema error in the same file keeps last-known-good."""
    des = desired(B, bad_names=(("users/alice/a.yaml", "alice", "a"),))
    assert des.revoked == {}
    assert run(des, (RA, RB), RUNNING_BOTH) == ()


@pytest.mark.parametrize(("state", "ray", "after"), [
    (State.RUNNING, AppStatus.RUNNING, State.DELETING),
    (State.DEPLOYING, AppStatus.DEPLOYING, State.DELETING),  # loading: its app is deleted
    (State.DEPLOYING, AppStatus.MISSING, State.STOPPED),  # never reached Ray
    (State.QUEUED, AppStatus.RUNNING, State.DELETING),  # an update backing off: old version up
    (State.QUEUED, AppStatus.MISSING, State.STOPPED),  # a first deploy backing off
    (State.FAILED, AppStatus.DEPLOY_FAILED, State.DELETING),
    (State.STOPPED, AppStatus.RUNNING, State.DELETING),  # an app left behind goes too
])
def test_a_revoked_model_stops_from_any_state(state: State, ray: AppStatus,
                                              after: State) -> None:
    rec = record(A, state, retry_at=at(500).isoformat() if state is State.QUEUED else None,
                 attempts=2 if state is State.QUEUED else 0)
    actions = run(desired(revoked=(A,)), (rec,), observed((rec, ray)))
    (stop,) = [a for a in actions if isinstance(a, RecordOnly)]
    assert stop.record.state is after and stop.record.error_summary == STOPPED_A
    assert stop.record.retry_at is None and stop.record.attempts == 0
    assert not any(isinstance(a, Deploy) for a in actions)


def test_running_only_once_the_settled_gateway_routes_it() -> None:
    """RUNNING means a client can call it: app RUNNING -> join the gateway (still
    DEPLOYING, saying what it waits for) -> RUNNING once the gateway with it settled."""
    deploying = record(A, State.DEPLOYING, submitted_at=at(0).isoformat())
    app_up = observed((RA, AppStatus.RUNNING), (GW, AppStatus.MISSING))
    empty = GatewayRecord((), None)
    first = run(desired(A), (deploying,), app_up, gw=empty, now_s=100)
    assert shape(first) == [("record", "a"), ("gateway", "a")]
    waiting = first[0]
    assert isinstance(waiting, RecordOnly) and waiting.record.state is State.DEPLOYING
    assert waiting.record.events[-1].kind is EventKind.ROUTING
    assert "waiting for the gateway" in waiting.record.events[-1].message
    gw = GatewayRecord(members(RA), at(100).isoformat())
    # the gateway applies its new routes: DEPLOYING, or RUNNING too soon after the update
    for gw_status, now_s in ((AppStatus.DEPLOYING, 103), (AppStatus.RUNNING, 101)):
        obs = observed((RA, AppStatus.RUNNING), (GW, gw_status))
        assert run(desired(A), (waiting.record,), obs, gw=gw, now_s=now_s) == ()
    settled = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    (done,) = run(desired(A), (waiting.record,), settled, gw=gw, now_s=102)
    assert isinstance(done, RecordOnly) and done.record.state is State.RUNNING
    assert done.record.applied_hash == A.spec_hash()


def test_an_update_of_a_routed_model_is_running_without_waiting() -> None:
    """Already routed before its update: RUNNING as soon as its app is, even
    while another model's gateway change settles."""
    new = spec("a", engine_kwargs={"max_model_len": 64})
    updating = replace(record(new, State.DEPLOYING, submitted_at=at(50).isoformat()),
                       applied_hash=A.spec_hash())
    gw = GatewayRecord(members(RA, RB), at(40).isoformat())
    rb_joining = record(B, State.DEPLOYING, submitted_at=at(0).isoformat())
    obs = observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING), (GW, AppStatus.DEPLOYING))
    actions = run(desired(new, B), (updating, rb_joining), obs, gw=gw, now_s=100)
    states = {a.record.suffix: a.record.state for a in actions if isinstance(a, RecordOnly)}
    assert states == {"a": State.RUNNING, "b": State.DEPLOYING}


def test_a_model_whose_app_is_not_running_does_not_join() -> None:
    deploying = record(A, State.DEPLOYING, submitted_at=at(0).isoformat())
    obs = observed((RA, AppStatus.DEPLOYING))
    assert run(desired(A), (deploying,), obs, gw=GatewayRecord((), None)) == ()


def test_two_models_with_one_public_id_route_the_first_admitted_only() -> None:
    """User ids may hold '-': user ``bob`` model ``x-202601011201-y`` admitted at
    12:00 and user ``bob-202601011200-x`` model ``y`` admitted at 12:01 share a
    public id. The gateway routes the first admitted; the other is never routed
    (never RUNNING) and the gateway keeps working for everyone."""
    first = record(spec("x-202601011201-y", user="bob"), admitted=at(0))
    second = record(spec("y", user="bob-202601011200-x"), admitted=at(60))
    first = replace(first, prefix="bob-202601011200")
    second = replace(second, prefix="bob-202601011200-x-202601011201")
    assert first.public_id == second.public_id
    specs = [spec("x-202601011201-y", user="bob"), spec("y", user="bob-202601011200-x")]
    actions = plan(desired=desired(*specs), recorded={r.model_key: r for r in (second, first)},
                   observed=observed((first, AppStatus.RUNNING), (second, AppStatus.RUNNING)),
                   gateway=GatewayRecord(), now=at(120), deploy_timeout_s=900)
    (gateway,) = [a for a in actions if isinstance(a, UpdateGateway)]
    assert gateway.members == ((first.public_id, first.app_name),)
