"""Model A's clients while model B comes and goes: one application vs servesync.

What users do instead of servesync is one Ray Serve LLM application for all
their models, ``serve.run(build_openai_app({"llm_configs": [...]}))``, run
again with the new list whenever a model is added or removed. This runs the
same scenario both ways on one real Ray (started in-process, as the e2e
tests do) with the tiny generated model and the same engine settings (the
LLMConfig servesync builds from the same model file, the replica env of
tests/e2e):

(a) single application: ``serve.run`` with [A], then [A, B], then [A];
(b) servesync: a real :class:`~servesync.converge.reconciling.Reconciler`
    with the :class:`~servesync.rayserve.applier.RayApplier` over a folder of
    model files (ticked as the daemon does, after each tick's requeue delay):
    A's file, then B's file added, then removed.

During each change a client (the ``openai`` client) loops on A. Printed
side by side: whether A's replicas, and the ingress (single) / gateway
(servesync) replica, were restarted (Serve's actor ids before and after),
A's requests that failed or took more than 10 s, A's p50/p99 during the
changes, the time from the change until B's first completion (for servesync
also from B's application RUNNING in Serve until B answers: the route change),
and the gateway hop (p50 of a short completion through servesync's gateway
vs the single application's ingress, measured idle before the change).

Usage: ``flock /tmp/servesync-ray.lock python benchmarks/bench_isolation.py
[--requests-timeout 30] [--hop-requests 30] [--only single|servesync]
[--keep]``. Starts and ends its own Ray (address ``"local"``, a temp dir, a
free HTTP port); writes only to a temp dir (kept with ``--keep``). Takes
about 10 minutes on 2 cores (six model loads).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from openai import OpenAI

from servesync import tinymodel
from servesync.config import Config, RayConfig, ServingConfig
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.reconciling import Reconciler
from servesync.desired.sources import DirectorySource
from servesync.desired.specs import ModelSpec
from servesync.desired.validating import validate_tree
from servesync.rayserve import llmconfigs
from servesync.rayserve.applier import RayApplier
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles

REPLICA_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}  # as tests/e2e
MODEL_YAML = """\
model_id: {suffix}
model_source: $HOME/common/hf/tiny
num_replicas: 1
cpus_per_replica: 1
engine_kwargs:
  max_model_len: 256
