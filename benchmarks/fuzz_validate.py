"""Fuzz benchmark: hostile desired-state trees through validation, counted and timed.

Run: ``.venv/bin/python benchmarks/fuzz_validate.py [--examples 100000] [--seed 0]``.
The trees come from tests/support/hostile.py (huge and sexagesimal numbers,
anchors, tags, deep nesting, thousands of ``---``, duplicated model_ids,
non-UTF-8 names and contents, deep folders, files outside ``users/``). Each
is written to a temporary folder and validated as the daemon's tick does.
Prints how many crashed (an exception escaped), how many hung (over
``--hang-s``), the time per tree (median, p99, max) and the slowest inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from hypothesis import HealthCheck, given, seed, settings
from tests.support.hostile import trees, write_tree

from servesync.config import Config, ServingConfig
from servesync.desired.validating import validate_tree


def describe(tree: list[tuple[bytes, bytes]]) -> str:
    return "; ".join(f"{rel!r}: {len(content):,} bytes, {content[:40]!r}..."
                     for rel, content in tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=1.0)
    args = parser.parse_args()
    times: list[tuple[float, str]] = []
    crashes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="servesync-fuzz-") as base:
        (Path(base) / "private" / "hf" / "tiny").mkdir(parents=True)
        config = Config(storage_root=str(Path(base) / "private"),
                        serving=ServingConfig(accelerator_type="cpu"))

        @seed(args.seed)
        @settings(max_examples=args.examples, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(trees)
        def one(tree: list[tuple[bytes, bytes]]) -> None:
            with tempfile.TemporaryDirectory(dir=base) as tmp:
                root = Path(tmp) / "desired"
                write_tree(root, tree)
                started = time.perf_counter()
                try:
                    validate_tree(root, config)
                except Exception:
                    crashes.append(f"{describe(tree)}\n{traceback.format_exc(limit=3)}")
                times.append((time.perf_counter() - started, describe(tree)))

        started = time.monotonic()
        one()
        took = time.monotonic() - started
    seconds = sorted(t for t, _ in times)
    hangs = [d for t, d in times if t > args.hang_s]
    print(f"trees validated: {len(times):,} in {took:.0f} s (seed {args.seed})")
    print(f"crashes (an exception escaped validation): {len(crashes)}")
    print(f"hangs (over {args.hang_s:.1f} s): {len(hangs)}")
    print(f"time per tree: median {statistics.median(seconds) * 1000:.2f} ms, "
          f"p99 {seconds[int(len(seconds) * 0.99)] * 1000:.1f} ms, "
          f"max {seconds[-1] * 1000:.1f} ms")
    print("slowest inputs:")
    for t, d in sorted(times, reverse=True)[:5]:
        print(f"  {t * 1000:8.1f} ms  {d[:160]}")
    for c in crashes[:5]:
        print(f"crash: {c}")


if __name__ == "__main__":
    main()
