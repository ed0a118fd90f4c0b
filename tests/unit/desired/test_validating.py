"""Validation of desired-state trees (servesync.desired.validating): every rule, as tables."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from servesync.converge import naming
from servesync.converge.actions import RecordOnly, UpdateGateway
from servesync.converge.observed import AppStatus
from servesync.converge.planning import plan
from servesync.converge.reconciling import Reconciler
from servesync.converge.records import GatewayRecord, State
from servesync.desired.sources import Snapshot
from servesync.desired.specs import Autoscaling, DesiredState
from servesync.desired.validating import validate_tree
from servesync.errors import IssueCode, SourceError
from servesync.state.store import Store
from servesync.status.publishing import StatusFiles
from tests.support.fakeray import FakeRay
from tests.unit.converge import plancases

HEAD = "model_id: m\nmodel_source: $HOME/common/hf/org/m\n"
E400, E403 = IssueCode.INVALID, IssueCode.FORBIDDEN
E409, E422 = IssueCode.CONFLICT, IssueCode.UNPROCESSABLE


def _config(tmp_path: Path, accelerator: str = "H20", **serving: object) -> Config:
    return Config(storage_root=str(tmp_path / "private"),
                  serving=ServingConfig(accelerator_type=accelerator, **serving))  # type: ignore[arg-type]


def _validate(tmp_path: Path, files: dict[str, str], accelerator: str = "H20",
              **serving: object) -> DesiredState:
    root = tmp_path / "tree"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    root.mkdir(exist_ok=True)
    return validate_tree(root, _config(tmp_path, accelerator, **serving))


def _found(state: DesiredState) -> list[tuple[IssueCode, str]]:
    return sorted((i.code, i.pointer) for i in state.issues())


# (id, document, platform, expected (code, pointer) pairs)
CASES = [
    # 400: structure
    ("missing model_id", "model_source: org/m\n", "H20", [(E400, "/model_id")]),
    ("missing both", "enabled: true\n", "H20", [(E400, "/model_id"), (E400, "/model_source")]),
    ("unknown field", HEAD + "replicas: 2\n", "H20", [(E400, "/replicas")]),
    ("unknown nested", HEAD + "autoscaling: {max_replicas: 2, min: 1}\n", "H20",
     [(E400, "/autoscaling/min")]),
    ("wrong type", HEAD + "num_replicas: two\n", "H20", [(E400, "/num_replicas")]),
    ("bool is no int", HEAD + "gpus_per_replica: true\n", "H20", [(E400, "/gpus_per_replica")]),
    ("float replicas", HEAD + "num_replicas: 1.5\n", "H20", [(E400, "/num_replicas")]),
    ("enabled not bool", HEAD + "enabled: maybe\n", "H20", [(E400, "/enabled")]),
    ("engine_kwargs list", HEAD + "engine_kwargs: [a]\n", "H20", [(E400, "/engine_kwargs")]),
    ("bad model_id", "model_id: Qwen_0.5B\nmodel_source: org/m\n", "H20", [(E400, "/model_id")]),
    ("model_id ends badly", "model_id: qwen-\nmodel_source: org/m\n", "H20",
     [(E400, "/model_id")]),
    ("model_id newline", 'model_id: "qwen\\n"\nmodel_source: org/m\n', "H20",
     [(E400, "/model_id")]),
    ("model_id too long", f"model_id: {'a' * 65}\nmodel_source: org/m\n", "H20",
     [(E400, "/model_id")]),
    ("apiVersion", "apiVersion: v2\n" + HEAD, "H20", [(E400, "/apiVersion")]),
    ("kind", "kind: Model\n" + HEAD, "H20", [(E400, "/kind")]),
    ("both scalings", HEAD + "num_replicas: 2\nautoscaling: {max_replicas: 3}\n", "H20",
     [(E400, "/autoscaling")]),
    ("autoscaling no max", HEAD + "autoscaling: {min_replicas: 1}\n", "H20",
     [(E400, "/autoscaling/max_replicas")]),
    ("env bad name", HEAD + "env: {lower: x}\n", "H20", [(E400, "/env/lower")]),
    ("env number", HEAD + "env: {N: 1}\n", "H20", [(E400, "/env/N")]),
    ("empty source", "model_id: m\nmodel_source: ''\n", "H20", [(E400, "/model_source")]),
    ("relative source", "model_id: m\nmodel_source: a/b/c\n", "H20", [(E400, "/model_source")]),
    ("unknown macro", "model_id: m\nmodel_source: $DATA/x\n", "H20", [(E400, "/model_source")]),
    ("not a mapping", "- a\n- b\n", "H20", [(E400, "")]),
    ("a scalar", "hello\n", "H20", [(E400, "")]),
    ("yaml syntax", "model_id: [m\n", "H20", [(E400, "")]),
    ("anchor", HEAD + "env: &e {A: b}\n", "H20", [(E400, "")]),
    # 403: forbidden
    ("other user", "model_id: m\nmodel_source: $HOME/../bob/m\n", "H20", [(E403, "/model_source")]),
    ("outside root", "model_id: m\nmodel_source: /etc/m\n", "H20", [(E403, "/model_source")]),
    ("dotdot", "model_id: m\nmodel_source: $HOME/a/../b\n", "H20", [(E403, "/model_source")]),
    ("datasets", "model_id: m\nmodel_source: $HOME/common/datasets/d\n", "H20",
     [(E403, "/model_source")]),
    ("denied engine key", HEAD + "engine_kwargs: {trust_remote_code: true, dtype: half}\n",
     "H20", [(E403, "/engine_kwargs/trust_remote_code")]),
    ("denied env", HEAD + "env: {LD_PRELOAD: /x.so, NCCL_DEBUG: INFO}\n", "H20",
     [(E403, "/env/LD_PRELOAD")]),
    ("env not allowed", HEAD + "env: {MY_VAR: x}\n", "H20", [(E403, "/env/MY_VAR")]),
    ("engine key not allowed", HEAD + "engine_kwargs: {load_format: dummy}\n", "H20",
     [(E403, "/engine_kwargs/load_format")]),
    # 422: unprocessable
    ("zero replicas", HEAD + "num_replicas: 0\n", "H20", [(E422, "/num_replicas")]),
    ("negative replicas", HEAD + "num_replicas: -1\n", "H20", [(E422, "/num_replicas")]),
    ("negative gpus", HEAD + "gpus_per_replica: -1\n", "H20", [(E422, "/gpus_per_replica")]),
    ("zero gpus on gpu", HEAD + "gpus_per_replica: 0\n", "H20", [(E422, "/gpus_per_replica")]),
    ("gpus on cpu", HEAD + "gpus_per_replica: 1\n", "cpu", [(E422, "/gpus_per_replica")]),
    ("zero cpus", HEAD + "cpus_per_replica: 0\n", "cpu", [(E422, "/cpus_per_replica")]),
    ("max zero", HEAD + "autoscaling: {min_replicas: 0, max_replicas: 0}\n", "H20",
     [(E422, "/autoscaling/max_replicas")]),
    ("min negative", HEAD + "autoscaling: {min_replicas: -1, max_replicas: 2}\n", "H20",
     [(E422, "/autoscaling/min_replicas")]),
    ("min > max", HEAD + "autoscaling: {min_replicas: 3, max_replicas: 2}\n", "H20",
     [(E422, "/autoscaling/min_replicas")]),
    ("default min > max", HEAD + "autoscaling: {max_replicas: 1, min_replicas: 2}\n", "H20",
     [(E422, "/autoscaling/min_replicas")]),
    ("target zero", HEAD + "autoscaling: {max_replicas: 2, target_ongoing_requests: 0}\n",
     "H20", [(E422, "/autoscaling/target_ongoing_requests")]),
    ("idle negative", HEAD + "autoscaling: {max_replicas: 2, idle_timeout_s: -1}\n", "H20",
     [(E422, "/autoscaling/idle_timeout_s")]),
    # several classes in one document are all reported
    ("mixed", "model_id: m\nmodel_source: /etc/x\nnum_replicas: 0\nfoo: 1\n", "H20",
     [(E400, "/foo"), (E403, "/model_source"), (E422, "/num_replicas")]),
]


@pytest.mark.parametrize(("doc", "platform", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rules(tmp_path: Path, doc: str, platform: str,
               expected: list[tuple[IssueCode, str]]) -> None:
    state = _validate(tmp_path, {"users/alice/m.yaml": doc}, platform)
    assert _found(state) == sorted(expected)
    assert state.specs == ()
    assert all(i.file == "users/alice/m.yaml" and i.line >= 1 for i in state.issues())


@pytest.mark.parametrize(
    ("serving", "doc", "expected"),
    [
        ({"allow_hub_ids": False}, "model_id: m\nmodel_source: org/m\n", [(E403, "/model_source")]),
        ({"engine_kwargs_deny": ("dtype",)}, HEAD + "engine_kwargs: {dtype: half}\n",
         [(E403, "/engine_kwargs/dtype")]),
        ({"engine_kwargs_deny": ()}, HEAD + "engine_kwargs: {trust_remote_code: true}\n",
         [(E403, "/engine_kwargs/trust_remote_code")]),  # never allowed, deny list or not
        ({"env_deny": ("HF_TOKEN",), "env_allowed": ("HF_TOKEN", "LD_PRELOAD")},
         HEAD + "env: {HF_TOKEN: x, LD_PRELOAD: y}\n", [(E403, "/env/HF_TOKEN")]),
    ],
)
def test_the_config_decides_what_is_denied(
    tmp_path: Path, serving: dict[str, object], doc: str,
    expected: list[tuple[IssueCode, str]],
) -> None:
    state = _validate(tmp_path, {"users/alice/m.yaml": doc}, "H20", **serving)
    assert _found(state) == expected


@pytest.mark.parametrize(("where", "code"), [("users/bob/m", E403), ("users/alice/m", None),
                                            ("hf/org/m", None), ("elsewhere/m", E403)])
def test_absolute_paths_under_the_storage_root(tmp_path: Path, where: str,
                                               code: IssueCode | None) -> None:
    doc = f"model_id: m\nmodel_source: {tmp_path}/private/{where}\n"
    state = _validate(tmp_path, {"users/alice/m.yaml": doc})
    assert _found(state) == ([(code, "/model_source")] if code else [])


def test_a_symlink_out_of_the_users_folder_is_forbidden(tmp_path: Path) -> None:
    (tmp_path / "private/users/bob/secret").mkdir(parents=True)
    (tmp_path / "private/users/alice").mkdir(parents=True)
    (tmp_path / "private/users/alice/m").symlink_to(tmp_path / "private/users/bob/secret")
    state = _validate(tmp_path, {"users/alice/m.yaml": "model_id: m\nmodel_source: $HOME/m\n"})
    [issue] = state.issues()
    assert (issue.code, issue.pointer, issue.line) == (E403, "/model_source", 2)
    assert "symlink" in issue.message


MVP = """\
model_id: qwen-0.5b
model_source: $HOME/common/hf/Qwen/Qwen2.5-0.5B-Instruct
num_replicas: 2
gpus_per_replica: 1
engine_kwargs:
  max_model_len: 8192
