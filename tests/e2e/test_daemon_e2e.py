"""``servesync run`` as a real process, against a real external Ray cluster (issue 4).

Everything is real: a ``ray start --head`` cluster with its own temp dir,
ports and auth token (:class:`tests.e2e.processes.RayHead`), the daemon as
a ``servesync run --config FILE`` subprocess, a desired-state git repository
the test commits to with ``git``, an AF_UNIX datagram socket as systemd's
``NOTIFY_SOCKET``, real signals and the real ``openai`` client. The test
process never joins the cluster as a driver: Serve's replicas (with their
actor ids) are read from the cluster's dashboard REST API.

Four tests share one daemon (restarted as systemd would) and its models, in order:

* git mode: a commit on ``main`` is served and recorded with its SHA; a
  scale commit runs 2 replicas; a bad commit is reported (400, path, SHA)
  while the model keeps serving its last good version; the fix clears it; a
  commit on another branch changes nothing. The time from ``git commit``
  returning to index.json showing the new revision is printed.
* lifecycle: READY=1 after the first tick, STATUS= lines, a second ``run``
  and a ``once`` are refused by the state lock (exit 2), SIGTERM exits 0
  quickly with STOPPING=1 while the model keeps answering, and a restarted
  daemon adopts the model: same replica actors, no deploy or scale event,
  every request answered throughout.
* Ray head restart: with two models serving, every process of the head's
  session is killed; the status files say "Ray unreachable" and show no
  model RUNNING; the daemon exits non-zero (the test restarts it, as
  systemd's ``Restart=on-failure`` would); the head is started again on the
  same address and token; both models are resubmitted within 2 ticks of
  Ray answering and answer the ``openai`` client again. The time from the
  head being back to the first answer is printed.
* two nodes (issue 10): a second node joins the cluster (``ray start
  --address=...``, its own CPUs and a custom resource naming it; the head
  has one too); a ``parallelism: {pipeline: 2}`` model sized so that no node
  holds both its bundles is RUNNING; Ray's placement-group table (state API)
  puts one bundle on each node, and the model answers the ``openai`` client.
  Where vLLM's CPU build runs the stages is asserted as it is: both on the
  head (``benchmarks/twonode_pipeline.py`` prints why). Last in the module:
  the second node is stopped after it, the model left for the teardown.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests.e2e.clients import POLL_S, ask, listed, model_yaml, requests_to
from tests.e2e.conftest import REPLICA_ENV, TIMINGS, free_port
from tests.e2e.processes import Daemon, RayHead, RayWorker, run_cli, session_pids, tail, titles
from tests.support.gitrepos import GitRepo
from tests.support.sdnotify import NotifyListener
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

READY_DEADLINE_S = 300.0  # ray.init + serve.start (controller, proxy) + the first tick
REVISION_DEADLINE_S = 60.0  # a commit reaches index.json in about a second
RUNNING_DEADLINE_S = 600.0  # a CPU model takes 35-80 s, more when other tests run
GATEWAY_DEADLINE_S = 120.0
STOP_DEADLINE_S = 10.0
MODEL_FILE = "users/alice/tiny.yaml"
HEAD_RESOURCE, SECOND_RESOURCE = "node_a", "node_b"  # the custom resource naming each node


class World:
    """The cluster, the repository, the daemon's config and the running daemon."""

    def __init__(self, head: RayHead, base: Path, tiny_model: Path) -> None:
        self.head, self.base = head, base
        shutil.copytree(tiny_model, base / "private" / "hf" / "tiny")
        self.repo = GitRepo(base / "desired")
        self.initial_sha, _ = self.repo.commit(
            {"README.md": "desired state\n", "users/.gitkeep": ""}, "empty")
        self.status_dir = base / "status"
        self.http_port = free_port()
        self.config_path = base / "servesync.yaml"
        self.config_path.write_text(json.dumps({  # JSON is YAML
            "source": {"path": str(self.repo.path), "branch": "main"},
            "state_dir": str(base / "state"),
            "status_dir": str(self.status_dir),
            "storage_root": str(base / "private"),
            "ray": {"address": head.address},
            "serving": {
                "accelerator_type": "cpu", "http_host": "127.0.0.1",
                "http_port": self.http_port, "deploy_timeout_s": 600,
                "replica_env": dict(REPLICA_ENV),
            },
            "tick_interval_s": 30,
        }, indent=2))  # fmt: skip
        self.notify = NotifyListener()
        self.daemons: list[Daemon] = []
        self.client = OpenAI(base_url=f"http://127.0.0.1:{self.http_port}/v1", api_key="x",
                             timeout=30.0, max_retries=0)

    # -- processes --------------------------------------------------------------------

    def env(self, *, notify: bool = True) -> dict[str, str]:
        env = self.head.driver_env()
        env.pop("NOTIFY_SOCKET", None)
        env["PYTHONUNBUFFERED"] = "1"
        if notify:
            env["NOTIFY_SOCKET"] = str(self.notify.path)
        return env

    def start_daemon(self) -> Daemon:
        log = self.base / f"daemon-{len(self.daemons) + 1}.log"
        daemon = Daemon(self.config_path, log, self.env()).start()
        self.daemons.append(daemon)
        return daemon

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.close()
        self.notify.close()

    @contextmanager
    def explained(self) -> Iterator[None]:
        """On any failure, print what the daemons, Ray and the status files said."""
        try:
            yield
        except BaseException:
            for daemon in self.daemons:
                print(f"\n===== {daemon.log_path.name} (tail) =====\n{daemon.log()}")
            print(f"\n===== ray start =====\n{tail(self.head.log_path, 2000)}")
            print(f"\n===== index.json =====\n{tail(self.status_dir / 'index.json', 4000)}")
            print(f"\n===== sd_notify =====\n{self.notify.texts()}")
            raise

    # -- status files -----------------------------------------------------------------

    def index(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.status_dir / "index.json").read_text())
        except FileNotFoundError:
            return {}
        return data

    def model(self) -> dict[str, Any]:
        """The one model's line in index.json ({} while there is none)."""
        models = self.index().get("models") or []
        assert len(models) <= 1, models
        return models[0] if models else {}

    def model_doc(self) -> dict[str, Any]:
        key = self.model()["model_key"]
        data: dict[str, Any] = json.loads(
            (self.status_dir / "models" / f"{key}.json").read_text())
        return data

    def commit(self, files: dict[str, str], message: str, timing: str) -> str:
        """Commit on main; wait for index.json to show the SHA; record how long it took."""
        sha, committed = self.repo.commit(files, message)
        took = wait_for(f"index.json at {sha[:12]} ({message})",
                        lambda: self.index().get("revision") == sha, deadline_s=REVISION_DEADLINE_S,
                        poll_s=0.02, started=committed)  # polled finely: this is a measurement
        TIMINGS[f"daemon: git commit → index.json revision ({timing})"] = f"{took:.2f} s"
        return sha

    def wait_running(self, sha: str, what: str) -> dict[str, Any]:
        """Wait for the model to be RUNNING with ``sha`` applied; fail on FAILED."""

        def running() -> bool:
            model = self.model()
            assert model.get("state") != "FAILED", model
            return model.get("state") == "RUNNING" and model.get("applied_revision") == sha

        took = wait_for(f"{what}: RUNNING at {sha[:12]}", running, deadline_s=RUNNING_DEADLINE_S,
                        poll_s=POLL_S)
        TIMINGS[f"daemon: {what} until RUNNING"] = f"{took:.1f} s"
        return self.model()

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.model_doc()["events"] if e["kind"] in kinds]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """A ``ray start --head`` cluster of this module, ended by its own session's pids."""
    pytest.importorskip("vllm")
    head = RayHead(num_cpus=16, resources={HEAD_RESOURCE: 1})
    try:
        TIMINGS["daemon: ray start --head"] = f"{head.start():.1f} s"
        yield head
    finally:
        left = head.stop()
        assert not left, f"Ray processes survived SIGKILL: {left}"


