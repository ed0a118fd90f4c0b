"""The reconcile tick end to end: real files → Reconciler → real Ray Serve LLM.

One scenario in phases, as an operator lives it (issue 3), each asserting
what a user would see through the real ``openai`` client and the status
files: add A → answers the first request made once its status says RUNNING
(the gateway routes it before it is RUNNING); add B while a client loops on A → A's replica is the
same and every request succeeded; scale A → A's replica kept, B untouched;
kill -9 the vLLM engine of one of A's two replicas while a client loops on B
→ A goes DEGRADED (with the reason) and back to RUNNING once Ray replaced the
replica, and every request to B succeeded; update B (one replica) while a
client loops on B → every request succeeded
(Serve starts the new replica before stopping the old); break B's file →
B keeps serving its last good version and status shows the 400; delete B →
gone from /v1/models and Ray; restart servesync → no redeploy; ``serve
delete`` A by hand → the next tick restores it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from servesync.config import Config
from servesync.converge.observed import AppStatus
from servesync.converge.reconciling import Reconciler, TickResult
from servesync.converge.records import ModelRecord, State
from servesync.desired.sources import DirectorySource
from servesync.rayserve.applier import GATEWAY_APP, RayApplier
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.e2e.clients import POLL_S, ask, listed, model_yaml, requests_to
from tests.e2e.conftest import TIMINGS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

CONVERGE_DEADLINE_S = 300.0


class World:
    """The desired tree, the store and a reconciler, as the daemon holds them."""

    def __init__(self, config: Config, applier: RayApplier, root: Path) -> None:
        self.config, self.applier, self.root = config, applier, root
        self.source = DirectorySource(root)
        self.reconciler = self.restart()

    def restart(self) -> Reconciler:
        """A fresh Reconciler on the same state dir, like a restarted daemon."""
        store = Store(Path(self.config.state_dir))
        publisher = StatusFiles(Path(self.config.status_dir), self.config.serving)
        self.reconciler = Reconciler(self.config, store=store, applier=self.applier,
                                     publisher=publisher)
        return self.reconciler

    def write(self, user: str, suffix: str, text: str) -> None:
        path = self.root / "users" / user / f"{suffix}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def tick(self) -> TickResult:
        return self.reconciler.tick(self.source.refresh())

    def converge(self, what: str) -> TickResult:
        """Tick until a tick reports settled (every POLL_S); record how long it took."""
        results: list[TickResult] = []

        def settled() -> bool:
            results.append(self.tick())
            return results[-1].settled

        took = wait_for(what, settled, deadline_s=CONVERGE_DEADLINE_S, poll_s=POLL_S,
                        detail=lambda: results[-1])
        TIMINGS[what] = f"{took:.1f} s"
        return results[-1]

    def until(self, what: str, done: Callable[[], bool]) -> None:
        """Tick every POLL_S until ``done()`` holds after a tick."""
        results: list[TickResult] = []

        def ticked() -> bool:
            results.append(self.tick())
            return done()

        wait_for(what, ticked, deadline_s=CONVERGE_DEADLINE_S, poll_s=POLL_S,
                 detail=lambda: results[-1])

    def model_file(self, model_key: str) -> dict[str, Any]:
        path = Path(self.config.status_dir) / "models" / f"{model_key}.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def until_status_running(self, suffix: str, what: str) -> dict[str, object]:
        """Tick (every 0.25 s) until the model's status file says RUNNING; its
        content then. Records how long the model stayed DEPLOYING after Ray
        showed its application RUNNING (waiting for the gateway to route it)."""
        seen: dict[str, float] = {}

        def running() -> bool:
            self.tick()
            rec = self.model(suffix)
            if any(e.kind == "ROUTING" for e in rec.events) and "routing" not in seen:
                seen["routing"] = time.monotonic()
            return rec.state is State.RUNNING

        wait_for(what, running, deadline_s=CONVERGE_DEADLINE_S, poll_s=0.25)
        if "routing" in seen:
            TIMINGS[f"{what}: ROUTING → RUNNING"] = f"{time.monotonic() - seen['routing']:.1f} s"
        doc: dict[str, object] = json.loads(
            (Path(self.config.status_dir) / "models" / f"{self.model(suffix).model_key}.json")
            .read_text())
        return doc

    def model(self, suffix: str) -> ModelRecord:
        (rec,) = [r for r in self.reconciler.store.models().values() if r.suffix == suffix]
        return rec

    def index(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (Path(self.config.status_dir) / "index.json").read_text())
        return data


def kill_engine(app_name: str) -> str:
    """kill -9 the vLLM EngineCore process of one replica of ``app_name``: a
    child of the replica actor's process (pid from Serve's details)."""
    from servesync.rayserve.applier import _serve_details

    app = _serve_details()["applications"][app_name]
    pids = sorted(int(r["pid"]) for d in app["deployments"].values()
                  for r in d["replicas"] if r.get("state") == "RUNNING" and r.get("pid"))
    assert pids, app
    for child in children(pids[0]):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "EngineCore" in cmdline:
            os.kill(child, signal.SIGKILL)
            return f"{cmdline.strip()} (pid {child}, replica pid {pids[0]})"
    raise AssertionError(f"no EngineCore child of replica pid {pids[0]}")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/stat's ppid field)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def world(applier: RayApplier, e2e_config: Config, tiny_model: Path,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("reconcile")
    storage = base / "private"
    shutil.copytree(tiny_model, storage / "hf" / "tiny")  # inside the storage root
    config = replace(e2e_config, storage_root=str(storage), state_dir=str(base / "state"),
                     status_dir=str(base / "status"))
    Path(config.state_dir).mkdir()
    return World(config, applier, base / "desired")


@pytest.fixture(scope="module")
def client(e2e_config: Config) -> OpenAI:
    return OpenAI(base_url=e2e_config.serving.base_url, api_key="x", timeout=30.0,
                  max_retries=0)


def test_gitops_lifecycle(world: World, client: OpenAI, applier: RayApplier) -> None:
    # --- add A: it answers through the gateway -----------------------------------------
    world.write("alice", "a", model_yaml("a", replicas=1))
    # RUNNING means callable: the first request right after the status says so succeeds
    doc = world.until_status_running("a", "reconcile: add A")
    assert doc["state"] == "RUNNING" and isinstance(doc["endpoint"], dict)
    assert ask(client, str(doc["endpoint"]["model"])).strip()
    assert any(e.kind == "ROUTING" for e in world.model("a").events)  # it did wait
    result = world.converge("reconcile: add A until settled")
    assert result.converged, result
    a = world.model("a")
    assert a.state is State.RUNNING
    assert a.public_id.startswith("alice-") and a.public_id.endswith("-a")
    assert ask(client, a.public_id).strip()
    assert listed(client) == {a.public_id}

    # --- add B while a client loops on A ------------------------------------------------
    a_replicas = applier.replica_actor_ids(a.app_name)
    gateway_replicas = applier.replica_actor_ids(GATEWAY_APP)
    with requests_to(client, a.public_id) as loop:
        world.write("bob", "b", model_yaml("b", replicas=1))
        doc = world.until_status_running("b", "reconcile: add B")
        assert isinstance(doc["endpoint"], dict)
        assert ask(client, str(doc["endpoint"]["model"])).strip()  # at once, no 404
        world.converge("reconcile: add B until settled")
        time.sleep(2.0)
    TIMINGS["reconcile: requests to A while adding B"] = loop.summary()
    assert loop.failures == [] and loop.ok > 0
    assert applier.replica_actor_ids(a.app_name) == a_replicas
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_replicas  # reconfigured in place
    b = world.model("b")
    assert ask(client, b.public_id).strip()
    assert listed(client) == {a.public_id, b.public_id}

    # --- scale A: B is not touched --------------------------------------------------------
    b_replicas = applier.replica_actor_ids(b.app_name)
    a_replicas = applier.replica_actor_ids(a.app_name)
    world.write("alice", "a", model_yaml("a", replicas=2))
    world.converge("reconcile: scale A to 2 until settled")
    assert world.model("a").state is State.RUNNING
    assert applier.observe().apps[a.app_name].running_replicas == 2
    assert a_replicas < applier.replica_actor_ids(a.app_name)  # kept, one added
    assert applier.replica_actor_ids(b.app_name) == b_replicas
    assert any(e.kind == "SCALED" for e in world.model("a").events)

    # --- kill -9 one of A's vLLM engines while a client loops on B: A dips, B never fails ---
    with requests_to(client, b.public_id) as loop:
        killed_at = time.monotonic()
        engine = kill_engine(a.app_name)
        world.until("reconcile: A DEGRADED after kill -9 of a vLLM engine",
                    lambda: world.model("a").state is State.DEGRADED)
        TIMINGS["reconcile: kill -9 engine → A DEGRADED"] = \
            f"{time.monotonic() - killed_at:.1f} s"
        world.until("reconcile: A RUNNING again after the kill",
                    lambda: world.model("a").state is State.RUNNING)
        TIMINGS["reconcile: kill -9 engine → A RUNNING again"] = \
            f"{time.monotonic() - killed_at:.1f} s"
    TIMINGS["reconcile: requests to B while A lost a replica"] = loop.summary()
    assert loop.failures == [] and loop.ok > 0
    doc = world.model_file(a.model_key)
    kinds = [e["kind"] for e in doc["events"]]
    dip = doc["events"][kinds.index("DEGRADED", kinds.index("SCALED"))]
    assert "of 2 replicas running" in dip["message"], (engine, doc["events"])
    assert doc["events"][-1]["kind"] == "RUNNING", doc["events"]
    assert doc["events"][-1]["message"] == "recovered: 2 of 2 replicas running"
    assert doc["state"] == "RUNNING" and doc["error_summary"] is None
    assert applier.observe().apps[a.app_name].running_replicas == 2
    assert ask(client, a.public_id).strip()

    # --- update B (1 replica) while a client loops on B: it keeps answering (surge) --------
    with requests_to(client, b.public_id) as loop:
        world.write("bob", "b", model_yaml("b", replicas=1, max_len=200))
        world.converge("reconcile: update B (1 replica) until settled")
        time.sleep(2.0)
    TIMINGS["reconcile: requests to B while updating B"] = loop.summary()
    assert loop.failures == [] and loop.ok > 0
    assert applier.replica_actor_ids(b.app_name).isdisjoint(b_replicas)  # replaced
    assert world.model("b").spec_hash != b.spec_hash
    b = world.model("b")

    # --- break B's file: B keeps serving its last good version, status shows the 400 ------
    world.write("bob", "b", model_yaml("b", replicas="many"))
    result = world.tick()
    assert not result.actions and not result.converged
    assert world.model("b").state is State.RUNNING
    assert world.model("b").spec_hash == b.spec_hash
    errors = world.index()["errors"]
    assert isinstance(errors, list) and errors
    assert errors[0]["code"] == 400 and errors[0]["path"] == "users/bob/b.yaml"
    assert ask(client, b.public_id).strip()

    # --- delete B: gone from /v1/models and from Ray -------------------------------------
    (world.root / "users" / "bob" / "b.yaml").unlink()
    world.converge("reconcile: delete B until settled")
    assert listed(client) == {a.public_id}
    assert applier.observe().status(b.app_name) is AppStatus.MISSING
    assert not (Path(world.config.status_dir) / "models" / f"{b.model_key}.json").exists()

    # --- restart servesync: nothing is redeployed ---------------------------------------
    a_replicas = applier.replica_actor_ids(a.app_name)
    world.reconciler.store.close()
    world.restart()
    result = world.tick()
    assert result.actions == () and result.converged
    assert applier.replica_actor_ids(a.app_name) == a_replicas

    # --- `serve delete` A by hand: the next tick restores it ------------------------------
    from ray import serve

    serve.delete(a.app_name)
    wait_for("A deleted by hand", lambda: applier.observe().status(a.app_name)
             is AppStatus.MISSING, deadline_s=120, poll_s=POLL_S)
    result = world.tick()
    assert [str(x.kind) for x in result.actions] == ["gateway", "redeploy"]
    world.converge("reconcile: restore A after serve.delete")
    assert world.model("a").public_id == a.public_id
    assert ask(client, a.public_id).strip()


def test_an_alias_answers_and_adding_it_restarts_nothing(
        world: World, client: OpenAI, applier: RayApplier) -> None:
    """Issue 10's aliases on the running A of the lifecycle above (loaded here
    if this test runs alone): adding ``aliases: [chat]`` keeps A's replica and
    the gateway's (same actor ids) while a client loops on A; ``alice-chat``
    then answers the real ``openai`` client and is listed on /v1/models; a
    second model of alice taking the same alias is refused with 409 on both
    files and A keeps it."""
    path = world.root / "users" / "alice" / "a.yaml"
    if not path.exists():
        world.write("alice", "a", model_yaml("a", replicas=1))
    text = path.read_text()
    world.converge("aliases: A running")
    a = world.model("a")
    assert a.state is State.RUNNING
    a_replicas = applier.replica_actor_ids(a.app_name)
    gateway_replicas = applier.replica_actor_ids(GATEWAY_APP)
    alias = "alice-chat"

    with requests_to(client, a.public_id) as loop:
        world.write("alice", "a", text + "aliases: [chat]\n")
        added = time.monotonic()
        world.until("aliases: the status lists alice-chat routed",
                    lambda: world.model_file(a.model_key)["endpoint"]["aliases"] == [alias])
        TIMINGS["aliases: commit → status lists the alias routed"] = \
            f"{time.monotonic() - added:.1f} s"
        assert ask(client, alias).strip()  # callable as soon as the status says so
        time.sleep(1.0)
    TIMINGS["aliases: requests to A while adding an alias"] = loop.summary()
    assert loop.failures == [] and loop.ok > 0
    assert applier.replica_actor_ids(a.app_name) == a_replicas  # no replica restarted
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_replicas  # reconfigured in place
    now = world.model("a")
    assert now.spec_hash == a.spec_hash and now.routed_aliases == (alias,)
    assert {a.public_id, alias} <= listed(client)
    reply = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "Hello!"}], max_tokens=4)
    assert reply.model == a.public_id  # the answer names the model that served it
    doc = world.model_file(a.model_key)
    assert doc["aliases"] == ["chat"] and doc["endpoint"]["aliases"] == [alias]

    # a second model of alice taking the same alias: 409 on both files, A keeps it
    world.write("alice", "c", model_yaml("c", replicas=1) + "aliases: [chat]\n")
    result = world.tick()
    assert result.actions == () and not result.converged
    errors = world.index()["errors"]
    assert isinstance(errors, list)
    assert sorted((e["path"], e["code"]) for e in errors) == [
        ("users/alice/a.yaml", 409), ("users/alice/c.yaml", 409)]
    assert all("alias 'chat' of user 'alice'" in e["message"] for e in errors)
    assert [r.suffix for r in world.reconciler.store.models().values()] == ["a"]
    assert ask(client, alias).strip()
    assert applier.replica_actor_ids(a.app_name) == a_replicas
    (world.root / "users" / "alice" / "c.yaml").unlink()
    assert world.converge("aliases: the conflicting file removed").converged


VERSIONS_YAML = """\
model_id: v
cpus_per_replica: 1
engine_kwargs:
  max_model_len: 256