env:
  VLLM_LOGGING_LEVEL: INFO
enabled: true
"""


def test_the_mvp_format_is_accepted_verbatim(tmp_path: Path) -> None:
    state = _validate(tmp_path, {"users/alice/qwen.yaml": MVP})
    assert state.ok
    [spec] = state.specs
    assert (spec.user_id, spec.suffix, spec.num_replicas, spec.gpus_per_replica) == \
        ("alice", "qwen-0.5b", 2, 1)
    assert spec.resolved_source == f"{tmp_path}/private/hf/Qwen/Qwen2.5-0.5B-Instruct"
    assert spec.model_source == "$HOME/common/hf/Qwen/Qwen2.5-0.5B-Instruct"
    assert dict(spec.engine_kwargs) == {"max_model_len": 8192}
    assert dict(spec.env) == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert (spec.source_file, spec.line, spec.enabled) == ("users/alice/qwen.yaml", 1, True)


@pytest.mark.parametrize(
    ("doc", "platform", "fields"),
    [
        (HEAD, "H20", {"num_replicas": 1, "gpus_per_replica": 1, "cpus_per_replica": 1.0,
                       "autoscaling": None, "enabled": True}),
        (HEAD, "cpu", {"num_replicas": 1, "gpus_per_replica": 0, "cpus_per_replica": 1.0}),
        (HEAD + "gpus_per_replica: 0\ncpus_per_replica: 4\n", "cpu",
         {"gpus_per_replica": 0, "cpus_per_replica": 4.0}),
        ("apiVersion: servesync/v1\nkind: ServingModel\n" + HEAD, "gpu", {"suffix": "m"}),
        (HEAD + "enabled: false\n", "gpu", {"enabled": False}),
        (HEAD + "autoscaling: {max_replicas: 4}\n", "gpu",
         {"num_replicas": None, "autoscaling": Autoscaling(1, 4, 2.0, None)}),
        (HEAD + "autoscaling: {min_replicas: 0, max_replicas: 1, target_ongoing_requests: 8,"
         " idle_timeout_s: 60}\n", "gpu",
         {"autoscaling": Autoscaling(0, 1, 8.0, 60.0)}),
        ("model_id: m\nmodel_source: Qwen/Qwen2.5-0.5B\n", "gpu",
         {"resolved_source": "Qwen/Qwen2.5-0.5B"}),
    ],
)
def test_valid_documents_and_defaults(tmp_path: Path, doc: str, platform: str,
                                      fields: dict[str, object]) -> None:
    state = _validate(tmp_path, {"users/alice/m.yaml": doc}, platform)
    assert state.issues() == ()
    [spec] = state.specs
    assert {k: getattr(spec, k) for k in fields} == fields


def test_a_bad_document_never_hides_the_good_ones(tmp_path: Path) -> None:
    """An invalid document holds back no other; a YAML syntax error ends the reading of
    its file (tests/unit/desired/test_loading.py), so it holds back none before it."""
    text = ("model_id: a\nmodel_source: org/a\n---\n"
            "model_id: c\nmodel_source: /etc/c\n---\nmodel_id: d\nmodel_source: org/d\n"
            "---\nmodel_id: [b\n")
    state = _validate(tmp_path, {"users/alice/f.yaml": text, "users/bob/g.yaml": "x: [",
                                 "users/bob/h.yaml": "model_id: e\nmodel_source: org/e\n"})
    assert sorted(s.suffix for s in state.specs) == ["a", "d", "e"]
    [f, g, h] = state.files
    assert [d.ok for d in f.documents] == [True, False, True, False]
    assert (f.ok, g.ok, h.ok) == (False, False, True)
    assert state.held_names == {("alice", "c")}
    assert state.held_files == {"users/alice/f.yaml", "users/bob/g.yaml"}


def test_errors_name_the_line_of_the_field(tmp_path: Path) -> None:
    text = ("# header\nmodel_id: ok\nmodel_source: org/x\n---\n# second\n"
            "model_id: m2\nmodel_source: org/y\nengine_kwargs:\n  dtype: half\n"
            "  trust_remote_code: true\nenv:\n  lower: x\n")
    state = _validate(tmp_path, {"users/alice/f.yaml": text})
    rendered = [i.render() for i in state.issues()]
    assert rendered == [
        "users/alice/f.yaml:10: 403 /engine_kwargs/trust_remote_code: engine_kwargs key "
        "'trust_remote_code' is never allowed: it names code to import or run (a module, "
        "class or plugin, or the model's own remote code)",
        "users/alice/f.yaml:12: 400 /env/lower: name 'lower' does not match "
        "^[A-Z_][A-Z0-9_]*(?!\\n)$",
    ]


def test_missing_fields_point_at_the_document(tmp_path: Path) -> None:
    state = _validate(tmp_path, {"users/alice/f.yaml": "# c\n\nenabled: true\n"})
    assert {(i.line, i.pointer) for i in state.issues()} == {(3, "/model_id"),
                                                            (3, "/model_source")}


def test_unknown_fields_get_a_suggestion(tmp_path: Path) -> None:
    state = _validate(tmp_path, {"users/alice/f.yaml": HEAD + "num_replica: 2\n"})
    [issue] = state.issues()
    assert "did you mean 'num_replicas'" in issue.message
    assert issue.line == 3


@pytest.mark.parametrize(
    ("files", "conflicting"),
    [
        ({"users/alice/a.yaml": HEAD + "---\n" + HEAD}, [("users/alice/a.yaml", 1),
                                                         ("users/alice/a.yaml", 4)]),
        ({"users/alice/a.yaml": HEAD, "users/alice/sub/b.yml": "# x\n" + HEAD},
         [("users/alice/a.yaml", 1), ("users/alice/sub/b.yml", 2)]),
        ({"users/alice/a.yaml": HEAD, "users/alice/b.yaml": HEAD + "num_replicas: 0\n"},
         [("users/alice/a.yaml", 1), ("users/alice/b.yaml", 1)]),
        ({"users/alice/a.yaml": HEAD, "users/bob/a.yaml": HEAD}, []),
    ],
)
def test_duplicate_model_ids_conflict_and_both_are_reported(
    tmp_path: Path, files: dict[str, str], conflicting: list[tuple[str, int]]
) -> None:
    state = _validate(tmp_path, files)
    found = sorted((i.file, i.line) for i in state.issues() if i.code == E409)
    assert found == conflicting
    assert all(i.pointer == "/model_id" for i in state.issues() if i.code == E409)
    if conflicting:
        assert not any(s.user_id == "alice" for s in state.specs)
        assert ("alice", "m") in state.held_names
        other = f"{conflicting[1][0]}:{conflicting[1][1]}"
        assert any(other in i.message for i in state.issues() if i.code == E409)


def test_misplaced_files_are_400_at_file_level(tmp_path: Path) -> None:
    state = _validate(tmp_path, {"models/m.yaml": HEAD, "users/m.yaml": HEAD,
                                 "users/alice/m.yaml": HEAD})
    assert [(f.path, [i.code for i in f.issues]) for f in state.files] == [
        ("models/m.yaml", [E400]), ("users/alice/m.yaml", []), ("users/m.yaml", [E400])]
    assert [s.suffix for s in state.specs] == ["m"]


# Files outside users/<user_id>/: each a 400 at file level that names no user, so it
# holds back no model. (id, the misplaced files)
MISPLACED = [
    ("a top-level model file", ["m.yaml"]),
    ("a copy of alice's file at the top", ["a.yaml"]),
    ("top-level tooling", ["mkdocs.yml"]),
    ("a sub-folder", ["models/alice/a.yaml"]),
    ("users/ itself", ["users/a.yaml"]),
    ("several", ["a.yaml", "alice/a.yml", "users/b.yaml"]),
]


@pytest.mark.parametrize("misplaced", [c[1] for c in MISPLACED], ids=[c[0] for c in MISPLACED])
def test_misplaced_files_hold_back_no_model(tmp_path: Path, misplaced: list[str]) -> None:
    state = _validate(tmp_path, {"users/alice/a.yaml": HEAD.replace(": m", ": a", 1),
                                 **dict.fromkeys(misplaced, HEAD)})
    assert [s.name for s in state.specs] == [("alice", "a")]
    assert sorted((i.file, i.code, i.line, i.message) for i in state.issues()) == sorted(
        (rel, E400, 0, "not under users/<user_id>/: ignored") for rel in misplaced)
    assert state.held_names == frozenset()
    assert state.held_files == frozenset(misplaced)  # no model is ever recorded from these
    assert not state.ok


B_DOC = HEAD.replace(": m", ": b", 1)

# alice ran a and b; then her tree changes. (id, the new files besides a's, plan shape)
PLANS = [
    ("b.yaml moved to the top: b is removed", {"b.yaml": B_DOC},
     [("record", "b"), ("gateway", "a")]),
    ("b.yaml moved to a sub-folder: b is removed", {"stray/b.yaml": B_DOC},
     [("record", "b"), ("gateway", "a")]),
    ("a stray file beside b: nothing changes", {"users/alice/b.yaml": B_DOC, "b.yaml": B_DOC},
     []),
    ("b.yaml broken in place: b is held", {"users/alice/b.yaml": "model_id: [b\n"}, []),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in PLANS],
                         ids=[c[0] for c in PLANS])
def test_the_planner_is_not_held_back_by_misplaced_files(
    tmp_path: Path, files: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    state = _validate(tmp_path, {"users/alice/a.yaml": HEAD.replace(": m", ": a", 1),
                                 **files})
    a = next(s for s in state.specs if s.suffix == "a")
    recs = (plancases.record(a),
            plancases.record(replace(a, suffix="b", source_file="users/alice/b.yaml")))
    running = plancases.observed(*((r, AppStatus.RUNNING) for r in recs),
                                 (naming.GATEWAY_APP, AppStatus.RUNNING))
    gateway = GatewayRecord(tuple(sorted((r.public_id, r.app_name) for r in recs)),
                            plancases.T0.isoformat())
    actions = plan(desired=state, recorded={r.model_key: r for r in recs}, observed=running,
                   gateway=gateway, now=plancases.at(100), deploy_timeout_s=600)
    shape = [(str(x.kind), ",".join(m[0].rsplit("-", 1)[-1] for m in x.members))
             if isinstance(x, UpdateGateway) else (str(x.kind), x.record.suffix)
             for x in actions if isinstance(x, UpdateGateway | RecordOnly)]
    assert shape == expected
    assert len(shape) == len(actions)


def test_a_tick_reports_misplaced_files_in_status_and_deploys_the_rest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "desired"
    for rel in ("users/alice/a.yaml", "a.yaml", "models/b.yml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("model_id: a\nmodel_source: $HOME/common/hf/tiny\n")
    (root / ".pre-commit-config.yaml").write_text("repos: []\n")
    (tmp_path / "private" / "hf" / "tiny").mkdir(parents=True)
    config = Config(state_dir=str(tmp_path / "state"), status_dir=str(tmp_path / "status"),
                    storage_root=str(tmp_path / "private"),
                    serving=ServingConfig(accelerator_type="cpu"))
    Path(config.state_dir).mkdir()
    ray, times = FakeRay(), iter(range(5, 500, 5))
    rec = Reconciler(config, store=Store(Path(config.state_dir)), applier=ray,
                     clock=lambda: plancases.at(next(times)),
                     publisher=StatusFiles(Path(config.status_dir), config.serving))
    snap = Snapshot(root=root, revision="r1", error=None, watch_paths=())
    for _ in range(4):
        result = rec.tick(snap)
        ray.settle()
    [model] = rec.store.models().values()
    assert (model.user_id, model.suffix, model.state) == ("alice", "a", State.RUNNING)
    assert result.settled and not result.converged  # like any invalid file
    assert result.errors == ("a.yaml:0: 400 /: not under users/<user_id>/: ignored",
                             "models/b.yml:0: 400 /: not under users/<user_id>/: ignored")
    index = json.loads((Path(config.status_dir) / "index.json").read_text())
    assert [m["state"] for m in index["models"]] == ["RUNNING"]
    assert [(e["path"], e["code"]) for e in index["errors"]] == [("a.yaml", 400),
                                                                 ("models/b.yml", 400)]
    rec.store.close()


def test_an_empty_tree_is_valid_and_a_missing_one_raises(tmp_path: Path) -> None:
    state = _validate(tmp_path, {})
    assert state.ok and state.files == () and state.specs == ()
    with pytest.raises(SourceError):
        validate_tree(tmp_path / "absent", _config(tmp_path))


def test_the_revision_is_carried(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    state = validate_tree(tmp_path, _config(tmp_path), revision="abc123")
    assert state.revision == "abc123"


@pytest.mark.parametrize(("env", "secret"), [
    ('["HF_TOKEN=hf_abcdefSECRET123"]', "SECRET"),
    ("{HF_TOKEN: 4242424242}", "4242424242"),
    ("{HF_TOKEN: [hf_abcdefSECRET123]}", "SECRET"),
    ("hf_abcdefSECRET123", "SECRET"),
])
def test_env_values_never_appear_in_errors(desired_tree: Path, env: str, secret: str) -> None:
    (desired_tree / "users" / "alice" / "m.yaml").write_text(
        f"model_id: m\nmodel_source: org/m\nenv: {env}\n")
    state = validate_tree(desired_tree, Config())
    rendered = [i.render() for i in state.issues()]
    assert rendered and all("/env" in r for r in rendered)
    assert not any(secret in r for r in rendered), rendered
