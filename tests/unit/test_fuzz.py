"""Fuzz: hostile trees through ``servesync validate`` and a whole tick, as successive commits.

2,000 generated trees (tests/support/hostile.py, fixed seed) go through the
real CLI validation path and through one tick each of one Reconciler with
the fake Ray, as if committed one after another: nothing may raise, every
refused document names its file, a line and a class, and every tick
publishes a readable ``index.json``. benchmarks/fuzz_validate.py runs the
same generator 100,000 times and prints the slowest inputs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from servesync.config import Config, ServingConfig
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState
from servesync.desired.validating import MAX_FILE_ISSUES, validate_tree
from servesync.errors import IssueCode
from tests.support.clock import FakeClock
from tests.support.fakeray import SettlingRay, make_reconciler
from tests.support.hostile import trees, write_tree

EXAMPLES = 2000


def assert_reported(state: DesiredState) -> None:
    for f in state.files:
        for issue in f.issues:
            assert issue.file == f.path and issue.line >= 0
            assert isinstance(issue.code, IssueCode) and issue.message
        for doc in f.documents:
            if doc.spec is None:  # its issues, or counted in the file's "and N more"
                assert doc.issues or len(f.all_issues()) > MAX_FILE_ISSUES, (
                    f"{f.path} document {doc.index}: refused without an issue")
            for issue in doc.issues:
                assert issue.file == f.path and issue.line >= 1, issue
                assert isinstance(issue.code, IssueCode) and issue.message
                json.dumps(issue.to_json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "private" / "hf" / "tiny").mkdir(parents=True)
    config = Config(state_dir=str(base / "state"), status_dir=str(base / "status"),
                    storage_root=str(base / "private"),
                    serving=ServingConfig(accelerator_type="cpu"))
    return config, base


def test_hostile_trees_never_crash_validate_or_a_tick(world: tuple[Config, Path]) -> None:
    config, base = world
    ray, clock = SettlingRay(), FakeClock(step_s=1)
    reconciler = make_reconciler(config, ray, clock)
    ticks = 0

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(trees)
    def run(tree: list[tuple[bytes, bytes]]) -> None:
        nonlocal ticks
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            root = Path(tmp) / "desired"
            write_tree(root, tree)
            assert_reported(validate_tree(root, config))
            reconciler.tick(Snapshot(root=root, revision=f"r{ticks}", error=None, watch_paths=()))
            ticks += 1
            index = json.loads((Path(config.status_dir) / "index.json").read_bytes())
            assert index["tick"] == reconciler.ticks

    run()
    assert ticks >= EXAMPLES
