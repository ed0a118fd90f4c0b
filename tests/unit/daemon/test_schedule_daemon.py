"""The real daemon loop (``run_daemon``: watcher, requeue, ticks on the real
clock) with the real Reconciler, Store and status files, against the
file-backed fake of Ray: a model with ``schedule: {stop_after: 3s}`` runs,
then is stopped by the daemon itself (no commit, no interval tick: the
requeue it asked for), its application deleted, and its status file says why."""

from __future__ import annotations

import json
import threading
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

from servesync.config import Config, ServingConfig, SourceConfig
from servesync.converge.reconciling import utcnow
from servesync.daemon.loop import run_daemon
from servesync.daemon.sdnotify import Notifier
from tests.support.fakeray import make_reconciler
from tests.support.fileray import FileRay
from tests.support.waiting import wait_for

WITHIN_S = 60.0  # generous: a loaded 2-core CI machine


def test_a_real_daemon_stops_a_model_after_stop_after(tmp_path: Path,
                                                      storage_root: Path) -> None:
    tree = tmp_path / "desired"
    (tree / "users" / "alice").mkdir(parents=True)
    (tree / "users" / "alice" / "a.yaml").write_text(
        "model_id: a\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
        "schedule:\n  stop_after: 3s\n")
    config = Config(source=SourceConfig(path=str(tree)), state_dir=str(tmp_path / "state"),
                    status_dir=str(tmp_path / "status"), storage_root=str(storage_root),
                    serving=ServingConfig(accelerator_type="cpu"),
                    tick_interval_s=3600.0)  # no interval tick: only the requeue can stop it
    ray = FileRay(tmp_path / "ray.json")
    stop, rc = threading.Event(), []
    thread = threading.Thread(target=lambda: rc.append(run_daemon(
        config, ticker_factory=lambda c: nullcontext(make_reconciler(c, ray, utcnow)),
        notifier=Notifier(None), stop_event=stop)), daemon=True)
    thread.start()
    models = tmp_path / "status" / "models"

    def shown() -> dict[str, object]:
        files = list(models.glob("*.json")) if models.is_dir() else []
        return json.loads(files[0].read_text()) if files else {}

    try:
        wait_for("the model RUNNING", lambda: shown().get("state") == "RUNNING",
                 deadline_s=WITHIN_S, poll_s=0.05, detail=shown)
        running = shown()
        running_at = time.monotonic()
        next_stop = datetime.fromisoformat(str(running["next_stop_at"]))
        assert 0 < (next_stop - utcnow()).total_seconds() <= 3
        assert running["stopped_reason"] is None
        app = str(running["model_key"])
        assert app in ray.apps()
        wait_for("the model STOPPED by its schedule", lambda: shown().get("state") == "STOPPED",
                 deadline_s=WITHIN_S, poll_s=0.05, detail=shown)
        assert time.monotonic() - running_at >= 2  # not before its 3 s (stamps are to the s)
        stopped = shown()
        assert stopped["stopped_reason"] == "schedule" and stopped["next_start_at"] is None
        assert app not in ray.apps()
        assert ["delete", app] in [c[:2] for c in ray.calls()]
        kinds = [(e["kind"], e["message"]) for e in stopped["events"]]  # type: ignore[attr-defined]
        assert any(k == "STOP_REQUESTED" and m.startswith("schedule: stop_after 3s elapsed")
                   for k, m in kinds)
    finally:
        stop.set()
        thread.join(WITHIN_S)
    assert rc == [0]
