"""One file can only ever affect its own models: hostile content, names and tree shapes.

Every reproducer of issue 8 (part 3) is here: each one is refused or reported, for
its own file (or folder) only; ``servesync validate`` prints it as valid UTF-8 text
and JSON; a tick with the fake applier never raises, keeps the model of the file as
it last was (last-known-good), and converges every other tenant's change. The
planner's side (an unreadable folder holds its models) is also a table case in
tests/unit/converge/test_planning.py.

The tests run as root, which reads any folder, and /root (where the interpreter
lives) is closed to other users, so unreadable folders and files are simulated by
making ``os.scandir`` / ``Path.open`` raise PermissionError for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servesync import cli
from servesync.config import Config
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import State
from servesync.desired import loading, validating
from servesync.desired.loading import LoadedFile
from servesync.desired.sources import Snapshot
from servesync.desired.specs import DesiredState
from servesync.errors import IssueCode
from tests.support.clock import FakeClock
from tests.support.fakeray import SettlingRay, make_reconciler
from tests.support.hostile import remove_tree
from tests.unit.converge.plancases import at

E400, E409, E422 = IssueCode.INVALID, IssueCode.CONFLICT, IssueCode.UNPROCESSABLE
HF = "$HOME/common/hf/tiny"
ALICE = "users/alice/m.yaml"


def model(suffix: str, replicas: int = 1, extra: str = "") -> str:
    return (f"model_id: {suffix}\nmodel_source: {HF}\nnum_replicas: {replicas}\n"
            f"cpus_per_replica: 1\n{extra}")


def write(root: Path, rel: str, text: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def nest(base: Path, depth: int, name: str = "d") -> Path:
    """``base/d/d/.../d`` ``depth`` folders deep, made without recursion; returns the last."""
    base.mkdir(parents=True, exist_ok=True)
    path = base
    for _ in range(depth):
        path = path / name
        path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def deep_tmp() -> Iterator[Path]:
    """A temporary folder outside pytest's ``tmp_path`` (whose clean-up, shared with
    every other pytest run on the machine, is recursive and would raise
    RecursionError on 1,000 nested folders), removed here without recursion."""
    top = Path(tempfile.mkdtemp(prefix="servesync-deep-"))
    try:
        yield top
    finally:
        remove_tree(top)


def validate(root: Path, cfg: Config) -> DesiredState:
    return validating.validate_tree(root, cfg)


def cli_outputs(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, dict[str, Any]]:
    """``servesync validate`` as text and as JSON: both must encode as UTF-8."""
    code = cli.main(["validate", str(root)])
    text = capsys.readouterr().out
    assert cli.main(["validate", str(root), "--format", "json"]) == code
    raw = capsys.readouterr().out
    text.encode("utf-8")  # a lone surrogate (an undecodable name) would raise here
    raw.encode("utf-8")
    return code, text, json.loads(raw)


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SERVESYNC_CONFIG", raising=False)
    monkeypatch.setattr("servesync.config.DEFAULT_CONFIG_PATH", str(tmp_path / "none.yaml"))


# --- the tick: the hostile file's model is kept, every other tenant converges ----------


class Cluster:
    """A desired tree with alice's model ``m`` and bob's ``b``, converged by the fake Ray."""

    def __init__(self, cfg: Config, root: Path, alice_file: str = ALICE) -> None:
        self.cfg, self.root, self.alice_file = cfg, root, alice_file
        self.ray = SettlingRay()
        self.rec: Reconciler = make_reconciler(cfg, self.ray, FakeClock(at(0), step_s=5))
        write(root, alice_file, model("m"))
        write(root, "users/bob/b.yaml", model("b"))
        for i in range(8):
            if self.rec.tick(Snapshot(root, f"r0.{i}")).converged:
                break
        assert self.states() == {"m": State.RUNNING, "b": State.RUNNING}
        self.m_hash = self.hashes()["m"]

    def states(self) -> dict[str, State]:
        return {r.suffix: r.state for r in self.rec.store.models().values()}

    def hashes(self) -> dict[str, str]:
        return {r.suffix: r.spec_hash for r in self.rec.store.models().values()}

    def tick_after(self, change: Callable[[], None]) -> list[dict[str, Any]]:
        """Apply ``change`` (and scale bob to 2), tick until bob converges; the
        index's errors. Every tick must return, never raise."""
        change()
        write(self.root, "users/bob/b.yaml", model("b", replicas=2))
        for i in range(8):
            self.rec.tick(Snapshot(self.root, f"r1.{i}"))
        records = {r.suffix: r for r in self.rec.store.models().values()}
        assert records["b"].spec["num_replicas"] == 2 and records["b"].state is State.RUNNING
        assert records["m"].state is State.RUNNING, "the hostile file's model is kept"
        assert records["m"].spec_hash == self.m_hash, "at its last good version"
        index = Path(self.cfg.status_dir) / "index.json"
        doc: dict[str, Any] = json.loads(index.read_bytes().decode("utf-8"))  # valid UTF-8
        for path in (Path(self.cfg.status_dir) / "models").glob("*.json"):
            json.loads(path.read_bytes().decode("utf-8"))
        errors: list[dict[str, Any]] = doc["errors"]
        return errors