@pytest.fixture(scope="module")
def world(ray_head: RayHead, tiny_model: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The daemon running on the external cluster, watching an empty repository."""
    world = World(ray_head, tmp_path_factory.mktemp("daemon"), tiny_model)
    try:
        world.start_daemon()
        yield world
    finally:
        world.close()


def test_commits_on_main_converge_and_nothing_else_does(world: World) -> None:
    with world.explained():
        # --- the first tick, then READY=1 (sd_notify) ----------------------------------
        started = time.monotonic()
        ready = world.notify.wait_for("READY=1", timeout=READY_DEADLINE_S)
        assert ready is not None, "no READY=1"
        TIMINGS["daemon: start until READY=1"] = f"{ready.at - started:.1f} s"
        texts = world.notify.texts()
        first_status = next(i for i, t in enumerate(texts) if t.startswith("STATUS="))
        assert first_status < texts.index("READY=1"), texts  # READY after the first tick
        assert world.initial_sha[:12] in texts[first_status], texts
        index = world.index()
        assert index["revision"] == world.initial_sha
        assert index["models"] == [] and index["errors"] == []
        assert index["ray_reachable"] is True

        # --- commit a model: it is served, recorded with that commit's SHA -------------
        added = world.commit({MODEL_FILE: model_yaml("tiny", replicas=1)}, "alice: add tiny", "add")
        model = world.wait_running(added, "add model")
        public_id = model["model_id"]
        assert public_id.startswith("alice-") and public_id.endswith("-tiny")
        assert world.index()["revision"] == added
        # RUNNING means callable: listed and answering at once, no wait for the gateway
        assert listed(world.client) == {public_id}
        assert ask(world.client, public_id).strip()
        app = world.model_doc()["serve_status"]["app_name"]
        assert len(world.head.running_replica_ids(app)) == 1

        # --- commit a scale change: 2 replicas, the new SHA applied ----------------------
        scaled = world.commit({MODEL_FILE: model_yaml("tiny", replicas=2)}, "alice: 2 replicas",
                              "scale")
        model = world.wait_running(scaled, "scale to 2")
        assert model["num_replicas"] == 2
        wait_for("Ray runs 2 replicas", lambda: len(world.head.running_replica_ids(app)) == 2,
                 deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)
        assert any(e["revision"] == scaled for e in world.events("SCALED"))
        assert ask(world.client, public_id).strip()

        # --- commit a bad file: reported at its SHA, the model keeps serving --------------
        bad = world.commit({MODEL_FILE: model_yaml("tiny", replicas="many")}, "alice: oops", "bad")
        index = world.index()
        assert [(e["code"], e["path"]) for e in index["errors"]] == [(400, MODEL_FILE)], index
        model = world.model()
        assert model["state"] == "RUNNING" and model["applied_revision"] == scaled, model
        assert ask(world.client, public_id).strip()
        assert len(world.head.running_replica_ids(app)) == 2
        assert bad != scaled

        # --- commit the fix: no errors at the new SHA, RUNNING --------------------------
        fixed = world.commit({MODEL_FILE: model_yaml("tiny", replicas=2)}, "alice: fix", "fix")
        index = world.index()
        assert index["errors"] == [] and index["revision"] == fixed
        model = world.model()
        assert model["state"] == "RUNNING", model
        assert model["applied_revision"] == scaled  # same spec as applied: nothing redeployed
        assert ask(world.client, public_id).strip()

        # --- a commit on another branch changes nothing ---------------------------------
        world.repo.git("checkout", "-q", "-b", "other")
        world.repo.commit({"users/bob/other.yaml": model_yaml("tiny", replicas=1)
                           .replace("model_id: tiny", "model_id: other")}, "bob: on other")
        world.repo.git("checkout", "-q", "main")
        time.sleep(5.0)  # the watcher saw the other branch's ref move
        index = world.index()
        assert index["revision"] == fixed and len(index["models"]) == 1, index
        # a later commit on main makes a tick that certainly read the repository after it
        later = world.commit({"README.md": "desired state, v2\n"}, "readme", "readme only")
        index = world.index()
        assert [m["model_id"] for m in index["models"]] == [public_id], index
        assert index["errors"] == [] and index["revision"] == later
        assert not (world.repo.path / "users" / "bob").exists()
        assert listed(world.client) == {public_id}


def test_daemon_lifecycle_with_signals_lock_and_adoption(world: World) -> None:
    if world.model().get("state") != "RUNNING":
        pytest.skip("needs the model served by test_commits_on_main_converge...")
    with world.explained():
        first = world.daemon
        assert any(t.startswith("STATUS=tick ") for t in world.notify.texts())

        # --- a second daemon on the same state dir is refused by the lock ---------------
        start = time.monotonic()
        code, output = run_cli("run", "--config", str(world.config_path),
                               env=world.env(notify=False), timeout_s=60)
        TIMINGS["daemon: second `run` refused in"] = f"{time.monotonic() - start:.1f} s"
        assert code == 2, output
        assert "lock" in output and f"pid {first.pid}" in output, output

        # --- so is `servesync once` -------------------------------------------------------
        code, output = run_cli("once", "--config", str(world.config_path),
                               env=world.env(notify=False), timeout_s=60)
        assert code == 2, output
        assert "lock" in output and f"pid {first.pid}" in output, output

        # --- SIGTERM: exit 0 quickly, STOPPING=1, the model keeps answering -------------
        model = world.model()
        public_id, key = model["model_id"], model["model_key"]
        app = world.model_doc()["serve_status"]["app_name"]
        replicas = world.head.running_replica_ids(app)
        assert len(replicas) == 2
        deploys = world.events("DEPLOY_REQUESTED", "SCALED")
        with requests_to(world.client, public_id) as loop:
            before_stop = world.notify.count()
            code, took = first.terminate(timeout_s=60)
            TIMINGS["daemon: SIGTERM until exit"] = f"{took:.1f} s"
            assert code == 0, first.log()
            assert took < STOP_DEADLINE_S, f"stopping took {took:.1f} s"
            assert world.notify.wait_for("STOPPING=1", since=before_stop,
                                         timeout=5) is not None, world.notify.texts(before_stop)
            time.sleep(5.0)
            ok_while_stopped = loop.ok
            assert ask(world.client, public_id).strip()

            # --- restart: the model is adopted, not redeployed ---------------------------
            before_start = world.notify.count()
            restarted = time.monotonic()
            second = world.start_daemon()
            ready = world.notify.wait_for("READY=1", since=before_start,
                                          timeout=READY_DEADLINE_S)
            assert ready is not None, second.log()
            TIMINGS["daemon: restart until READY=1 (adopting)"] = f"{ready.at - restarted:.1f} s"
            # one more tick on demand (SIGHUP: reload + fetch + tick), then compare
            before_hup = world.notify.count()
            second.signal(signal.SIGHUP)
            assert world.notify.wait_for(lambda t: t.startswith("STATUS=tick "), since=before_hup,
                                         timeout=REVISION_DEADLINE_S) is not None
            time.sleep(3.0)
        TIMINGS["daemon: requests during stop + restart"] = (
            f"{loop.ok} ok ({ok_while_stopped} by 5 s after the stop), "
            f"{len(loop.failures)} failed")
        assert loop.failures == [] and loop.ok > 0
        assert world.head.running_replica_ids(app) == replicas
        assert world.events("DEPLOY_REQUESTED", "SCALED") == deploys
        model = world.model()
        assert model["model_key"] == key and model["state"] == "RUNNING", model
        assert world.index()["ray_reachable"] is True
        assert second.alive()
        assert listed(world.client) == {public_id}


OUTAGE_DEADLINE_S = 120.0  # head killed -> the daemon has said so and exited


def test_ray_head_killed_and_started_again_models_come_back(world: World) -> None:
    if world.model().get("state") != "RUNNING":
        pytest.skip("needs the model served by the tests before")
    with world.explained():
        # --- two models serving (tiny back to 1 replica: less to restore) -------------
        sha, _ = world.repo.commit({MODEL_FILE: model_yaml("tiny", replicas=1),
                                    "users/alice/second.yaml": model_yaml("second")},
                                   "alice: tiny x1, add second")

        def models() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = world.index().get("models") or []
            return found

        def all_running() -> bool:
            found = models()
            assert all(m["state"] != "FAILED" for m in found), found
            return len(found) == 2 and all(m["state"] == "RUNNING"
                                           and m["applied_revision"] == sha for m in found)

        wait_for("two models RUNNING", all_running, deadline_s=RUNNING_DEADLINE_S, poll_s=POLL_S)
        ids = {m["model_id"] for m in models()}
        wait_for("the gateway lists both", lambda: listed(world.client) == ids,
                 deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)
        for public_id in ids:
            assert ask(world.client, public_id).strip()

        # --- the head dies: "Ray unreachable", nothing RUNNING, the daemon exits ------
        exits: list[int | None] = []
        restarts: list[int] = []  # sd_notify message count at each restart

        def supervise() -> None:
            """systemd's Restart=on-failure: a daemon that exited is started again."""
            daemon = world.daemon
            if daemon.alive():
                return
            assert daemon.proc is not None
            exits.append(daemon.proc.returncode)
            assert daemon.proc.returncode not in (0, 2), daemon.log()
            restarts.append(world.notify.count())
            world.start_daemon()

        def outage_shown() -> bool:
            index = world.index()
            assert not [m for m in index.get("models") or [] if m["state"] == "RUNNING"] \
                or index.get("ray_reachable", True), index
            return (index.get("ray_reachable") is False
                    and "Ray unreachable" in (index.get("source_error") or "")
                    and {m["state"] for m in index["models"]} == {"UNKNOWN"})

        killed = time.monotonic()
        assert world.head.kill() == []
        world.daemon.signal(signal.SIGHUP)  # a tick now, not at the 30 s interval
        wait_for("status: Ray unreachable, models UNKNOWN", outage_shown,
                 deadline_s=OUTAGE_DEADLINE_S, poll_s=0.2)
        TIMINGS["daemon: head killed (SIGTERM, SIGKILL at 0.5 s) → status says Ray "
                "unreachable"] = f"{time.monotonic() - killed:.1f} s"

        def restarted_and_unreachable() -> bool:
            supervise()
            return bool(exits) and world.daemon.alive() and outage_shown()

        wait_for("the daemon exits non-zero and is restarted", restarted_and_unreachable,
                 deadline_s=OUTAGE_DEADLINE_S, poll_s=0.2)
        TIMINGS["daemon: head killed → daemon exited (code)"] = (
            f"{time.monotonic() - killed:.1f} s ({exits[0]})")
        # the restarted daemon's first tick, against the dead head, says so too
        assert world.notify.wait_for("READY=1", since=restarts[-1],
                                     timeout=READY_DEADLINE_S) is not None, world.daemon.log()
        time.sleep(3.0)
        supervise()
        assert outage_shown(), world.index()

        # --- the head is back: both resubmitted within 2 ticks, both answer -----------
        world.head.start()
        back = time.monotonic()
        reachable_tick: list[int] = []
        resubmitted_tick: list[int] = []

        def answering() -> bool:
            supervise()
            index = world.index()
            if index.get("ray_reachable") and not reachable_tick:
                reachable_tick.append(index["tick"])
            if (reachable_tick and not resubmitted_tick
                    and all(m["state"] in ("DEPLOYING", "RUNNING") for m in index["models"])
                    and all(any(e["kind"] == "DRIFT" for e in world_events(world, m))
                            for m in index["models"])):
                resubmitted_tick.append(index["tick"])
            try:
                return all(ask(world.client, public_id).strip() for public_id in ids)
            except Exception:
                return False

        took = wait_for("both models answer again", answering, deadline_s=RUNNING_DEADLINE_S,
                        poll_s=0.2)
        TIMINGS["daemon: Ray head back → both models answer"] = f"{took:.1f} s"
        assert resubmitted_tick and resubmitted_tick[0] - reachable_tick[0] <= 1, (
            reachable_tick, resubmitted_tick)
        wait_for("both RUNNING again", lambda: all(m["state"] == "RUNNING" for m in models()),
                 deadline_s=GATEWAY_DEADLINE_S, poll_s=POLL_S)
        assert {m["model_id"] for m in models()} == ids  # same names: records kept
        assert world.index()["ray_reachable"] is True
        print(f"daemon exits during the outage: {exits}; "
              f"back after {time.monotonic() - back:.0f} s")


def world_events(world: World, model: dict[str, Any]) -> list[dict[str, Any]]:
    path = world.status_dir / "models" / f"{model['model_key']}.json"
    events: list[dict[str, Any]] = json.loads(path.read_text())["events"]
    return events


# --- two nodes: a pipeline-parallel model whose placement spans both (issue 10) ---------

PP_FILE = "users/alice/pp.yaml"
PP_CPUS = 8
"""``cpus_per_replica`` of the pipeline model. Its placement group is ``{CPU: 9}``
(stage 0 plus the replica actor's 1 CPU) and ``{CPU: 8}`` (stage 1): 17 CPUs
are more than the head's 16, and the second node's 8 hold stage 1's bundle
but not stage 0's, so Ray's PACK must put one bundle on each node."""
PP_YAML = f"""\
model_id: pp
model_source: $HOME/common/hf/tiny
cpus_per_replica: {PP_CPUS}
parallelism: {{pipeline: 2}}
engine_kwargs:
  max_model_len: 256
description: two pipeline stages, one placement bundle on each node
"""


@pytest.fixture
def second_node(world: World) -> Iterator[RayWorker]:
    """A second node (``ray start --address=<head>``, 8 CPUs, ``node_b: 1``) in
    the module's cluster for one test, ended by its own session's pids."""
    node = RayWorker(world.head, num_cpus=PP_CPUS, resources={SECOND_RESOURCE: 1})
    try:
        TIMINGS["two nodes: ray start --address (second node)"] = f"{node.start():.1f} s"
        yield node
    finally:
        started = time.monotonic()
        left = node.stop()
        TIMINGS["two nodes: second node stopped"] = f"{time.monotonic() - started:.1f} s"
        assert not left, f"second node's processes survived SIGKILL: {left}"


def test_a_pipeline_parallel_model_is_placed_across_two_nodes(
        world: World, second_node: RayWorker) -> None:
    """``parallelism: {pipeline: 2}`` on a CPU cluster of two nodes: Ray's own
    placement-group table puts one bundle on each node and the model answers
    through the gateway. What vLLM's CPU build does with it is asserted as
    it is: Ray Serve LLM runs a CPU model with vLLM's ``mp`` executor (vLLM's
    CPU platform has no Ray executor: "current platform cpu does not support
    ray"), so both pipeline stages are processes of the replica on the head
    node, and the second node's bundle is reserved but runs no stage. The
    model file sets no env: vLLM's CPU build refuses two local workers on this
    one-NUMA-node machine unless told how to bind threads, and servesync tells
    it (``VLLM_CPU_OMP_THREADS_BIND=nobind`` for a CPU replica of tensor x pipeline > 1)."""
    started = time.monotonic()
    with world.explained():
        alive = [n for n in world.head.state("nodes") if n["state"] == "ALIVE"]
        named = {r: n["node_id"] for n in alive for r in (HEAD_RESOURCE, SECOND_RESOURCE)
                 if n["resources_total"].get(r)}
        assert len(alive) == 2 and len(named) == 2, alive
        head_id, second_id = named[HEAD_RESOURCE], named[SECOND_RESOURCE]

        sha, _ = world.repo.commit({PP_FILE: PP_YAML}, "alice: pipeline over two nodes")

        def pp() -> dict[str, Any]:
            found = [m for m in world.index().get("models") or [] if m["model_id"].endswith("-pp")]
            assert not found or found[0]["state"] != "FAILED", found
            return found[0] if found else {}

        took = wait_for("the pipeline model RUNNING",
                        lambda: pp().get("state") == "RUNNING"
                        and pp().get("applied_revision") == sha,
                        deadline_s=RUNNING_DEADLINE_S, poll_s=POLL_S)
        TIMINGS["two nodes: commit → pipeline model RUNNING"] = f"{took:.1f} s"
        public_id = pp()["model_id"]
        doc = json.loads((world.status_dir / "models" / f"{pp()['model_key']}.json").read_text())
        assert doc["parallelism"] == {"tensor": 1, "pipeline": 2}, doc

        # --- Ray's placement-group table: one bundle on each node ---------------------
        app = doc["serve_status"]["app_name"]
        (replica,) = [r for dep in world.head.serve_details()["applications"][app]
                      ["deployments"].values() for r in dep["replicas"]]
        (group,) = [g for g in world.head.state("placement_groups")
                    if g["name"] == replica["actor_name"]]
        assert group["state"] == "CREATED", group
        bundles = sorted(group["bundles"], key=lambda b: int(b["bundle_id"]["bundle_index"]))
        placed = [(b["node_id"], b["unit_resources"].get("CPU")) for b in bundles]
        assert placed == [(head_id, PP_CPUS + 1.0), (second_id, float(PP_CPUS))], group
        assert replica["node_id"] == head_id, replica  # the replica actor sits in bundle 0
        TIMINGS["two nodes: the replica's bundles (node: CPUs)"] = ", ".join(
            f"{HEAD_RESOURCE if n == head_id else SECOND_RESOURCE}: {c:g}" for n, c in placed)

        # --- the model answers through the gateway -------------------------------------
        assert public_id in listed(world.client)
        assert ask(world.client, public_id).strip()

        # --- where vLLM's CPU build runs the stages: both on the head node -------------
        def stages(pids: list[int]) -> list[str]:
            return sorted(t.split("::")[-1] for t in titles(pids) if "Worker_PP" in t)

        assert world.head.sid is not None
        assert stages(session_pids(world.head.sid)) == ["Worker_PP0", "Worker_PP1"]
        assert stages(second_node.pids()) == []
    TIMINGS["two nodes: the test, second node started → answered"] = (
        f"{time.monotonic() - started:.1f} s")
