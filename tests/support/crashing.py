"""kill -9 trials: a real child process ticks, is killed at a random instant,
and the parent checks what it left behind, then converges and checks again.

Shared by ``tests/unit/converge/test_crash.py`` (>= 200 trials) and
``benchmarks/bench_crash.py`` (>= 1,000). One :class:`CrashWorld` is a state
dir, a status dir, a desired tree and a :class:`~tests.support.fileray.FileRay`
file; trials run one after the other on the same world, so each starts from
whatever the last left (and from a changed desired state: models added,
removed, scaled, and some turned into weighted versions or back). The
child is a ``fork`` of this process running the real
:class:`~servesync.converge.reconciling.Reconciler` with a real
:class:`~servesync.state.store.Store` and real status files, ticking
forever; ``SIGKILL`` ends it after a random delay.

Invariants, after the kill (before anything repairs):

* the records load;
* no orphan: every Serve application but the gateway has a record naming it;
* no model (nor version of one) has two applications, and no two records
  share one;

after the parent's converging ticks:

* every declared model is recorded RUNNING with the declared replicas, and
  its application is RUNNING with them; nothing undeclared is recorded or
  deployed; the gateway serves exactly the declared models;
* a model that was recorded RUNNING with its application RUNNING at the same
  spec when the child died is not deployed again (restart adopts);
* one more tick does nothing.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from servesync.config import Config, ServingConfig
from servesync.converge.naming import GATEWAY_APP
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.support.clock import T0
from tests.support.fileray import FileRay

POOL = tuple(f"m{i}" for i in range(6))
SPEED = 1000.0  # virtual seconds per real second: Ray's 2 s settle delay is 2 ms
MODEL = """\
model_id: {suffix}
model_source: $HOME/common/hf/tiny
num_replicas: {replicas}
cpus_per_replica: 1
"""
VERSIONED = frozenset({"m4", "m5"})  # these may be declared as two weighted versions
VERSIONS = """\
model_id: {suffix}
cpus_per_replica: 1
versions:
  - name: a
    model_source: $HOME/common/hf/tiny
    weight: {weight}
    num_replicas: {a}
  - name: b
    model_source: $HOME/common/hf/tiny
    weight: {rest}
    num_replicas: {b}
