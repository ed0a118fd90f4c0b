"""How long from a change on disk to the daemon's tick starting?

Runs the real daemon loop (:class:`servesync.daemon.DaemonLoop`: watchfiles,
triggers, source refresh) with a ticker that only records when it was called,
and measures, over N trials each:

* ``file write``: a plain directory source, a YAML file written;
* ``git commit``: a local git working copy, ``git commit`` run (the tick
  starts after the private checkout has fetched and checked out the commit,
  so this includes fetch + checkout).

Usage: ``.venv/bin/python benchmarks/bench_watch_latency.py [--trials 20]``.
Prints median / p95 / max in milliseconds. Writes only to a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from servesync.config import Config, SourceConfig
from servesync.daemon.loop import DaemonLoop
from servesync.daemon.sdnotify import Notifier
from servesync.desired.sources import Snapshot

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "PATH": "/usr/bin:/bin",
}


class Recorder:
    """A Ticker that notes when each tick started and at which revision."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, str | None]] = []
        self.cond = threading.Condition()

    def tick(self, snapshot: Snapshot) -> bool:
        with self.cond:
            self.ticks.append((time.perf_counter(), snapshot.revision))
            self.cond.notify_all()
        return True

    def wait(self, since: float, revision: str | None, timeout: float = 10.0) -> float:
        """When the first tick after ``since`` (at ``revision``, if given) started."""

        def found() -> float | None:
            for at, rev in self.ticks:
                if at >= since and (revision is None or rev == revision):
                    return at
            return None

        with self.cond:
            at = self.cond.wait_for(found, timeout)
        if at is None:
            raise RuntimeError(f"no tick for {revision or 'the change'} within {timeout} s")
        return at


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def measure(
    config: Config, change: Callable[[int], str | None], trials: int, settle_s: float
) -> list[float]:
    """``change(i)`` returns the revision the tick must see (None: any tick)."""
    rec = Recorder()
    loop = DaemonLoop(config, ticker_factory=lambda c: rec, notifier=Notifier(None))
    loop.start()
    try:
        rec.wait(0.0, None)
        out = []
        for i in range(trials):
            time.sleep(settle_s)  # let the previous change's events drain
            t0 = time.perf_counter()
            revision = change(i)
            out.append((rec.wait(t0, revision) - t0) * 1000)
        return out
    finally:
        loop.stop()


def bench_file(base: Path, trials: int) -> list[float]:
    tree = base / "tree"
    (tree / "users" / "alice").mkdir(parents=True)
    config = Config(source=SourceConfig(path=str(tree)), state_dir=str(base / "state1"))

    def write(i: int) -> None:
        (tree / "users" / "alice" / "m.yaml").write_text(f"n: {i}\n")
        return None

    return measure(config, write, trials, 0.3)


def bench_commit(base: Path, trials: int) -> list[float]:
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "--initial-branch=main")
    (repo / "users").mkdir()
    (repo / "users" / "m.yaml").write_text("n: -1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    config = Config(source=SourceConfig(path=str(repo)), state_dir=str(base / "state2"))

    def commit(i: int) -> str:
        (repo / "users" / "m.yaml").write_text(f"n: {i}\n")
        git(repo, "commit", "-qam", f"change {i}")
        return git(repo, "rev-parse", "HEAD")

    return measure(config, commit, trials, 0.5)


def report(name: str, ms: list[float]) -> None:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{name:<11} n={len(ms):<3} median {statistics.median(ms):7.1f} ms   "
        f"p95 {p95:7.1f} ms   max {ordered[-1]:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="servesync-bench-") as tmp:
        base = Path(tmp)
        report("file write", bench_file(base, args.trials))
        report("git commit", bench_commit(base, args.trials))
    print("(change on disk -> Ticker.tick() entered for it; watcher debounce 100 ms)")


if __name__ == "__main__":
    main()
