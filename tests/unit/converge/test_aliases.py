"""Aliases in the planner: ``<user>-<alias>`` rides with its model's gateway
route, a change of aliases is a gateway update and a record, never a deploy,
and the status learns an alias is routed only once the gateway has settled."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from servesync import schemas
from servesync.config import Config
from servesync.converge import naming
from servesync.converge.actions import Action, Deploy, Kind, RecordOnly, UpdateGateway
from servesync.converge.observed import AppStatus, Observed
from servesync.converge.planning import plan
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import GatewayRecord, ModelRecord, State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import at, desired, observed, record, spec

GW = naming.GATEWAY_APP
A = spec("a")
A_CHAT = spec("a", aliases=("chat",))
RA = record(A)
SETTLED = observed((RA, AppStatus.RUNNING), (GW, AppStatus.RUNNING))


def gw(*recs: ModelRecord, aliases: tuple[tuple[str, str], ...] = (),
       deployed_s: float = 0) -> GatewayRecord:
    return GatewayRecord(tuple(sorted((r.public_id, r.app_name) for r in recs)),
                         at(deployed_s).isoformat(), aliases)


def run(des: DesiredState, recs: tuple[ModelRecord, ...], gateway: GatewayRecord,
        obs: Observed = SETTLED, now_s: float = 100) -> tuple[Action, ...]:
    return plan(desired=des, recorded={r.model_key: r for r in recs}, observed=obs,
                gateway=gateway, now=at(now_s), deploy_timeout_s=600)


def only(actions: tuple[Action, ...], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def test_aliases_are_not_part_of_the_spec_hash() -> None:
    assert A_CHAT.spec_hash() == A.spec_hash()
    assert A_CHAT.to_json()["aliases"] == ["chat"]
    assert "aliases" not in A_CHAT.serving_json()


def test_adding_an_alias_to_a_running_model_updates_only_the_gateway() -> None:
    actions = run(desired(A_CHAT), (RA,), gw(RA))
    assert not only(actions, Deploy)
    (rec,) = only(actions, RecordOnly)
    (gateway,) = only(actions, UpdateGateway)
    assert isinstance(rec, RecordOnly) and isinstance(gateway, UpdateGateway)
    assert rec.record.spec["aliases"] == ["chat"]
    assert rec.record.state is State.RUNNING and rec.record.spec_hash == RA.spec_hash
    assert rec.record.routed_aliases == ()  # not yet: the gateway has not taken it
    assert gateway.members == gw(RA).members
    assert gateway.aliases == (("alice-chat", RA.public_id),)
    assert "+alias alice-chat" in gateway.reason
    assert [type(a) for a in actions] == [RecordOnly, UpdateGateway]  # record, then the call


def test_an_alias_counts_as_routed_once_the_gateway_with_it_has_settled() -> None:
    """Like RUNNING for a model: the gateway DEPLOYING, or RUNNING less than
    the settle delay after the update, does not route it for sure."""
    ra = replace(RA, spec=A_CHAT.to_json())
    after = gw(ra, aliases=(("alice-chat", ra.public_id),), deployed_s=100)
    for gw_status, now_s in ((AppStatus.DEPLOYING, 103), (AppStatus.RUNNING, 101)):
        obs = observed((ra, AppStatus.RUNNING), (GW, gw_status))
        assert run(desired(A_CHAT), (ra,), after, obs, now_s) == ()
    (done,) = run(desired(A_CHAT), (ra,), after, SETTLED, now_s=102)
    assert isinstance(done, RecordOnly) and done.record.routed_aliases == ("alice-chat",)
    routed = done.record
    assert run(desired(A_CHAT), (routed,), after, SETTLED, now_s=200) == ()  # idle again


def test_removing_an_alias_takes_it_out_of_the_gateway_and_the_status() -> None:
    ra = replace(RA, spec=A_CHAT.to_json(), routed_aliases=("alice-chat",))
    before = gw(ra, aliases=(("alice-chat", ra.public_id),))
    actions = run(desired(A), (ra,), before)
    (gateway,) = only(actions, UpdateGateway)
    assert isinstance(gateway, UpdateGateway) and gateway.aliases == ()
    (rec,) = only(actions, RecordOnly)
    assert isinstance(rec, RecordOnly) and rec.record.spec["aliases"] == []
    # the update is under way: the alias is no longer counted routed
    after = gw(ra, deployed_s=100)
    obs = observed((ra, AppStatus.RUNNING), (GW, AppStatus.DEPLOYING))
    (gone,) = run(desired(A), (rec.record,), after, obs, now_s=101)
    assert isinstance(gone, RecordOnly) and gone.record.routed_aliases == ()


def test_an_alias_change_with_a_scale_is_still_a_scale() -> None:
    scaled = spec("a", aliases=("chat",), num_replicas=3)
    actions = run(desired(scaled), (RA,), gw(RA))
    (deploy,) = only(actions, Deploy)
    assert isinstance(deploy, Deploy) and deploy.kind is Kind.SCALE
    assert deploy.record.spec["aliases"] == ["chat"]


def test_a_held_file_keeps_its_last_good_aliases() -> None:
    ra = replace(RA, spec=A_CHAT.to_json(), routed_aliases=("alice-chat",))
    current = gw(ra, aliases=(("alice-chat", ra.public_id),))
    assert run(desired(bad_files=(A.source_file,)), (ra,), current) == ()
    assert run(desired(bad_names=((A.source_file, "alice", "a"),)), (ra,), current) == ()


def test_an_alias_is_routed_only_with_its_model() -> None:
    """A new model joins the gateway with its aliases once its application is
    RUNNING, not before; a stopped one leaves with them."""
    new = record(A_CHAT, State.DEPLOYING, submitted_at=at(0).isoformat())
    not_up = observed((new, AppStatus.DEPLOYING))
    assert run(desired(A_CHAT), (new,), GatewayRecord(), not_up) == ()
    up = observed((new, AppStatus.RUNNING))
    (gateway,) = only(run(desired(A_CHAT), (new,), GatewayRecord(), up), UpdateGateway)
    assert isinstance(gateway, UpdateGateway)
    assert gateway.aliases == (("alice-chat", new.public_id),)
    ra = replace(RA, spec=A_CHAT.to_json(), routed_aliases=("alice-chat",))
    stop = run(desired(spec("a", aliases=("chat",), enabled=False)), (ra,),
               gw(ra, aliases=(("alice-chat", ra.public_id),)))
    (gateway,) = only(stop, UpdateGateway)
    assert isinstance(gateway, UpdateGateway)
    assert gateway.members == () and gateway.aliases == ()


def test_the_first_admitted_model_keeps_an_alias_two_claim() -> None:
    """Validation refuses two documents with one alias (409); two records can
    still claim one when a held file keeps its last good alias: the model
    admitted first keeps it, and the other's status does not list it routed."""
    first = replace(record(spec("a", aliases=("chat",)), admitted=at(-60)),
                    routed_aliases=("alice-chat",))
    second = record(spec("b", aliases=("chat", "other")))
    current = gw(first, second, aliases=(("alice-chat", first.public_id),))
    des = desired(spec("b", aliases=("chat", "other")), bad_files=(first.source_file,))
    actions = run(des, (first, second), current,
                  observed((first, AppStatus.RUNNING), (second, AppStatus.RUNNING),
                           (GW, AppStatus.RUNNING)))
    (gateway,) = only(actions, UpdateGateway)
    assert isinstance(gateway, UpdateGateway)
    assert gateway.aliases == (("alice-chat", first.public_id),
                               ("alice-other", second.public_id))