versions:
  - name: stable
    model_source: $HOME/common/hf/tiny
    weight: {stable}
  - name: canary
    model_source: $HOME/common/hf/tiny-canary
    weight: {canary}
  - name: broken
    model_source: $HOME/models/no-such-model
    weight: {broken}
"""


SPLIT_TOLERANCE = 0.02
"""The issue asks for the split within 6 points of the weights. The gateway's
smooth weighted round-robin is exact over every 100 unpinned requests a replica
routes, and off by less than one request per version in between, so with two
gateway replicas 500 requests land within 2 requests of the weights; 2 points
(10 requests) leaves room and is still a third of what the issue allows."""


def versions_split(client: OpenAI, model: str, n: int) -> tuple[dict[str, int], list[str]]:
    """``n`` short requests (8 at a time) to ``model``: how many each version
    answered (the gateway's ``X-Servesync-Version`` header), and the failures."""
    from concurrent.futures import ThreadPoolExecutor

    from servesync.rayserve.gateway import VERSION_HEADER

    def one(_: int) -> str:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
            raw.parse()
            return raw.headers.get(VERSION_HEADER) or "no header"
        except Exception as e:  # counted, shown
            return f"failed: {type(e).__name__}: {e}"

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(n)))
    counts: dict[str, int] = {}
    for a in answers:
        if not a.startswith("failed"):
            counts[a] = counts.get(a, 0) + 1
    return counts, [a for a in answers if a.startswith("failed")]