"""
SLOW_S = 10.0  # a request to A slower than this counts as a user-visible stall
DEADLINE_S = 600.0  # for any one change to settle
SINGLE_APP = "default"  # serve.run's default application name
SINGLE_IDS = {"a": "single-a", "b": "single-b"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ask(client: OpenAI, model: str, max_tokens: int = 8) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=max_tokens, temperature=0,
    )
    return reply.choices[0].message.content or ""


def listed(client: OpenAI) -> set[str]:
    try:
        return {m.id for m in client.models.list().data}
    except Exception:  # the ingress is (re)starting
        return set()


def wait_for(what: str, ready: Callable[[], bool], *, deadline_s: float = DEADLINE_S,
             poll_s: float = 0.5) -> float:
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > deadline_s:
            raise TimeoutError(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(poll_s)
    return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Request:
    started: float
    seconds: float
    error: str | None


@dataclass
class Loop:
    """Requests to one model, back to back on a thread, each one timed."""

    client: OpenAI
    model: str
    done: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            error: str | None = None
            try:
                if not ask(self.client, self.model):
                    error = "empty answer"
            except Exception as e:  # every failure counts, whatever it is
                error = f"{type(e).__name__}: {str(e)[:120]}"
            self.done.append(Request(start, time.monotonic() - start, error))

    def stop(self) -> None:
        self._stop.set()

    def since(self, t0: float) -> list[Request]:
        return [r for r in self.done if r.started >= t0]


@contextmanager
def requests_to(client: OpenAI, model: str) -> Iterator[Loop]:
    loop = Loop(client, model)
    thread = threading.Thread(target=loop.run, name=f"requests-to-{model}", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.stop()
        thread.join(timeout=120)


class FirstAnswer:
    """Asks one model every 0.5 s on a thread until it answers; notes when."""

    def __init__(self, client: OpenAI, model: str, since: float) -> None:
        self.client, self.model, self.since = client, model, since
        self.after_s: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"first-{model}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while time.monotonic() - self.since < DEADLINE_S:
            try:
                if ask(self.client, self.model):
                    self.after_s = time.monotonic() - self.since
                    return
            except Exception:  # not there yet
                pass
            time.sleep(0.5)

    def wait(self) -> float:
        self._thread.join(timeout=DEADLINE_S)
        if self.after_s is None:
            raise TimeoutError(f"{self.model} never answered")
        return self.after_s


class FirstRunning:
    """Reads ``serve.status()`` every 0.25 s on a thread until application ``app``
    is RUNNING in Serve; notes when (servesync routes a model only after that)."""

    def __init__(self, app: str, since: float) -> None:
        self.app, self.since = app, since
        self.after_s: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"running-{app}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ray import serve

        while time.monotonic() - self.since < DEADLINE_S:
            app = serve.status().applications.get(self.app)
            if app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING":
                self.after_s = time.monotonic() - self.since
                return
            time.sleep(0.25)

    def wait(self) -> float:
        self._thread.join(timeout=DEADLINE_S)
        return float("nan") if self.after_s is None else self.after_s


def hop_p50(client: OpenAI, model: str, n: int) -> float:
    """p50 seconds of a 1-token completion, sequential, after 3 warm-ups."""
    for _ in range(3):
        ask(client, model, max_tokens=1)
    times = []
    for _ in range(n):
        start = time.monotonic()
        ask(client, model, max_tokens=1)
        times.append(time.monotonic() - start)
    return statistics.median(times)


@dataclass
class Result:
    """What one way of serving showed while B was added and removed."""

    name: str
    kept_on_add: bool = False
    kept_on_remove: bool = False
    ingress_kept_on_add: bool = False
    requests: list[Request] = field(default_factory=list)
    b_answers_s: float = float("nan")
    b_running_s: float = float("nan")  # servesync: B's own application RUNNING in Serve
    add_settled_s: float = float("nan")
    remove_settled_s: float = float("nan")
    idle_p50_s: float = float("nan")
    hop_p50_s: float = float("nan")

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if r.error]

    @property
    def slow(self) -> list[Request]:
        return [r for r in self.requests if not r.error and r.seconds > SLOW_S]

    def latency(self, q: float) -> float:
        return percentile([r.seconds for r in self.requests if not r.error], q)


# -- the bench world ----------------------------------------------------------------------

@dataclass
class Bench:
    config: Config
    applier: RayApplier
    client: OpenAI
    work: Path
    hop_requests: int

    def desired(self, name: str) -> Path:
        return self.work / name

    def write(self, root: Path, user: str, suffix: str) -> Path:
        path = root / "users" / user / f"{suffix}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(MODEL_YAML.format(suffix=suffix))
        return path

    def specs(self) -> dict[str, ModelSpec]:
        """A's and B's specs, validated from the same model files servesync reads."""
        root = self.desired("specs")
        self.write(root, "alice", "a")
        self.write(root, "bob", "b")
        state = validate_tree(root, self.config)
        if not state.ok:
            raise RuntimeError(f"the model files do not validate: {state}")
        return {spec.suffix: spec for spec in state.specs}


def serve_details() -> dict[str, Any]:
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return {} if client is None else dict(client.get_serve_details())


def deployment_actor_ids(app_name: str, deployment: str | None = None) -> set[str]:
    """Actor ids of one deployment's live replicas (``None``: of the app's
    ingress, its deployment that is no ``LLMServer:``), from Serve's details."""
    app = serve_details().get("applications", {}).get(app_name) or {}
    return {str(r["actor_id"])
            for name, dep in (app.get("deployments") or {}).items()
            if name == deployment
            or (deployment is None and not name.startswith(llmconfigs.SERVER_NAME_PREFIX))
            for r in dep.get("replicas", [])
            if r.get("actor_id") and r.get("state") != "STOPPING"}


def settle_ids(read: Callable[[], set[str]], count: int = 1) -> set[str]:
    """The replica ids once exactly ``count`` replicas are live (old ones gone)."""
    ids: set[str] = set()

    def ready() -> bool:
        nonlocal ids
        ids = read()
        return len(ids) == count

    wait_for("replicas settle", ready, deadline_s=120)
    return ids


# -- (a) one application ------------------------------------------------------------------