def test_an_alias_never_takes_a_public_id() -> None:
    """User ids may hold '-': user ``bob`` alias ``x`` is ``bob-x``, which a
    model of user ``bob-x`` can never be, but the planner does not rely on it:
    a recorded public id always wins over an alias."""
    target = replace(record(spec("m", user="carol")), prefix="carol")  # public id carol-m
    squatter = record(spec("s", user="carol", aliases=("m",)))  # alias carol-m
    des = desired(spec("m", user="carol"), spec("s", user="carol", aliases=("m",)))
    obs = observed((target, AppStatus.RUNNING), (squatter, AppStatus.RUNNING),
                   (GW, AppStatus.RUNNING))
    actions = run(des, (target, squatter), gw(target, squatter), obs)
    assert not only(actions, UpdateGateway)  # nothing to route: carol-m is a model's id
    assert target.public_id == "carol-m"


def test_a_spec_without_aliases_on_an_old_record_plans_nothing() -> None:
    """A record written before aliases existed (no ``aliases`` in its spec)."""
    old = replace(RA, spec={k: v for k, v in RA.spec.items() if k != "aliases"})
    assert run(desired(A), (old,), gw(old)) == ()


def test_describe_names_the_aliases() -> None:
    from servesync.converge.actions import describe

    (gateway,) = only(run(desired(A_CHAT), (RA,), gw(RA)), UpdateGateway)
    assert "aliases [alice-chat]" in describe(gateway)


# --- through the reconciler: real files, a real store and status files, the fake Ray ---

MODEL = "model_id: {m}\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"


def write(root: Path, m: str, extra: str = "") -> None:
    (root / "users" / "alice" / f"{m}.yaml").write_text(MODEL.format(m=m) + extra)


def settle(rec: Reconciler, ray: FakeRay, snap: Snapshot) -> None:
    for _ in range(8):
        result = rec.tick(snap)
        ray.settle()
        if result.settled and not result.actions:
            return
    raise AssertionError(f"not settled: {rec.store.models()}")