def test_weighted_versions(world: World, client: OpenAI, applier: RayApplier,
                           tiny_model: Path) -> None:
    """Issue 11 part 1 with the real ``openai`` client, three versions in one
    deploy to keep it cheap: stable (the tiny model) 72, canary (a copy) 18,
    and broken 10, whose path holds no model. Broken never starts, so its
    share goes to the others: 80/20 in effect, and of 500 requests the split
    is within 2 points (SPLIT_TOLERANCE), none answered by broken, none failed (nor any while
    broken failed). Committing 45/45/10 (50/50 in effect) is one gateway
    reconfigure: the split follows, and no version's replica actor changed.
    A pin header reaches a chosen version; a pin to broken is a 404."""
    from openai import NotFoundError

    from servesync.rayserve.gateway import VERSION_HEADER

    canary_dir = Path(world.config.storage_root) / "hf" / "tiny-canary"
    if not canary_dir.exists():
        shutil.copytree(tiny_model, canary_dir)
    start = time.monotonic()
    world.write("alice", "v", VERSIONS_YAML.format(stable=72, canary=18, broken=10))
    errors: list[str] = []

    def versions() -> dict[str | None, ModelRecord]:
        return {r.version: r for r in world.reconciler.store.models().values()
                if r.model_id == "v"}

    def routed_80_20() -> bool:
        errors.extend(world.tick().errors)
        return {v: r.routed_weight for v, r in versions().items()} == {
            "stable": 80, "canary": 20, "broken": None}

    wait_for("versions: stable and canary RUNNING, routed 80/20", routed_80_20,
             deadline_s=CONVERGE_DEADLINE_S, poll_s=POLL_S, detail=lambda: (errors[-3:], {
                 v: (str(r.state), r.routed_weight, r.error_summary)
                 for v, r in versions().items()}))
    TIMINGS["versions: commit → stable, canary RUNNING, routed 80/20"] = \
        f"{time.monotonic() - start:.1f} s"
    recs = versions()
    public_id = recs["stable"].public_id
    assert recs["canary"].public_id == recs["broken"].public_id == public_id
    assert sorted(m for m in listed(client) if m == public_id) == [public_id]  # listed once
    stem = recs["stable"].model_key.rsplit(".", 1)[0]

    with requests_to(client, public_id) as loop:
        world.until("versions: broken FAILED", lambda: versions()["broken"].state is State.FAILED)
    TIMINGS["versions: requests until the broken version FAILED"] = loop.summary()
    assert loop.failures == []
    doc = world.model_file(stem)
    assert doc["state"] == "DEGRADED" and doc["endpoint"]["model"] == public_id
    assert [(v["name"], v["state"], v["weight_asked"], v["weight_in_effect"])
            for v in doc["versions"]] == [("broken", "FAILED", 10, 0),
                                          ("canary", "RUNNING", 18, 20),
                                          ("stable", "RUNNING", 72, 80)]
    actors = {v: applier.replica_actor_ids(recs[v].app_name) for v in ("stable", "canary")}
    assert all(actors.values())

    counts, failures = versions_split(client, public_id, 500)
    TIMINGS["versions: 500 requests at 80/20 in effect"] = str(counts)
    assert failures == [] and "broken" not in counts
    assert abs(counts.get("stable", 0) / 500 - 0.80) <= SPLIT_TOLERANCE, counts

    pinned = client.chat.completions.with_raw_response.create(
        model=public_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=1,
        extra_headers={VERSION_HEADER: "canary"})
    assert pinned.headers.get(VERSION_HEADER) == "canary"
    with pytest.raises(NotFoundError):
        client.chat.completions.create(
            model=public_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=1,
            extra_headers={VERSION_HEADER: "broken"})

    # 45/45/10: 50/50 in effect; one gateway reconfigure, no replica restarted
    gateway_actors = applier.replica_actor_ids(GATEWAY_APP)
    world.write("alice", "v", VERSIONS_YAML.format(stable=45, canary=45, broken=10))
    first = world.tick()  # the new weights recorded, one gateway call, no deploy
    assert [str(a.kind) for a in first.actions if str(a.kind) != "record"] == ["gateway"]
    world.until("versions: 50/50 in effect", lambda: [
        v["weight_in_effect"] for v in world.model_file(stem)["versions"]] == [0, 50, 50])
    counts, failures = versions_split(client, public_id, 500)
    TIMINGS["versions: 500 requests at 50/50 in effect"] = str(counts)
    assert failures == [] and "broken" not in counts
    assert abs(counts.get("stable", 0) / 500 - 0.50) <= SPLIT_TOLERANCE, counts
    assert {v: applier.replica_actor_ids(recs[v].app_name) for v in actors} == actors
    assert applier.replica_actor_ids(GATEWAY_APP) == gateway_actors

    (world.root / "users" / "alice" / "v.yaml").unlink()
    assert world.converge("versions: the model removed").converged


