"""Benchmark: the time one hostile model file costs a tick, per kind of file.

Run: ``.venv/bin/python benchmarks/bench_hostile_files.py [--repeat R] [--only KIND]``.
Each kind is one file of at most 256 KiB (the size limit) under
``users/alice/`` of a temporary tree, built to be as expensive as its kind can
be: a flood of documents, nodes, keys, duplicate model_ids, huge numbers, a
YAML error followed by ``---`` lines, ... For each it prints min / median / max
of R runs of reading and validating that one file (``load_file`` +
``validate_loaded``, what a tick does per file), its size and what came out.
Every file must stay near 100 ms or less (the daemon's watchdog is 60 s for a
whole tick, and every tenant's files share it). Then the same for a few
hostile tree shapes (``validate_tree``): deep folders, undecodable names,
duplicates across files, several slow-to-parse files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from tests.support.hostile import remove_tree

from servesync.config import Config, ServingConfig
from servesync.desired import loading
from servesync.desired.validating import validate_loaded, validate_tree

LIMIT = loading.MAX_FILE_BYTES
REL = "users/alice/hostile.yaml"
HEAD = "model_id: m\nmodel_source: $HOME/common/hf/m\n"


def fill(unit: Callable[[int], str], head: str = "", tail: str = "") -> str:
    """``head`` + ``unit(0)`` + ``unit(1)`` + ... + ``tail``, as much as fits the limit."""
    parts, size, i = [head], len(head.encode()) + len(tail.encode()), 0
    while True:
        piece = unit(i)
        if size + len(piece.encode()) > LIMIT:
            break
        parts.append(piece)
        size += len(piece.encode())
        i += 1
    return "".join(parts) + tail


def digits(head: str, lead: str, rest: str, tail: str = "\n") -> str:
    """``head`` + ``lead`` + as many ``rest`` as fit + ``tail``."""
    room = LIMIT - len(head) - len(lead) - len(tail)
    return head + lead + rest * (room // len(rest)) + tail


KINDS: dict[str, str] = {
    "valid: 100 model documents": fill(
        lambda i: f"---\nmodel_id: m{i}\nmodel_source: $HOME/common/hf/m{i}\nnum_replicas: 2\n"
                  "engine_kwargs:\n  max_model_len: 4096\n  dtype: half\n"
                  "env:\n  VLLM_LOGGING_LEVEL: INFO\n" if i < 100 else "# padding\n"),
    "integer of 262,000 digits": digits(HEAD + "gpus_per_replica: ", "1", "0"),
    "integer of 310 digits": HEAD + "gpus_per_replica: 1" + "0" * 309 + "\n",
    "sexagesimal integer 1:00:00:...": digits(HEAD + "num_replicas: ", "1", ":00"),
    "float of 262,000 digits": digits(HEAD + "cpus_per_replica: ", "1", "0", ".5\n"),
    "hex integer 0x...": digits(HEAD + "seed: ", "0x1", "f"),
    "a: [ then 65,000 '---' lines": fill(lambda i: "---\n", head="a: [\n"),
    "65,000 empty documents": fill(lambda i: "---\n"),
    "documents with the same model_id": fill(
        lambda i: "---\nmodel_id: m\nmodel_source: org/n\n"),
    "one key per document": fill(lambda i: f"---\nk{i}: 1\n"),
    "unique top-level keys": fill(lambda i: f"k{i}: 1\n", head=HEAD),
    "unknown keys close to real ones": fill(lambda i: f"model_sourc{i}: 1\n", head=HEAD),
    "duplicate keys": fill(lambda i: "model_id: m\n"),
    "engine_kwargs keys not allowed": fill(lambda i: f"  Max-Model-Len{i}: 1\n",
                                           head=HEAD + "engine_kwargs:\n"),
    "env names not allowed": fill(lambda i: f"  VLLM_X{i}: '1'\n", head=HEAD + "env:\n"),
    "env values of the wrong type": fill(lambda i: f"  VLLM_LOGGING_LEVEL{i}: 1\n",
                                         head=HEAD + "env:\n"),
    "flow list of 130,000 items": fill(lambda i: "1,", head=HEAD + "x: [", tail="1]\n"),
    "block list of 65,000 items": fill(lambda i: "- 1\n", head=HEAD + "x:\n"),
    "nesting [[[[... 128,000 deep": fill(lambda i: "[", head="a: "),
    "nesting 64 deep, long keys, wide": fill(
        lambda i: f"{' ' * 64}k{i}: 1\n",
        head="".join(f"{' ' * d}{'k' * 255}{d % 10}:\n" for d in range(32))),
    "long mapping keys": fill(lambda i: f"{'k' * 250}{i:06d}: 1\n", head=HEAD),
    "one 256 KiB string": digits("model_id: m\nmodel_source: '", "$HOME/", "a", "'\n"),
    "model_source of 2-character path parts": digits("model_id: m\nmodel_source: ", "$HOME/",
                                                     "a/"),
    "100 model_sources of 63 path parts": fill(
        lambda i: f"---\nmodel_id: m{i}\nmodel_source: $HOME/{'a/' * 61}a\n"
                  if i < 100 else "# padding\n"),
    "anchors and aliases": fill(lambda i: f"k{i}: &a{i} [*a{max(0, i - 1)}]\n", head=HEAD),
    "tags !!python/object everywhere": fill(lambda i: f"k{i}: !!python/object:os.system x\n"),
    "timestamps everywhere": fill(lambda i: f"k{i}: 2024-01-01\n"),
    "non-string keys": fill(lambda i: f"{i}: x\n"),
}


def deep_folders(root: Path) -> None:
    path = root / "users" / "alice"
    for _ in range(1000):
        path = path / "d"
        path.mkdir()
    (path / "m.yaml").write_text(HEAD)


def undecodable_names(root: Path) -> None:
    folder = os.fsencode(root / "users" / "alice")
    for i in range(100):
        with open(folder + f"/m{i}".encode() + b"\xff.yaml", "wb") as f:
            f.write(HEAD.encode())


def many_duplicates(root: Path) -> None:
    for i in range(1000):
        (root / "users" / "alice" / f"m{i:04d}.yaml").write_text(HEAD)


def syntax_error_files(root: Path) -> None:
    for i in range(8):
        (root / "users" / "alice" / f"h{i}.yaml").write_text("a: [\n" + "---\n" * 65531)


TREES: dict[str, Callable[[Path], None]] = {
    "1,000 nested folders": deep_folders,
    "100 file names that are not UTF-8": undecodable_names,
    "1,000 files with the same model_id": many_duplicates,
    "8 files of a: [ then 65,531 '---'": syntax_error_files,
}


def run_once(root: Path, cfg: Config) -> tuple[float, str]:
    start = time.perf_counter()
    loaded = loading.load_file(root, REL)
    state = validate_loaded([loaded], cfg)
    took = time.perf_counter() - start
    issues = state.issues()
    docs = sum(len(f.documents) for f in state.files)
    first = issues[0].render()[len(REL) + 1:] if issues else ""
    return took, (f"{docs} docs, {len(state.specs)} valid, {len(issues)} issues shown"
                  + (f"; {first[:90]}" if first else ""))


def row(kind: str, size: str, times: list[float], outcome: str) -> None:
    times = sorted(times)
    print(f"{kind:42} {size:>5} {times[0] * 1000:6.1f}ms {statistics.median(times) * 1000:6.1f}ms "
          f"{times[-1] * 1000:6.1f}ms  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", metavar="KIND", help="the kinds whose name contains this")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        root = tmp / "tree"
        (root / "users" / "alice").mkdir(parents=True)
        cfg = Config(storage_root=str(tmp / "private"),
                     serving=ServingConfig(accelerator_type="H20"))
        worst = ("", 0.0)
        print(f"one file under users/alice/ (load_file + validate_loaded), {args.repeat} runs")
        print(f"{'kind':42} {'KiB':>5} {'min':>8} {'median':>8} {'max':>8}  outcome")
        for kind, text in KINDS.items():
            if args.only and args.only not in kind:
                continue
            data = text.encode()
            assert len(data) <= LIMIT, (kind, len(data))
            (root / REL).write_bytes(data)
            runs = [run_once(root, cfg) for _ in range(args.repeat)]
            times = [t for t, _ in runs]
            worst = max(worst, (kind, statistics.median(times)), key=lambda w: w[1])
            row(kind, f"{len(data) / 1024:.0f}", times, runs[0][1])
        (root / REL).unlink(missing_ok=True)
        print(f"slowest kind by its median: {worst[0]}, {worst[1] * 1000:.1f} ms per file")
        print(f"\nwhole trees (validate_tree), {args.repeat} runs")
        for number, (kind, make) in enumerate(TREES.items()):
            if args.only and args.only not in kind:
                continue
            tree = tmp / f"tree{number}"
            (tree / "users" / "alice").mkdir(parents=True)
            make(tree)
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                state = validate_tree(tree, cfg)
                times.append(time.perf_counter() - start)
            row(kind, "", times, f"{len(state.files)} files, {len(state.issues())} issues; "
                f"{state.issues()[-1].render()[:80]}")
    finally:
        remove_tree(tmp)


if __name__ == "__main__":
    main()