def run_single(bench: Bench) -> Result:
    from ray import serve
    from ray.serve.llm import build_openai_app

    specs = bench.specs()
    serving = bench.config.serving

    def llm_config(suffix: str) -> dict[str, Any]:
        spec = specs[suffix]
        kwargs = llmconfigs.llm_config_kwargs(spec, public_id=SINGLE_IDS[suffix],
                                              serving=serving)
        kwargs["deployment_config"].update(llmconfigs.scaling_options(spec))
        return kwargs

    def run(*suffixes: str) -> None:
        serve.run(build_openai_app({"llm_configs": [llm_config(s) for s in suffixes]}))

    out = Result("single application")
    a_id = SINGLE_IDS["a"]
    a_deployment = llmconfigs.server_deployment_name(a_id)

    def a_ids() -> set[str]:
        return deployment_actor_ids(SINGLE_APP, a_deployment)

    log("single: serve.run([A])")
    start = time.monotonic()
    run("a")
    wait_for("A answers", lambda: bool(ask(bench.client, a_id)))
    log(f"single: A answers after {time.monotonic() - start:.1f} s")
    before = settle_ids(a_ids)
    ingress_before = deployment_actor_ids(SINGLE_APP)
    out.hop_p50_s = hop_p50(bench.client, a_id, bench.hop_requests)
    with requests_to(bench.client, a_id) as loop:
        time.sleep(3.0)
        out.idle_p50_s = statistics.median(r.seconds for r in loop.done) if loop.done else 0.0
        t0 = time.monotonic()
        log("single: serve.run([A, B])")
        first_b = FirstAnswer(bench.client, SINGLE_IDS["b"], t0)
        run("a", "b")
        out.add_settled_s = time.monotonic() - t0
        out.b_answers_s = first_b.wait()
        log(f"single: B added, settled {out.add_settled_s:.1f} s, answers {out.b_answers_s:.1f} s")
        after_add = settle_ids(a_ids)
        out.ingress_kept_on_add = ingress_before <= deployment_actor_ids(SINGLE_APP)
        time.sleep(2.0)
        t1 = time.monotonic()
        log("single: serve.run([A])")
        run("a")
        wait_for("B gone", lambda: SINGLE_IDS["b"] not in listed(bench.client))
        out.remove_settled_s = time.monotonic() - t1
        log(f"single: B removed, settled {out.remove_settled_s:.1f} s")
        after_remove = settle_ids(a_ids)
        time.sleep(2.0)
    out.requests = loop.since(t0)
    out.kept_on_add = after_add == before
    out.kept_on_remove = after_remove == after_add
    log(f"single: A replicas {sorted(before)} -> {sorted(after_add)} -> {sorted(after_remove)}")
    serve.delete(SINGLE_APP)  # blocks until gone: (b) starts on an empty Serve
    return out


# -- (b) servesync -------------------------------------------------------------------------

def run_servesync(bench: Bench) -> Result:
    base = bench.work / "servesync"
    config = replace(bench.config, state_dir=str(base / "state"),
                     status_dir=str(base / "status"))
    Path(config.state_dir).mkdir(parents=True)
    Path(config.status_dir).mkdir(parents=True)
    root = base / "desired"
    (root / "users").mkdir(parents=True)
    source = DirectorySource(root)
    store = Store(Path(config.state_dir))
    reconciler = Reconciler(config, store=store, applier=bench.applier,
                            publisher=StatusFiles(Path(config.status_dir), config.serving))

    def public_id(suffix: str) -> str | None:
        for rec in store.models().values():
            if rec.suffix == suffix:
                return rec.public_id
        return None

    def app_name(suffix: str) -> str:
        (name,) = [r.app_name for r in store.models().values() if r.suffix == suffix]
        return name

    def converge(on_tick: Callable[[], None] = lambda: None) -> None:
        """Tick as the daemon does (again after each tick's requeue) until settled."""
        start = time.monotonic()
        while True:
            result = reconciler.tick(source.refresh())
            on_tick()
            if result.settled:
                return
            if time.monotonic() - start > DEADLINE_S:
                raise TimeoutError(f"servesync did not settle: {result}")
            time.sleep(result.requeue_after_s or 1.0)

    out = Result("servesync")
    try:
        log("servesync: A's file")
        start = time.monotonic()
        bench.write(root, "alice", "a")
        converge()
        a_id = public_id("a")
        assert a_id is not None
        wait_for("A answers", lambda: bool(ask(bench.client, a_id)))
        log(f"servesync: A answers after {time.monotonic() - start:.1f} s")
        a_app = app_name("a")

        def a_ids() -> set[str]:
            return bench.applier.replica_actor_ids(a_app)

        before = settle_ids(a_ids)
        gateway_before = bench.applier.replica_actor_ids(GATEWAY_APP)
        out.hop_p50_s = hop_p50(bench.client, a_id, bench.hop_requests)
        with requests_to(bench.client, a_id) as loop:
            time.sleep(3.0)
            out.idle_p50_s = statistics.median(r.seconds for r in loop.done) if loop.done else 0.0
            t0 = time.monotonic()
            log("servesync: B's file added")
            b_file = bench.write(root, "bob", "b")
            first_b: list[FirstAnswer] = []
            b_running: list[FirstRunning] = []

            def probe_b() -> None:
                b_id = public_id("b")
                if not first_b and b_id is not None:
                    first_b.append(FirstAnswer(bench.client, b_id, t0))
                    b_running.append(FirstRunning(app_name("b"), t0))

            converge(probe_b)
            out.add_settled_s = time.monotonic() - t0
            out.b_answers_s = first_b[0].wait()
            out.b_running_s = b_running[0].wait()
            log(f"servesync: B added, settled {out.add_settled_s:.1f} s, "
                f"answers {out.b_answers_s:.1f} s")
            after_add = settle_ids(a_ids)
            # Every gateway replica (serving.gateway_replicas, 2) kept: the
            # route change is a user_config update, applied in place.
            out.ingress_kept_on_add = gateway_before <= bench.applier.replica_actor_ids(
                GATEWAY_APP)
            time.sleep(2.0)
            t1 = time.monotonic()
            log("servesync: B's file removed")
            b_id = first_b[0].model
            b_file.unlink()
            converge()
            wait_for("B gone", lambda: b_id not in listed(bench.client))
            out.remove_settled_s = time.monotonic() - t1
            log(f"servesync: B removed, settled {out.remove_settled_s:.1f} s")
            after_remove = settle_ids(a_ids)
            time.sleep(2.0)
        out.requests = loop.since(t0)
        out.kept_on_add = after_add == before
        out.kept_on_remove = after_remove == after_add
        log(f"servesync: A replicas {sorted(before)} -> {sorted(after_add)} -> "
            f"{sorted(after_remove)}")
    finally:
        store.close()
    return out


