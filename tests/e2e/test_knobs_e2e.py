"""Issue 10 end to end: a model asking for more host memory than the cluster
has (``memory_gb_per_replica``) stays DEPLOYING with Ray's own reason in its
status file, then is FAILED at its own deadline (``rollout.deploy_timeout_s``),
while a model committed with it loads, answers the real ``openai`` client and
keeps its replica throughout. Real files → Reconciler → real Ray Serve LLM on
the session's in-process Ray (tests/e2e/conftest.py); run under
``flock /tmp/servesync-ray.lock``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from servesync.config import Config
from servesync.converge.reconciling import Reconciler, TickResult
from servesync.converge.records import EventKind, ModelRecord, State
from servesync.desired.sources import DirectorySource
from servesync.rayserve.applier import RayApplier
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.e2e.clients import POLL_S, ask, model_yaml
from tests.e2e.conftest import TIMINGS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

DEADLINE_S = 60  # the big model's own deploy deadline (the smallest rollout_bounds allow)
TOO_MUCH_GIB = 100_000  # far above any node's memory: Ray can never place the replica
SCHEDULING = "to be scheduled"  # Serve's words for a replica it cannot place


class Cluster:
    """A desired tree, a store and a reconciler over the session's Ray."""

    def __init__(self, config: Config, applier: RayApplier, root: Path) -> None:
        self.config, self.applier, self.root = config, applier, root
        self.source = DirectorySource(root)
        self.reconciler = Reconciler(
            config, store=Store(Path(config.state_dir)), applier=applier,
            publisher=StatusFiles(Path(config.status_dir), config.serving))

    def write(self, suffix: str, text: str) -> None:
        path = self.root / "users" / "alice" / f"{suffix}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def tick(self) -> TickResult:
        return self.reconciler.tick(self.source.refresh())

    def model(self, suffix: str) -> ModelRecord:
        (rec,) = [r for r in self.reconciler.store.models().values() if r.suffix == suffix]
        return rec

    def status(self, suffix: str) -> dict[str, Any]:
        path = Path(self.config.status_dir) / "models" / f"{self.model(suffix).model_key}.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def until(self, what: str, done: Any, deadline_s: float = 300.0) -> float:
        results: list[TickResult] = []

        def ticked() -> bool:
            results.append(self.tick())
            return bool(done())

        took = wait_for(what, ticked, deadline_s=deadline_s, poll_s=POLL_S,
                        detail=lambda: results[-1] if results else None)
        TIMINGS[what] = f"{took:.1f} s"
        return took


@pytest.fixture(scope="module")
def cluster(applier: RayApplier, e2e_config: Config, tiny_model: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    base = tmp_path_factory.mktemp("knobs")
    storage = base / "private"
    shutil.copytree(tiny_model, storage / "hf" / "tiny")
    config = replace(e2e_config, storage_root=str(storage), state_dir=str(base / "state"),
                     status_dir=str(base / "status"))
    Path(config.state_dir).mkdir()
    return Cluster(config, applier, base / "desired")


def test_a_model_asking_too_much_memory_waits_with_rays_reason_then_fails(
        cluster: Cluster, applier: RayApplier, e2e_config: Config) -> None:
    client = OpenAI(base_url=e2e_config.serving.base_url, api_key="x", timeout=30.0,
                    max_retries=0)
    cluster.write("small", model_yaml("small"))
    cluster.write("big", model_yaml("big") + f"memory_gb_per_replica: {TOO_MUCH_GIB}\n"
                  f"rollout: {{deploy_timeout_s: {DEADLINE_S}}}\n"
                  "description: asks for more memory than the cluster has\n")
    cluster.tick()
    submitted = time.monotonic()

    # --- big waits: DEPLOYING, with Serve's reason (resources) in its status file ------
    def waiting_with_reason() -> bool:
        doc = cluster.status("big")
        return doc["state"] == "DEPLOYING" and SCHEDULING in doc["serve_status"]["message"]

    cluster.until("knobs: infeasible memory → Ray's reason in status", waiting_with_reason,
                  deadline_s=DEADLINE_S - 5)
    doc = cluster.status("big")
    assert doc["memory_gb_per_replica"] == TOO_MUCH_GIB
    assert doc["rollout"] == {"deploy_timeout_s": DEADLINE_S}
    assert "memory" in doc["serve_status"]["message"]
    assert doc["endpoint"] is None

    # --- the other model loads and answers meanwhile ----------------------------------
    cluster.until("knobs: the other model RUNNING",
                  lambda: cluster.model("small").state is State.RUNNING)
    small = cluster.model("small")
    assert ask(client, small.public_id).strip()
    replicas = applier.replica_actor_ids(small.app_name)
    assert len(replicas) == 1

    # --- big is FAILED at its own deadline, with Ray's reason ---------------------------
    cluster.until("knobs: infeasible memory → FAILED at its deadline",
                  lambda: cluster.model("big").state is State.FAILED, deadline_s=2 * DEADLINE_S)
    assert time.monotonic() - submitted >= DEADLINE_S
    big = cluster.model("big")
    at = {e.kind: datetime.fromisoformat(e.at) for e in big.events}
    took = (at[EventKind.FAILED] - at[EventKind.SUBMITTED]).total_seconds()
    assert DEADLINE_S <= took <= DEADLINE_S + 15  # the first tick after it (1 s apart, unloaded)
    TIMINGS["knobs: infeasible memory, Ray confirmed → FAILED"] = f"{took:.0f} s"
    doc = cluster.status("big")
    TIMINGS["knobs: the FAILED summary"] = doc["error_summary"]
    assert doc["state"] == "FAILED"
    assert doc["error_summary"].startswith(f"not RUNNING after {DEADLINE_S} s (Ray: DEPLOYING (")
    assert SCHEDULING in doc["error_summary"] and "memory" in doc["error_summary"]

    # --- the other model never noticed ---------------------------------------------------
    assert cluster.model("small").state is State.RUNNING
    assert applier.replica_actor_ids(small.app_name) == replicas
    assert ask(client, small.public_id).strip()

    # --- leave the session's Ray as found ------------------------------------------------
    for suffix in ("small", "big"):
        (cluster.root / "users" / "alice" / f"{suffix}.yaml").unlink()
    cluster.until("knobs: both deleted", lambda: not cluster.reconciler.store.models())
