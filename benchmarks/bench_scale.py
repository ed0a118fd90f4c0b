"""Benchmark: ticks at cluster scale, with the fake applier (tests/support/fakeray.py).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--quick] [--repeat R] [--quotas]``.
For N = 100, 1,000 and 5,000 models (``--quick``: 100 and 1,000), each in
its own process (so peak RSS is that N's), it writes a desired tree of N
files in 50 user folders, each model's ``model_source`` a real folder under
the storage root, and prints:

* first tick: every model admitted and submitted (a fresh state and status
  dir and cold caches each run);
* idle tick: the converged tick, nothing changed (measured once the files
  are older than loading's racy window, 2 s: younger ones are read again
  every tick, as git does for racily clean files);
* one-file-change tick: one file's ``num_replicas`` changed (a scale deploy),
  the tick that carries it out;
* each tick's wall time and its CPU time (``process_time``: the tick's own
  cost, which a machine shared with other work inflates less);
* bytes written per tick (``wchar`` of /proc/self/io: every write() of the
  process, state file and status files together) and peak RSS.

``--quotas``: ``serving.quotas`` gives every user a quota (``default``:
models, replicas and GPUs, with room for every model), so each tick also runs
the quota pass (README, Quotas).

Times are the best of R runs. Real Ray is not involved: this measures what
servesync itself costs per tick (validate, plan, record, publish).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from tests.support.clock import FakeClock
from tests.support.fakeray import SettlingRay, make_reconciler

from servesync.config import Config, Quotas, ServingConfig
from servesync.converge.reconciling import Reconciler
from servesync.desired import model_dirs
from servesync.desired.loading import RACY_NS
from servesync.desired.sources import Snapshot

USERS = 50
TEMPLATE = """\
model_id: model-{i}
model_source: $HOME/common/hf/org-{i}
cpus_per_replica: 1
num_replicas: {replicas}
engine_kwargs:
  max_model_len: 2048
  seed: {i}
env:
  VLLM_LOGGING_LEVEL: INFO
"""


def model_file(root: Path, i: int) -> Path:
    return root / "users" / f"user{i % USERS:02d}" / f"model-{i}.yaml"


def make_world(base: Path, n: int) -> tuple[Path, Path]:
    """The desired tree and the storage root (one model folder per model)."""
    tree, storage = base / "desired", base / "private"
    for i in range(n):
        folder = storage / "hf" / f"org-{i}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        path = model_file(tree, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE.format(i=i, replicas=1), encoding="utf-8")
    return tree, storage


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def measured(fn: Callable[[], object]) -> tuple[float, int, float]:
    """Wall time, bytes written, CPU time (this process: what the tick costs
    itself, even on a machine shared with other work)."""
    before, start, cpu = written_bytes(), time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, written_bytes() - before, time.process_time() - cpu


def settle(rec: Reconciler, snap: Snapshot, clock: FakeClock) -> None:
    for _ in range(20):
        clock.advance(5)  # past Ray's settle delay
        result = rec.tick(snap)
        if result.converged and not result.actions:
            return
    raise RuntimeError("did not converge in 20 ticks")


def quotas_for(n: int, on: bool) -> Quotas:
    """No quota, or one for every user (``default``) that every model fits in."""
    if not on:
        return Quotas()
    per_user = n // USERS + 1
    return Quotas.from_mapping({"default": {"models": per_user, "replicas": 3 * per_user,
                                            "gpus": 0}})


def one(n: int, repeat: int, with_quotas: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = Path(tmp)
        tree, storage = make_world(base, n)
        snap = Snapshot(root=tree, revision="r1", error=None, watch_paths=())
        first: list[tuple[float, int, float]] = []
        rec: Reconciler | None = None
        for run in range(repeat if n <= 1000 else 1):
            config = Config(state_dir=str(base / f"state{run}"),
                            status_dir=str(base / f"status{run}"), storage_root=str(storage),
                            serving=ServingConfig(accelerator_type="cpu",
                                                  quotas=quotas_for(n, with_quotas)))
            model_dirs.clear_cache()
            clock = FakeClock()
            rec = make_reconciler(config, SettlingRay(), clock)
            first.append(measured(lambda r=rec: r.tick(snap)))  # type: ignore[misc]
        assert rec is not None
        settle(rec, snap, clock)
        time.sleep(RACY_NS / 1e9)  # the tree's files are no longer "just written"
        rec.tick(snap)  # the tick that keeps their texts
        idle = [measured(lambda: rec.tick(snap)) for _ in range(max(repeat, 3))]
        change: list[tuple[float, int, float]] = []
        for run in range(repeat):
            model_file(tree, 0).write_text(TEMPLATE.format(i=0, replicas=2 + run % 2))
            change.append(measured(lambda: rec.tick(snap)))
            settle(rec, snap, clock)
        store = rec.store
        assert len(store.models()) == n
        return {
            "n": n,
            "first_s": min(t for t, _, _ in first), "first_bytes": first[0][1],
            "idle_s": min(t for t, _, _ in idle), "idle_bytes": max(b for _, b, _ in idle),
            "idle_cpu_s": min(c for _, _, c in idle),
            "change_s": min(t for t, _, _ in change),
            "change_bytes": min(b for _, b, _ in change),
            "change_cpu_s": min(c for _, _, c in change),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quotas", action="store_true",
                        help="give every user a quota (serving.quotas), so the quota pass runs")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one N
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.repeat, args.quotas)))
        return
    sizes = (100, 1000) if args.quick else (100, 1000, 5000)
    print(f"{'models':>7} {'first tick':>11} {'idle tick':>10} {'(CPU)':>8} {'1-file tick':>12} "
          f"{'(CPU)':>8} {'first writes':>13} {'idle writes':>12} {'1-file writes':>14} "
          f"{'peak RSS':>9}")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n),
                              "--repeat", str(args.repeat),
                              *(["--quotas"] if args.quotas else [])],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{n:>7,} {r['first_s']:>9.3f} s {r['idle_s'] * 1000:>7.1f} ms "
              f"{r['idle_cpu_s'] * 1000:>5.1f} ms {r['change_s'] * 1000:>9.1f} ms "
              f"{r['change_cpu_s'] * 1000:>5.1f} ms {r['first_bytes'] / 1e6:>10.2f} MB "
              f"{r['idle_bytes'] / 1e3:>9.1f} kB {r['change_bytes'] / 1e3:>11.1f} kB "
              f"{r['rss_mib']:>5.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