# -- report -------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(results: list[Result]) -> str:
    def ms(s: float) -> str:
        return "n/a" if s != s else f"{s * 1000:.0f} ms"

    def sec(s: float) -> str:
        return "n/a" if s != s else f"{s:.1f} s"

    def kept(flag: bool) -> str:
        return "no (same actor)" if flag else "**yes** (new actor)"

    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("A's replica restarted when B is added", lambda r: kept(r.kept_on_add)),
        ("A's replica restarted when B is removed", lambda r: kept(r.kept_on_remove)),
        ("ingress (single) / gateway (servesync) replica restarted when B is added",
         lambda r: kept(r.ingress_kept_on_add)),
        ("requests to A during the changes", lambda r: str(len(r.requests))),
        ("… failed", lambda r: str(len(r.failed))),
        (f"… answered, but slower than {SLOW_S:.0f} s", lambda r: str(len(r.slow))),
        ("A's p50 / p99 during the changes",
         lambda r: f"{ms(r.latency(0.5))} / {ms(r.latency(0.99))}"),
        ("A's p50 before the change (same loop)", lambda r: ms(r.idle_p50_s)),
        ("max request to A", lambda r: ms(max((x.seconds for x in r.requests), default=0.0))),
        ("change → B's first completion", lambda r: sec(r.b_answers_s)),
        ("… of which B's application RUNNING → B answers (servesync: the routing)",
         lambda r: sec(r.b_answers_s - r.b_running_s)),
        ("add B settled (serve.run returned / tick settled)", lambda r: sec(r.add_settled_s)),
        ("remove B settled (B gone from /v1/models)", lambda r: sec(r.remove_settled_s)),
        ("1-token completion p50, idle (the hop)", lambda r: ms(r.hop_p50_s)),
    ]
    lines = ["| | " + " | ".join(r.name for r in results) + " |",
             "|---|" + "---|" * len(results)]
    lines += [f"| {label} | " + " | ".join(cell(r) for r in results) + " |"
              for label, cell in rows]
    by_name = {r.name: r for r in results}
    if len(by_name) == 2:
        single, ours = by_name["single application"], by_name["servesync"]
        lines.append(f"| the hop, servesync's p50 / single's p50 | 1 | "
                     f"{ours.hop_p50_s / single.hop_p50_s:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests-timeout", type=float, default=30.0,
                        help="the openai client's timeout per request, s (default 30)")
    parser.add_argument("--hop-requests", type=int, default=30,
                        help="1-token completions timed for the hop (default 30)")
    parser.add_argument("--only", choices=("single", "servesync"),
                        help="run one side only (to debug it)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (model, servesync's state and status)")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    work = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    storage = work / "private"
    start = time.monotonic()
    tinymodel.generate(storage / "hf" / "tiny")
    log(f"tiny model generated in {time.monotonic() - start:.1f} s")
    config = Config(
        storage_root=str(storage),
        ray=RayConfig(address="local", num_cpus=16, namespace="servesync-bench"),
        serving=ServingConfig(accelerator_type="cpu", http_host="127.0.0.1",
                              http_port=free_port(), replica_env=dict(REPLICA_ENV)),
    )
    applier = RayApplier(config)
    client = OpenAI(base_url=config.serving.base_url, api_key="x",
                    timeout=args.requests_timeout, max_retries=0)
    bench = Bench(config, applier, client, work, args.hop_requests)
    results: list[Result] = []
    try:
        start = time.monotonic()
        applier.connect()
        log(f"Ray + Serve started in {time.monotonic() - start:.1f} s")
        if args.only in (None, "single"):
            results.append(run_single(bench))
        if args.only in (None, "servesync"):
            results.append(run_servesync(bench))
    finally:
        applier.shutdown()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for result in results:
        for request in result.failed[:5]:
            log(f"{result.name}: failed after {request.seconds:.1f} s: {request.error}")
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