"""


def scaled_clock() -> Callable[[], datetime]:
    """Virtual time, SPEED times faster than CLOCK_MONOTONIC, which parent and
    child share, so it never runs backwards across a fork or a kill."""
    return lambda: T0 + timedelta(seconds=time.monotonic() * SPEED)


@dataclass
class TrialResult:
    violations: list[str] = field(default_factory=list)
    mid_change: bool = False  # the child died before the state had converged
    restart_ticks: int = 0  # parent ticks to converge again


class CrashWorld:
    """One state dir, status dir, desired tree and FileRay, trial after trial."""

    def __init__(self, root: Path) -> None:
        self.root = root
        storage = root / "private"
        (storage / "hf" / "tiny").mkdir(parents=True, exist_ok=True)
        self.desired_root = root / "desired"
        self.user_dir = self.desired_root / "users" / "alice"
        self.user_dir.mkdir(parents=True, exist_ok=True)
        self.config = Config(
            state_dir=str(root / "state"), status_dir=str(root / "status"),
            storage_root=str(storage),
            serving=ServingConfig(accelerator_type="cpu", deploy_timeout_s=1e9))
        self.ray = FileRay(root / "ray.json")
        self.snapshot = Snapshot(root=self.desired_root, revision=None, error=None,
                                 watch_paths=())
        self.declared: dict[str, int] = {}
        self.clock = scaled_clock()
        self._adopted: dict[str, str] = {}  # app -> spec hash, RUNNING when the child died

    def reconciler(self) -> Reconciler:
        return Reconciler(self.config, store=Store(Path(self.config.state_dir)),
                          applier=self.ray, clock=self.clock,
                          publisher=StatusFiles(Path(self.config.status_dir),
                                                self.config.serving))

    # -- the desired state ----------------------------------------------------

    def change(self, rng: random.Random) -> None:
        """A new desired state: every pool model declared with p=0.6, 1-3 replicas;
        one of :data:`VERSIONED`, with p=0.5, as versions a and b (each its
        own record, suffix ``<model_id>@<version>``)."""
        declared: dict[str, int] = {}
        for suffix in POOL:
            path = self.user_dir / f"{suffix}.yaml"
            if rng.random() >= 0.6:
                path.unlink(missing_ok=True)
            elif suffix in VERSIONED and rng.random() < 0.5:
                a, b, weight = rng.randint(1, 3), rng.randint(1, 3), rng.randint(0, 100)
                path.write_text(VERSIONS.format(suffix=suffix, a=a, b=b, weight=weight,
                                                rest=100 - weight))
                declared[f"{suffix}@a"], declared[f"{suffix}@b"] = a, b
            else:
                declared[suffix] = rng.randint(1, 3)
                path.write_text(MODEL.format(suffix=suffix, replicas=declared[suffix]))
        self.declared = declared

    # -- one trial ------------------------------------------------------------

    def trial(self, rng: random.Random, *, max_delay_s: float) -> TrialResult:
        self.change(rng)
        self.ray.clear_calls()
        pid = self._spawn()
        time.sleep(rng.uniform(0.0, max_delay_s))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        result = TrialResult()
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            result.violations.append(f"child ended on its own: status {status}")
        self.check_after_kill(result)
        if not result.violations:
            self.converge(result)
        return result

    def _spawn(self) -> int:
        pid = os.fork()
        if pid == 0:  # the child: tick forever, until killed
            code = 0
            try:
                rec = self.reconciler()
                while True:
                    rec.tick(self.snapshot)
            except BaseException:  # reported through the exit code
                code = 3
            finally:
                os._exit(code)
        return pid

    def check_after_kill(self, result: TrialResult) -> None:
        try:
            records = Store(Path(self.config.state_dir)).models()
        except Exception as e:  # a violation, reported
            result.violations.append(f"records do not load: {type(e).__name__}: {e}")
            return
        apps = self.ray.apps()
        named = {r.app_name for r in records.values()}
        for app in sorted(set(apps) - named - {GATEWAY_APP}):
            result.violations.append(f"orphan application {app}")
        owners: dict[str, str] = {}
        for app, info in apps.items():
            if app == GATEWAY_APP:
                continue
            version = app.partition(".")[2]  # a version's application: <stem>.<version>
            other = owners.setdefault(f"{info['public_id']}@{version}", app)
            if other != app:
                result.violations.append(f"{info['public_id']}@{version} has two applications")
        if len(named) != len(records):
            result.violations.append("two records share an application")
        self._adopted = {r.app_name: apps[r.app_name]["spec_hash"]
                         for r in records.values()
                         if r.state is State.RUNNING and r.app_name in apps
                         and apps[r.app_name]["status"] == "RUNNING"}

    def converge(self, result: TrialResult, *, max_ticks: int = 60) -> None:
        self.ray.clear_calls()
        rec = self.reconciler()
        for n in range(1, max_ticks + 1):
            tick = rec.tick(self.snapshot)
            if n == 1 and tick.actions:
                result.mid_change = True
            if tick.converged:
                result.restart_ticks = n
                break
            time.sleep(0.003)  # a few virtual seconds: settle windows pass
        else:
            result.violations.append(f"not converged after {max_ticks} ticks")
            return
        for kind, app, digest in self.ray.calls():
            if kind == "deploy" and self._adopted.get(app) == digest:
                result.violations.append(f"{app} deployed again with an unchanged spec")
        self.check_converged(result, rec)

    def check_converged(self, result: TrialResult, rec: Reconciler) -> None:
        records = {r.suffix: r for r in rec.store.models().values()}
        apps = self.ray.apps()
        if set(records) != set(self.declared):
            result.violations.append(
                f"recorded {sorted(records)} but declared {sorted(self.declared)}")
        for suffix, replicas in self.declared.items():
            r = records.get(suffix)
            if r is None:
                continue
            app = apps.get(r.app_name, {})
            if r.state is not State.RUNNING or r.spec.get("num_replicas") != replicas:
                result.violations.append(f"{suffix}: {r.state} {r.spec.get('num_replicas')}")
            if app.get("status") != "RUNNING" or app.get("replicas") != replicas:
                result.violations.append(f"{suffix}: application {app}")
        wanted = {r.app_name for r in records.values()}
        if self.declared:
            wanted.add(GATEWAY_APP)
            members = apps.get(GATEWAY_APP, {}).get("members")
            if members != sorted(r.public_id for r in records.values()):
                result.violations.append(f"gateway members {members}")
        if set(apps) != wanted:
            result.violations.append(f"applications {sorted(apps)} != {sorted(wanted)}")
        if rec.tick(self.snapshot).actions:
            result.violations.append("a tick after convergence still acts")


class KillWindow:
    """The kill delay's upper bound, kept where about half the kills land before
    the child has converged: each kill after convergence shortens it, each
    before lengthens it, so a loaded machine (a slower child) moves it too."""

    def __init__(self, start_s: float) -> None:
        self.max_delay_s = start_s

    def update(self, result: TrialResult) -> None:
        self.max_delay_s *= 1.1 if result.mid_change else 0.9


def child_converge_time(world: CrashWorld, rng: random.Random, trials: int = 3) -> float:
    """How long an unkilled child takes to converge a fresh change (seconds):
    the kill delays are drawn from about that window."""
    took = []
    for _ in range(trials):
        world.change(rng)
        started = time.monotonic()
        rec = world.reconciler()
        while not rec.tick(world.snapshot).converged:
            time.sleep(0.003)
        took.append(time.monotonic() - started)
    return max(took)