def test_a_scheduled_stop_deletes_the_running_application(
        world: World, client: OpenAI, applier: RayApplier) -> None:
    """Issue 11's scheduled stop on the running A of the tests above (loaded
    here if this test runs alone; it is the module's last: A ends STOPPED).
    Committing ``schedule: {stop_after: 5s}`` restarts no replica (same actor
    ids); 5 s after, with no other commit, A leaves /v1/models, its Serve
    application is deleted, and its status file says it was the schedule."""
    path = world.root / "users" / "alice" / "a.yaml"
    if not path.exists():
        world.write("alice", "a", model_yaml("a", replicas=1))
    world.converge("schedule: A running")
    a = world.model("a")
    assert a.state is State.RUNNING
    a_replicas = applier.replica_actor_ids(a.app_name)
    world.write("alice", "a", path.read_text() + "schedule:\n  stop_after: 5s\n")
    committed = time.monotonic()
    result = world.tick()
    assert [str(x.kind) for x in result.actions] == ["record"]  # no Ray call for a schedule
    assert applier.replica_actor_ids(a.app_name) == a_replicas
    doc = world.model_file(a.model_key)
    assert doc["schedule"] == {"stop_after": "5s"} and doc["next_stop_at"] is not None
    assert ask(client, a.public_id).strip()  # still serving until the stop
    world.until("schedule: A STOPPED by stop_after 5s",
                lambda: world.model("a").state is State.STOPPED)
    TIMINGS["schedule: commit stop_after 5s → A STOPPED"] = \
        f"{time.monotonic() - committed:.1f} s"
    assert time.monotonic() - committed >= 4  # not early (records keep whole seconds)
    assert applier.observe().status(a.app_name) is AppStatus.MISSING
    assert a.public_id not in listed(client)
    doc = world.model_file(a.model_key)
    assert doc["state"] == "STOPPED" and doc["stopped_reason"] == "schedule"
    assert any(e["kind"] == "STOP_REQUESTED" and e["message"].startswith(
        "schedule: stop_after 5s elapsed") for e in doc["events"])
    assert world.converge("schedule: A stopped, settled").converged