@pytest.fixture
def cluster(cpu_config: Config, desired_tree: Path) -> Cluster:
    return Cluster(cpu_config, desired_tree)


# --- numbers beyond int64 / float: 422 on the field, clipped -----------------------------

HUGE = [
    # (field: text, pointer)
    ("gpus_per_replica: 1" + "0" * 309, "/gpus_per_replica"),  # 310 digits: over float range
    ("gpus_per_replica: 9223372036854775808", "/gpus_per_replica"),  # 2^63
    ("num_replicas: -9223372036854775809", "/num_replicas"),
    ("num_replicas: 1" + ":00" * 2500, "/num_replicas"),  # sexagesimal, > 4,300 digits
    ("num_replicas: 0x1" + "0" * 16, "/num_replicas"),
    ("num_replicas: 0b1" + "0" * 63, "/num_replicas"),
    ("num_replicas: 01" + "0" * 40, "/num_replicas"),  # YAML 1.1 octal
    ("num_replicas: 1.0e+19", "/num_replicas"),  # a float JSON Schema takes as an integer
    ("cpus_per_replica: 1" + "0" * 400 + ".0", "/cpus_per_replica"),
    ("cpus_per_replica: 1.0e+400", "/cpus_per_replica"),
    ("cpus_per_replica: -1" + ":00" * 200 + ".5", "/cpus_per_replica"),
    ("engine_kwargs: {seed: 1" + "0" * 4400 + "}", "/engine_kwargs/seed"),
    ("autoscaling: {max_replicas: 1" + "_000" * 2000 + "}", "/autoscaling/max_replicas"),
]


@pytest.mark.parametrize(("line", "pointer"), HUGE, ids=[h[1] + str(i) for i, h in
                                                         enumerate(HUGE)])
def test_numbers_beyond_64_bits_or_float_range_are_422_on_their_field(
    tmp_path: Path, cpu_config: Config, line: str, pointer: str
) -> None:
    root = tmp_path / "t"
    write(root, ALICE, f"model_id: m\nmodel_source: {HF}\n{line}\n")
    start = time.process_time()
    state = validate(root, cpu_config)
    assert time.process_time() - start < 2.0  # CPU seconds: other processes do not count
    [issue] = state.issues()
    assert (issue.code, issue.pointer, issue.line) == (E422, pointer, 3)
    assert "out of range" in issue.message
    assert len(issue.message) < 160, "a long number is clipped, never quoted whole"
    assert state.specs == ()
    assert state.held_files == {ALICE}


@pytest.mark.parametrize("value", ["9223372036854775807", "-9223372036854775808", "0x7f",
                                   "1_000", "1:30", "0b101", "017", "1.7e+308", "-1.0e-400",
                                   "1:00:00.5"])
