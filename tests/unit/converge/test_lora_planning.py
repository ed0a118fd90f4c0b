"""A routed model's LoRA path rides in the gateway's routes (``UpdateGateway.lora``,
``GatewayRecord.lora``), so the gateway lists adapters without asking the
model's replica: the planner gives the gateway each routed model's recorded
``lora.path``, a change of the paths alone is a gateway update (no deploy),
and the gateway record keeps them (an older state file without them reads)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from servesync.config import Config, LoraOffer
from servesync.converge import naming
from servesync.converge.actions import Action, Deploy, Kind, RecordOnly, UpdateGateway
from servesync.converge.observed import AppStatus, Observed
from servesync.converge.planning import plan
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import GatewayRecord, ModelRecord, State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState, Lora
from tests.support.clock import FakeClock
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import at, desired, observed, record, spec

GW = naming.GATEWAY_APP
PATH, OTHER = "s3://adapters/alice/a", "s3://adapters/alice/a2"
A = spec("a", lora=Lora(PATH, 2))
B = spec("b")  # no lora
RA, RB = record(A), record(B)
SETTLED = observed((RA, AppStatus.RUNNING), (RB, AppStatus.RUNNING), (GW, AppStatus.RUNNING))


def gw(*recs: ModelRecord, lora: tuple[tuple[str, str], ...] = ()) -> GatewayRecord:
    return GatewayRecord(tuple(sorted((r.public_id, r.app_name) for r in recs)),
                         at(0).isoformat(), lora=lora)


def run(des: DesiredState, recs: tuple[ModelRecord, ...], gateway: GatewayRecord,
        obs: Observed = SETTLED) -> tuple[Action, ...]:
    return plan(desired=des, recorded={r.model_key: r for r in recs}, observed=obs,
                gateway=gateway, now=at(100), deploy_timeout_s=600)


def test_the_gateway_gets_each_routed_models_lora_path() -> None:
    assert run(desired(A, B), (RA, RB), gw(RA, RB, lora=((RA.public_id, PATH),))) == ()
    # a model joining the gateway brings its path with it
    (update,) = run(desired(A), (RA,), GatewayRecord())
    assert isinstance(update, UpdateGateway)
    assert update.members == ((RA.public_id, RA.app_name),)
    assert update.lora == ((RA.public_id, PATH),)


def test_a_lora_path_change_alone_is_a_gateway_update_and_no_deploy() -> None:
    """The recorded spec's path differs from the gateway's (e.g. a state file
    written before the routes carried paths, or the update's record written
    ahead): one gateway update, nothing deployed, no replica asked."""
    for was in ((), ((RA.public_id, OTHER),)):
        actions = run(desired(A, B), (RA, RB), gw(RA, RB, lora=was))
        (update,) = actions
        assert isinstance(update, UpdateGateway) and update.kind is Kind.GATEWAY
        assert update.lora == ((RA.public_id, PATH),)
        assert update.members == gw(RA, RB).members
        assert update.reason == f"lora paths of {RA.public_id}"
    # the path dropped: the gateway no longer lists its adapters
    plain = record(replace(A, lora=None))
    (update,) = run(desired(replace(A, lora=None)), (plain,),
                    gw(plain, lora=((plain.public_id, PATH),)),
                    observed((plain, AppStatus.RUNNING), (GW, AppStatus.RUNNING)))
    assert isinstance(update, UpdateGateway) and update.lora == ()


def test_a_changed_lora_rolls_the_model_and_updates_the_gateways_path_in_the_same_tick() -> None:
    moved = replace(A, lora=Lora(OTHER, 2))
    actions = run(desired(moved, B), (RA, RB), gw(RA, RB, lora=((RA.public_id, PATH),)))
    assert [type(a) for a in actions] == [UpdateGateway, Deploy]
    update, deploy = actions
    assert isinstance(update, UpdateGateway) and isinstance(deploy, Deploy)
    assert deploy.kind is Kind.UPDATE  # lora is part of the code version
    assert update.lora == ((RA.public_id, OTHER),)


def test_the_gateway_record_keeps_the_paths_and_an_old_state_file_reads() -> None:
    rec = gw(RA, RB, lora=((RA.public_id, PATH),))
    doc = json.loads(json.dumps(rec.to_json()))
    assert doc["lora"] == [[RA.public_id, PATH]]
    assert GatewayRecord.from_json(doc) == rec
    old = gw(RA, RB)
    assert "lora" not in old.to_json()  # written as before the field
    assert GatewayRecord.from_json({"members": [list(m) for m in old.members],
                                    "deployed_at": old.deployed_at}) == old


def running_with_lora(cpu_config: Config, desired_tree: Path
                      ) -> tuple[LoraOffer, Config, FakeRay, Reconciler, Snapshot]:
    """alice's model ``a`` with ``lora.path`` under the offer, ticked until settled."""
    offer = LoraOffer(prefix="s3://adapters/{user_id}/", users={}, max_adapters_per_replica=4)
    config = replace(cpu_config, serving=replace(cpu_config.serving, lora=offer))
    ray = FakeRay()
    rec = make_reconciler(config, ray, FakeClock(at(0), step_s=5))
    snap = Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=())
    (desired_tree / "users" / "alice" / "a.yaml").write_text(
        "model_id: a\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
        f"lora:\n  path: {PATH}/\n")
    for _ in range(8):
        result = rec.tick(snap)
        ray.settle()
        if result.settled and not result.actions:
            break
    return offer, config, ray, rec, snap


