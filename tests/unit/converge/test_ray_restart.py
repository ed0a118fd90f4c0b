"""A Ray head that dies and comes back empty, at the reconciler's level (fake Ray).

While Ray does not answer: nothing is planned, the records keep RUNNING, the
status files show UNKNOWN. The first tick that reaches Ray again resubmits
every model it lost (drift) under the same names, and the gateway follows.
The real head restart (real processes, real Ray) is tests/e2e/test_daemon_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from servesync.config import Config
from servesync.converge import actions as act
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.test_reconciling import converge, stepping_clock, write


def test_models_lost_with_the_head_are_resubmitted_in_the_first_tick_with_ray(
        cpu_config: Config, desired_tree: Path) -> None:
    write(desired_tree, "a")
    write(desired_tree, "b", replicas=2)
    ray = FakeRay()
    rec = make_reconciler(cpu_config, ray, stepping_clock())
    snap = Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=())
    converge(rec, ray, snap)
    names = {r.suffix: r.app_name for r in rec.store.models().values()}
    index_path = Path(cpu_config.status_dir) / "index.json"

    ray.reachable = False  # the head dies
    ray.apps.clear()  # ... and comes back empty
    for _ in range(3):
        result = rec.tick(snap)
        assert result.actions == () and not result.converged
        assert result.requeue_after_s is not None  # looks again soon
        index = json.loads(index_path.read_text())
        assert index["ray_reachable"] is False
        assert index["source_error"].startswith("Ray unreachable")
        assert {m["state"] for m in index["models"]} == {"UNKNOWN"}
        assert {r.state for r in rec.store.models().values()} == {State.RUNNING}

    ray.reachable = True
    ray.calls.clear()
    first = rec.tick(snap)
    redeployed = {a.record.suffix for a in first.actions
                  if isinstance(a, act.Deploy) and a.kind is act.Kind.REDEPLOY}
    assert redeployed == {"a", "b"}
    ray.settle()
    converge(rec, ray, snap)
    assert {r.suffix: r.app_name for r in rec.store.models().values()} == names
    assert {r.state for r in rec.store.models().values()} == {State.RUNNING}
    assert ("gateway", ",".join(sorted(r.public_id for r in rec.store.models().values()))) \
        in ray.calls
    assert {m["state"] for m in json.loads(index_path.read_text())["models"]} == {"RUNNING"}
