"""Benchmark: kill -9 of a ticking servesync at random instants, 1,000 times.

Run: ``.venv/bin/python benchmarks/bench_crash.py [--trials N] [--seed S] [--dir D]``.
Each trial changes the desired state (six models, each declared or not, 1-3
replicas), forks a child that runs the real Reconciler, Store and status
files against the file-backed fake Ray (tests/support/fileray.py), SIGKILLs
it after a random delay (its bound kept where about half the kills land
before the change has converged), checks
what was left (records load, no orphan application, no model with two),
converges in this process and checks the result (every declared model
RUNNING with its spec, nothing else, nothing running deployed again, an idle
tick after). The harness and its invariants: tests/support/crashing.py.

Prints the trials, the invariant violations (each, then their count), how
many kills landed before the change had converged, the restart's ticks to
converge and the time per trial. Exit 1 on any violation. The folder is in
/dev/shm by default (``--dir``): a kill -9 keeps written data either way.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from tests.support.crashing import CrashWorld, KillWindow, child_converge_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=9)
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    parser.add_argument("--dir", default=shm, help="where the world's folder goes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="servesync-crash-", dir=args.dir))
    try:
        world = CrashWorld(root)
        rng = random.Random(args.seed)
        window = KillWindow(child_converge_time(world, rng))
        violations, mid_change, restart_ticks, windows = 0, 0, [], []
        started = time.monotonic()
        for n in range(args.trials):
            windows.append(window.max_delay_s)
            result = world.trial(rng, max_delay_s=window.max_delay_s)
            window.update(result)
            for v in result.violations:
                print(f"trial {n}: VIOLATION {v}")
            violations += len(result.violations)
            mid_change += result.mid_change
            restart_ticks.append(result.restart_ticks)
        took = time.monotonic() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"trials: {args.trials}")
    print(f"invariant violations: {violations}")
    print(f"kills before the change converged: {mid_change} "
          f"(kill delay uniform in 0 to a bound kept near half: median "
          f"{statistics.median(windows) * 1000:.0f} ms)")
    print(f"restart ticks to converge: median {statistics.median(restart_ticks):.0f}, "
          f"max {max(restart_ticks)}")
    print(f"time per trial: {took / args.trials * 1000:.0f} ms ({took:.1f} s in all)")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