def status(config: Config, rec: ModelRecord) -> dict[str, Any]:
    path = Path(config.status_dir) / "models" / f"{rec.model_key}.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    schemas.validator("status-model").validate(doc)
    return doc


def test_aliases_through_the_tick(cpu_config: Config, desired_tree: Path) -> None:
    """Add an alias to a RUNNING model: one gateway call, no deploy, the status
    lists it routed once the gateway settled; a second model taking it is
    refused (409, both files) and the first keeps it; a broken file keeps it."""
    ray = FakeRay()
    rec = make_reconciler(cpu_config, ray, FakeClock(at(0), step_s=5))
    snap = Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=())
    write(desired_tree, "a")
    settle(rec, ray, snap)
    (a,) = rec.store.models().values()
    assert a.state is State.RUNNING and status(cpu_config, a)["endpoint"]["aliases"] == []

    ray.calls.clear()
    write(desired_tree, "a", "aliases: [chat]\n")
    first = rec.tick(snap)
    assert [str(x.kind) for x in first.actions] == ["record", "gateway"]
    assert ray.calls == [("gateway", a.public_id)]  # the gateway only: no replica touched
    assert ray.aliases == (("alice-chat", a.public_id),)
    assert rec.store.gateway().aliases == ray.aliases
    doc = status(cpu_config, rec.store.models()[a.model_key])
    assert doc["aliases"] == ["chat"] and doc["endpoint"]["aliases"] == []  # not yet routed
    ray.settle()
    settle(rec, ray, snap)
    assert [c[0] for c in ray.calls] == ["gateway"]
    now = rec.store.models()[a.model_key]
    assert now.spec_hash == a.spec_hash and now.state is State.RUNNING
    assert now.routed_aliases == ("alice-chat",)
    assert status(cpu_config, now)["endpoint"]["aliases"] == ["alice-chat"]

    # a second model of alice takes the same alias: 409 on both, the first keeps it
    write(desired_tree, "b", "aliases: [chat]\n")
    ray.calls.clear()
    result = rec.tick(snap)
    assert result.actions == () and ray.calls == []
    index = json.loads((Path(cpu_config.status_dir) / "index.json").read_text())
    conflicts = sorted((e["path"], e["line"], e["code"]) for e in index["errors"])
    assert conflicts == [("users/alice/a.yaml", 4, 409), ("users/alice/b.yaml", 4, 409)]
    assert [r.suffix for r in rec.store.models().values()] == ["a"]
    assert rec.store.gateway().aliases == (("alice-chat", a.public_id),)

    # a broken file holds its model with its last good aliases
    (desired_tree / "users" / "alice" / "b.yaml").unlink()
    write(desired_tree, "a", "aliases: [chat, Other]\n")
    assert rec.tick(snap).actions == ()
    assert rec.store.gateway().aliases == (("alice-chat", a.public_id),)
    assert status(cpu_config, rec.store.models()[a.model_key])["aliases"] == ["chat"]


def test_a_longer_user_id_owns_its_names_whoever_was_admitted_first() -> None:
    """User ``alice-x``'s alias ``chat`` and user ``alice``'s alias ``x-chat``
    are both ``alice-x-chat``: it is alice-x's, even though alice's model is
    older and claims it afterwards (no tenant takes another's name)."""
    old = record(spec("old", user="alice"), admitted=at(-600))
    theirs = replace(record(spec("m", user="alice-x", aliases=("chat",))),
                     routed_aliases=("alice-x-chat",))
    grab = spec("old", user="alice", aliases=("x-chat",))
    current = gw(old, theirs, aliases=(("alice-x-chat", theirs.public_id),))
    obs = observed((old, AppStatus.RUNNING), (theirs, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    actions = run(desired(grab, spec("m", user="alice-x", aliases=("chat",))),
                  (old, theirs), current, obs)
    assert not only(actions, UpdateGateway)  # alice-x-chat stays alice-x's


def test_a_held_model_keeps_the_alias_it_routes_against_an_older_claimant() -> None:
    """b's file breaks (held with its last good alias ``chat``, routed); a,
    admitted earlier, now lists ``chat``: b keeps routing it."""
    a = record(spec("a"), admitted=at(-600))
    b = replace(record(spec("b", aliases=("chat",))), routed_aliases=("alice-chat",))
    current = gw(a, b, aliases=(("alice-chat", b.public_id),))
    obs = observed((a, AppStatus.RUNNING), (b, AppStatus.RUNNING), (GW, AppStatus.RUNNING))
    actions = run(desired(spec("a", aliases=("chat",)), bad_files=(b.source_file,)),
                  (a, b), current, obs)
    gateways = only(actions, UpdateGateway)
    assert all(g.aliases == (("alice-chat", b.public_id),) for g in gateways
               if isinstance(g, UpdateGateway))