def test_numbers_within_range_are_kept(value: str) -> None:
    [doc] = loading.parse_text(f"x: {value}\n", rel="f")
    assert doc.issues == () and isinstance(doc.data["x"], int | float)


@pytest.mark.parametrize("text", ['a: !!int ""', 'a: !!float ""', 'a: !!bool "x"',
                                  'a: !!int "0x"', "a: !!int '1:'", "a: !!int " + "9" * 100,
                                  'a: !!float "x"', 'a: !!int "' + "z" * 100 + '"'])
def test_explicitly_tagged_values_that_are_not_numbers_are_400(text: str) -> None:
    [doc] = loading.parse_text(text + "\n", rel="f")
    assert doc.data is None
    [issue] = doc.issues
    assert issue.pointer == "/a" and issue.code in (E400, E422)


def test_huge_numbers_through_validate_and_a_tick(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    text = model("m", extra="gpus_per_replica: 1" + "0" * 400 + "\n")
    errors = cluster.tick_after(lambda: write(cluster.root, ALICE, text))
    assert [(e["path"], e["code"], e["pointer"]) for e in errors] == \
        [(ALICE, 422, "/gpus_per_replica")]
    code, _, out = cli_outputs(cluster.root, capsys)
    assert code == 1 and not out["ok"]


def test_a_sexagesimal_beyond_4300_digits_never_reaches_a_tick(cluster: Cluster) -> None:
    text = model("m").replace("num_replicas: 1", "num_replicas: 1" + ":00" * 2500)
    errors = cluster.tick_after(lambda: write(cluster.root, ALICE, text))
    assert [(e["code"], e["pointer"]) for e in errors] == [(422, "/num_replicas")]


# --- names that are not UTF-8 ------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_400_shown_escaped(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = os.fsencode(cluster.root / "users/alice") + b"/n\xff\xfe.yaml"

    def change() -> None:
        with open(bad, "wb") as f:
            f.write(model("n").encode())

    errors = cluster.tick_after(change)
    assert [(e["path"], e["code"]) for e in errors] == [("users/alice/n\\xff\\xfe.yaml", 400)]
    assert "not UTF-8" in errors[0]["message"]
    code, text, out = cli_outputs(cluster.root, capsys)
    assert code == 1
    assert "users/alice/n\\xff\\xfe.yaml:0: 400" in text
    assert [f["path"] for f in out["files"] if not f["ok"]] == ["users/alice/n\\xff\\xfe.yaml"]


def test_a_folder_name_that_is_not_utf8_is_400_and_not_entered(
    tmp_path: Path, cpu_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "t"
    write(root, "users/bob/b.yaml", model("b"))
    folder = os.fsencode(root / "users/alice") + b"/sub\xe9"
    os.makedirs(folder)
    with open(folder + b"/m.yaml", "wb") as f:
        f.write(model("m").encode())
    state = validate(root, cpu_config)
    [bad] = [f for f in state.files if not f.ok]
    assert (bad.path, bad.user_id, bad.folder) == ("users/alice/sub\\xe9/", "alice", True)
    assert [s.suffix for s in state.specs] == ["b"]
    code, _, out = cli_outputs(root, capsys)
    assert code == 1 and out["files"][0]["path"] == "users/alice/sub\\xe9/"


# --- deep trees ----------------------------------------------------------------------------


def test_1000_nested_folders_are_a_400_at_the_depth_limit_never_a_recursion_error(
    deep_tmp: Path, cpu_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    root = deep_tmp / "t"
    write(root, "users/bob/b.yaml", model("b"))
    alice = root / "users/alice"
    shallow = nest(alice, loading.MAX_FOLDER_DEPTH)
    (shallow / "ok.yaml").write_text(model("ok"))  # 32 folders deep: read
    deepest = nest(alice, 1000)
    (deepest / "m.yaml").write_text(model("m"))
    start = time.process_time()
    state = validate(root, cpu_config)
    assert time.process_time() - start < 4.0  # CPU seconds
    assert sorted(s.suffix for s in state.specs) == ["b", "ok"]
    [bad] = [f for f in state.files if not f.ok]
    expected = "users/alice/" + "d/" * (loading.MAX_FOLDER_DEPTH + 1)
    assert (bad.path, bad.folder, bad.user_id) == (expected, True, "alice")
    [issue] = bad.issues
    assert issue.code == E400 and f"deeper than {loading.MAX_FOLDER_DEPTH} folders" in \
        issue.message
    assert state.held_folders == {expected}
    code, _, out = cli_outputs(root, capsys)
    assert code == 1 and not out["ok"]


def test_a_model_under_a_folder_now_too_deep_is_kept(
    cpu_config: Config, desired_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model recorded from a folder deeper than the limit (by a servesync that
    read deeper) keeps running: the folder is reported, never taken as empty."""
    deep_file = "users/alice/" + "d/" * (loading.MAX_FOLDER_DEPTH + 3) + "m.yaml"
    monkeypatch.setattr(loading, "_MAX_WALK_DEPTH", 1000)
    cluster = Cluster(cpu_config, desired_tree, alice_file=deep_file)
    monkeypatch.undo()
    errors = cluster.tick_after(lambda: None)
    assert [(e["code"], e["path"]) for e in errors] == \
        [(400, "users/alice/" + "d/" * (loading.MAX_FOLDER_DEPTH + 1))]


# --- unreadable folders and files: 400, their models kept ---------------------------------


class _Denied(set[str]):
    """Denied paths; adding one moves its ctime, as the chmod that would really
    deny it does (so servesync's read cache, keyed on the stamp, sees it)."""

    def add(self, path: str) -> None:
        super().add(path)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode))


@pytest.fixture
def deny(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Paths (absolute, as strings) that ``os.scandir``, ``os.open`` and
    ``Path.open`` refuse."""
    denied: set[str] = _Denied()
    real_scandir, real_open, real_os_open = os.scandir, pathlib.Path.open, os.open

    def scandir(path: Any = ".") -> Any:
        if os.path.normpath(os.fspath(path)) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def open_(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
        if os.path.normpath(self) in denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    def os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.path.normpath(os.fspath(path)) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(pathlib.Path, "open", open_)
    yield denied


def test_an_unreadable_folder_is_400_and_its_models_are_never_deleted(
    cpu_config: Config, desired_tree: Path, deny: set[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = Cluster(cpu_config, desired_tree, alice_file="users/alice/team/m.yaml")
    errors = cluster.tick_after(lambda: deny.add(str(desired_tree / "users/alice/team")))
    assert [(e["path"], e["code"], e["line"]) for e in errors] == \
        [("users/alice/team/", 400, 0)]
    assert "cannot read this folder: Permission denied" in errors[0]["message"]
    code, _, out = cli_outputs(desired_tree, capsys)
    assert code == 1 and out["files"][0]["path"] == "users/alice/team/"


def test_an_unreadable_user_folder_holds_every_model_of_that_user(
    cluster: Cluster, deny: set[str]
) -> None:
    errors = cluster.tick_after(lambda: deny.add(str(cluster.root / "users/alice")))
    assert [(e["path"], e["code"]) for e in errors] == [("users/alice/", 400)]


def test_an_unreadable_file_is_400_and_its_model_is_kept(cluster: Cluster,
                                                          deny: set[str]) -> None:
    errors = cluster.tick_after(lambda: deny.add(str(cluster.root / ALICE)))
    assert [(e["path"], e["code"]) for e in errors] == [(ALICE, 400)]
    assert "Permission denied" in errors[0]["message"]


def test_an_unreadable_root_is_a_source_error_not_an_empty_tree(
    tmp_path: Path, cpu_config: Config, deny: set[str]
) -> None:
    root = tmp_path / "t"
    write(root, ALICE, model("m"))
    deny.add(str(root))
    with pytest.raises(validating.SourceError, match="cannot read the desired-state folder"):
        validate(root, cpu_config)


# --- per-file cost: duplicates, documents, nodes, issues ----------------------------------


def test_4000_duplicate_model_ids_in_one_file_stay_small(
    tmp_path: Path, cpu_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "".join(f"---\nmodel_id: m\nmodel_source: {HF}\n" for _ in range(4000))
    root = tmp_path / "t"
    write(root, ALICE, text[:loading.MAX_FILE_BYTES])
    start = time.process_time()
    code, text_out, out = cli_outputs(root, capsys)
    assert time.process_time() - start < 4.0  # CPU seconds
    assert code == 1
    assert len(text_out) < 20_000 and len(json.dumps(out)) < 100_000  # was 400 MB
    [f] = out["files"]
    assert len(f["documents"]) == loading.MAX_DOCUMENTS + 1
    assert "more than 100 YAML documents" in f["documents"][-1]["errors"][0]["message"]
    shown = f["errors"] + [e for d in f["documents"] for e in d["errors"]]
    assert len(shown) == validating.MAX_FILE_ISSUES + 1
    assert [e["code"] for e in shown] == [409] * 19 + [400, 409]  # reading stopped: shown
    assert shown[-1]["message"] == ("and 81 more issues in this file, the first here "
                                    "(only 20 are shown)")
    conflict = f["documents"][0]["errors"][0]
    assert conflict["code"] == 409
    assert conflict["message"] == (
        "model_id 'm' of user 'alice' is also declared at users/alice/m.yaml:5, "
        "users/alice/m.yaml:8, users/alice/m.yaml:11 and 96 more places")


def test_duplicates_across_many_files_name_a_few_places_each(tmp_path: Path,
                                                             cpu_config: Config) -> None:
    root = tmp_path / "t"
    for i in range(300):
        write(root, f"users/alice/m{i:03d}.yaml", f"model_id: m\nmodel_source: {HF}\n")
    state = validate(root, cpu_config)
    issues = state.issues()
    assert len(issues) == 300 and {i.code for i in issues} == {E409}
    assert max(len(i.message) for i in issues) < 200
    assert issues[-1].message.endswith("and 296 more places")


def test_a_syntax_error_then_65531_document_markers_costs_one_parse(
    tmp_path: Path, cpu_config: Config
) -> None:
    root = tmp_path / "t"
    hostile = "a: [\n" + "---\n" * 65531
    for i in range(8):
        write(root, f"users/alice/h{i}.yaml", hostile)
    write(root, "users/bob/b.yaml", model("b"))
    start = time.process_time()
    state = validate(root, cpu_config)
    assert time.process_time() - start < 4.0  # CPU seconds; was 49 s
    assert [s.suffix for s in state.specs] == ["b"]
    for f in state.files[:8]:
        [doc] = f.documents
        [issue] = doc.issues
        assert (issue.code, issue.line) == (E400, 1)
        assert issue.message.startswith("invalid YAML")


def test_documents_past_the_cap_are_a_400_and_the_ones_before_are_kept() -> None:
    text = "".join(f"---\nmodel_id: m{i}\nmodel_source: {HF}\n"
                   for i in range(loading.MAX_DOCUMENTS + 5))
    docs = loading.parse_text(text, rel=ALICE)
    assert len(docs) == loading.MAX_DOCUMENTS + 1
    assert all(d.issues == () for d in docs[:-1])
    [issue] = docs[-1].issues
    first_line = 3 * loading.MAX_DOCUMENTS + 2
    assert (docs[-1].line, issue.line, issue.code) == (first_line, first_line, E400)
    assert issue.message.startswith("more than 100 YAML documents in one file")


def test_empty_documents_count_towards_the_cap() -> None:
    docs = loading.parse_text("---\n" * 65000, rel=ALICE)
    [doc] = docs
    assert "more than 100 YAML documents" in doc.issues[0].message


def test_nodes_past_the_cap_are_a_400() -> None:
    text = "model_id: m\nx:\n" + "- 1\n" * loading.MAX_NODES
    [doc] = loading.parse_text(text, rel=ALICE)
    [issue] = doc.issues
    assert issue.code == E400 and issue.message.startswith(
        f"more than {loading.MAX_NODES:,} YAML nodes")


def test_long_mapping_keys_are_400() -> None:
    key = "k" * (loading.MAX_KEY_CHARS + 1)
    [doc] = loading.parse_text(f"model_id: m\n{key}: 1\n", rel=ALICE)
    [issue] = doc.issues
    assert issue.code == E400 and "longer than 256 characters" in issue.message
    assert len(issue.message) < 200


def test_issues_are_capped_per_file_with_a_count_of_the_rest(tmp_path: Path,
                                                             cpu_config: Config) -> None:
    text = f"model_id: m\nmodel_source: {HF}\n" + "".join(f"k{i}: 1\n" for i in range(50))
    root = tmp_path / "t"
    write(root, ALICE, text)
    [f] = validate(root, cpu_config).files
    shown = f.all_issues()
    assert len(shown) == validating.MAX_FILE_ISSUES + 1 and f.issues == ()
    assert [i.line for i in shown[:-1]] == list(range(3, 23))
    more = shown[-1]
    assert more.message == ("and at least 1 more issues in this file, the first here "
                            "(only 20 are shown)")  # at least: checking stopped early
    assert more.line == 23


def test_the_issue_count_never_makes_a_valid_document_invalid(tmp_path: Path,
                                                              cpu_config: Config) -> None:
    bad = f"model_id: m\nmodel_source: {HF}\n" + "".join(f"k{i}: 1\n" for i in range(30))
    root = tmp_path / "t"
    write(root, ALICE, bad + f"---\nmodel_id: ok\nmodel_source: {HF}\n")
    state = validate(root, cpu_config)
    assert [s.suffix for s in state.specs] == ["ok"]
    assert len(state.issues()) == validating.MAX_FILE_ISSUES + 1


@pytest.mark.parametrize(("parts", "message"), [
    (100, "more than 64 path parts"),
    (100_000, "is too long (at most 4096 characters)"),
])
def test_a_model_source_of_many_parts_is_400_before_it_is_resolved(
    tmp_path: Path, cpu_config: Config, parts: int, message: str
) -> None:
    root = tmp_path / "t"
    write(root, ALICE, "model_id: m\nmodel_source: $HOME/" + "a/" * parts + "\n")
    start = time.process_time()
    [issue] = validate(root, cpu_config).issues()
    assert time.process_time() - start < 2.0  # CPU s; resolving 100,000 parts took seconds
    assert (issue.code, issue.pointer) == (E400, "/model_source")
    assert message in issue.message


HOSTILE_TEXTS = {
    "unknown keys close to real ones": "".join(f"model_sourc{i}: 1\n" for i in range(40_000)),
    "env values of the wrong type": "env:\n" + "".join(f"  VLLM_X{i}: 1\n"
                                                       for i in range(30_000)),
    "a flow list": "x: [" + "1," * 130_000 + "1]\n",
    "duplicate keys": "model_id: m\n" * 30_000,
    "one key per document": "".join(f"---\nk{i}: 1\n" for i in range(30_000)),
}


@pytest.mark.parametrize("kind", list(HOSTILE_TEXTS))
def test_the_slowest_files_we_could_build_never_blow_up(
    kind: str, cpu_config: Config
) -> None:
    """benchmarks/bench_hostile_files.py measures these (and more) precisely; this
    guards the order of magnitude (in CPU seconds, so a loaded test machine does not fail it)."""
    text = f"model_id: m\nmodel_source: {HF}\n" + HOSTILE_TEXTS[kind]
    text = text[:loading.MAX_FILE_BYTES].rsplit("\n", 1)[0] + "\n"
    start = time.process_time()
    loaded = LoadedFile(ALICE, "alice", documents=loading.parse_text(text, rel=ALICE))
    state = validating.validate_loaded([loaded], cpu_config)
    assert time.process_time() - start < 2.0  # CPU seconds: other processes do not count
    assert not state.ok and len(state.issues()) <= validating.MAX_FILE_ISSUES + 1
