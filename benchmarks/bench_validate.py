"""Benchmark: validate_tree over a generated tree of 1,000 desired-state files.

Run: ``.venv/bin/python benchmarks/bench_validate.py [--files N] [--repeat R]``.
Writes the tree to a temporary directory (removed afterwards), prints files/s
and seconds per full validation (best of R). The daemon validates the whole
tree every tick, so this must stay well under a second for 1,000 files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from servesync.config import Config, ServingConfig
from servesync.desired.validating import validate_tree

TEMPLATE = """\
# yaml-language-server: $schema=../../../schemas/serving-model.schema.json
model_id: model-{i}
model_source: $HOME/common/hf/org/model-{i}
gpus_per_replica: {gpus}
{scaling}
engine_kwargs:
  max_model_len: 8192
  gpu_memory_utilization: 0.9
  enable_prefix_caching: true
env:
  VLLM_LOGGING_LEVEL: INFO
enabled: {enabled}
"""


def make_tree(root: Path, files: int, users: int = 50) -> None:
    for i in range(files):
        user = root / "users" / f"user{i % users:02d}"
        user.mkdir(parents=True, exist_ok=True)
        scaling = ("autoscaling: {min_replicas: 1, max_replicas: 4, "
                   "target_ongoing_requests: 8}") if i % 3 == 0 else "num_replicas: 2"
        text = TEMPLATE.format(i=i, gpus=1 + i % 2, scaling=scaling,
                               enabled="true" if i % 7 else "false")
        if i % 50 == 49:  # a few broken files, as in real life
            text += "num_replicas: 0\n"
        (user / f"model-{i}.yaml").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, args.files)
        cfg = Config(storage_root=str(Path(tmp) / "private"),
                     serving=ServingConfig(accelerator_type="H20"))
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            state = validate_tree(root, cfg)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"validate_tree: {len(state.files)} files, {len(state.specs)} valid models, "
              f"{len(state.issues())} issues")
        print(f"best of {args.repeat}: {best:.3f} s total, {len(state.files) / best:,.0f} files/s "
              f"(first run {times[0]:.3f} s)")


if __name__ == "__main__":
    main()