def test_lora_paths_through_the_tick(cpu_config: Config, desired_tree: Path) -> None:
    """A model with ``lora``: the gateway call carries its path and the store
    keeps it; a gateway recorded without paths (an older state) gets one
    gateway call with them, no deploy."""
    _, _, ray, rec, snap = running_with_lora(cpu_config, desired_tree)
    (a,) = rec.store.models().values()
    assert a.state is State.RUNNING
    assert ray.lora == ((a.public_id, PATH),) == rec.store.gateway().lora

    rec.store.set_gateway(replace(rec.store.gateway(), lora=()))  # as an older daemon wrote it
    ray.calls.clear()
    result = rec.tick(snap)
    assert [str(x.kind) for x in result.actions] == ["gateway"]
    assert ray.calls == [("gateway", a.public_id)] and ray.lora == ((a.public_id, PATH),)
    assert not [x for x in result.actions if isinstance(x, Deploy | RecordOnly)]


def test_a_narrowed_lora_offer_revokes_a_held_models_path(cpu_config: Config,
                                                          desired_tree: Path) -> None:
    """The operator narrows ``serving.lora.prefix``: the model's file turns 403
    and the model would be held at its last good spec, lora.path included (in
    its LLMConfig and in the gateway's routes). ``recheck_held`` revokes it
    instead: stopped, out of the gateway, its path gone from the routes."""
    offer, config, ray, rec, snap = running_with_lora(cpu_config, desired_tree)
    (a,) = rec.store.models().values()
    assert a.state is State.RUNNING and rec.store.gateway().lora == ((a.public_id, PATH),)

    narrowed = replace(offer, prefix="s3://adapters/{user_id}/ft/")
    rec.config = replace(config, serving=replace(config.serving, lora=narrowed))  # a reload
    for _ in range(8):
        result = rec.tick(snap)
        ray.settle()
        if result.settled and not result.actions:
            break
    (a,) = rec.store.models().values()
    assert a.state is State.STOPPED and a.app_name not in ray.apps
    assert rec.store.gateway().lora == () == ray.lora
    assert a.error_summary == (
        "stopped: lora (as last deployed; users/alice/a.yaml has errors): lora.path "
        f"'{PATH}' is outside your adapters' prefix s3://adapters/alice/ft/ (serving.lora)")
