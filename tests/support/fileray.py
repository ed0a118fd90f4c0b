"""A fake of the Ray seam that lives in one JSON file, so it outlives the process.

For the kill -9 tests and ``benchmarks/bench_crash.py``: a child process
ticks against it and is killed at a random instant; the parent then opens
the same file and sees exactly what the killed process had submitted. It
implements :class:`servesync.converge.ports.Applier`. Every call reads the
file, changes it and writes it back atomically (``state.atomicio``), so a
kill leaves the call either accepted or not, as Ray would. A submitted
application lands DEPLOYING and is RUNNING from the next ``observe()``.

The file also keeps this trial's calls (``calls``: kind, application, spec
hash), which the checker uses to find needless redeploys.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from servesync.converge.naming import GATEWAY_APP
from servesync.converge.observed import AppObservation, AppStatus, Observed
from servesync.converge.ports import ModelDeploy
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError, TransientError
from servesync.state.atomicio import atomic_write

SERVING_HASH = "file-ray-serving"


def spec_hash(spec: ModelSpec) -> str:
    blob = json.dumps(spec.serving_json(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class FileRay:
    """Serve applications by name in ``path``:
    ``{"apps": {name: {"status", "public_id", "spec_hash", "replicas"}}, "calls": [...]}``."""

    def __init__(self, path: Path, *, answer_delay_s: float = 0.0) -> None:
        self.path = path
        self.answer_delay_s = answer_delay_s  # after a deploy is accepted, before it returns

    # -- the file ---------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            data = {}
        data.setdefault("apps", {})
        data.setdefault("calls", [])
        return data

    def save(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, sort_keys=True).encode())

    def apps(self) -> dict[str, dict[str, Any]]:
        apps: dict[str, dict[str, Any]] = self.load()["apps"]
        return apps

    def calls(self) -> list[list[str]]:
        calls: list[list[str]] = self.load()["calls"]
        return calls

    def clear_calls(self) -> None:
        data = self.load()
        data["calls"] = []
        self.save(data)

    # -- the Applier protocol -----------------------------------------------------

    def observe(self) -> Observed:
        data = self.load()
        apps = data["apps"]
        observed = Observed({
            name: AppObservation(name, AppStatus(app["status"]), "",
                                 app.get("replicas", 1) if app["status"] == "RUNNING" else 0)
            for name, app in apps.items()
        })
        if any(app["status"] == "DEPLOYING" for app in apps.values()):
            for app in apps.values():
                app["status"] = "RUNNING"
            self.save(data)
        return observed

    def deploy_models(self, batch: Sequence[ModelDeploy]
                      ) -> Mapping[str, TransientError | PermanentError]:
        """The whole batch in one write, as one ``serve.run_many`` submits it."""
        data = self.load()
        for d in batch:
            digest = spec_hash(d.spec)
            data["apps"][d.app_name] = {"status": "DEPLOYING", "public_id": d.public_id,
                                        "spec_hash": digest, "replicas": d.spec.num_replicas or 1}
            data["calls"].append(["deploy", d.app_name, digest])
        self.save(data)
        time.sleep(self.answer_delay_s)
        return {}

    def deploy_gateway(self, members: Sequence[tuple[str, str]], *,
                       aliases: Sequence[tuple[str, str]] = (),
                       weights: Sequence[tuple[str, str, int]] = (),
                       lora: Sequence[tuple[str, str]] = ()) -> None:
        data = self.load()
        if members:
            data["apps"][GATEWAY_APP] = {"status": "DEPLOYING", "public_id": "",
                                         "members": sorted(p for p, _ in members)}
        else:
            data["apps"].pop(GATEWAY_APP, None)
        data["calls"].append(["gateway", GATEWAY_APP, ",".join(sorted(a for _, a in members))])
        self.save(data)

    def delete_app(self, app_name: str) -> None:
        data = self.load()
        data["apps"].pop(app_name, None)
        data["calls"].append(["delete", app_name, ""])
        self.save(data)

    def serving_hash(self) -> str:
        return SERVING_HASH

    def shutdown(self) -> None:
        pass
