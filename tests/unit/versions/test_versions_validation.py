"""Weighted versions in a model file (issue 11 part 1): schema and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from servesync.desired.specs import DesiredState
from servesync.desired.validating import ValidationCache, validate_tree
from servesync.errors import IssueCode

E400, E403, E409, E422 = (IssueCode.INVALID, IssueCode.FORBIDDEN, IssueCode.CONFLICT,
                          IssueCode.UNPROCESSABLE)
FILE = "users/alice/m.yaml"
CPU = ServingConfig(accelerator_type="cpu")
TWO = """model_id: m
num_replicas: 2
engine_kwargs: {max_model_len: 512}
versions:
  - name: stable
    model_source: $HOME/common/hf/org/a
    weight: 80
  - name: canary
    model_source: $HOME/common/hf/org/b
    weight: 20
    num_replicas: 1
"""


def validate_files(tmp_path: Path, files: dict[str, str], *,
                   serving: ServingConfig = CPU,
                   cache: ValidationCache | None = None) -> DesiredState:
    """``files`` (path in the tree: text) validated, the storage holding the
    models ``hf/org/a`` and ``hf/org/b``."""
    root = tmp_path / "tree"
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body, encoding="utf-8")
    for name in ("a", "b"):
        model = tmp_path / "private" / "hf" / "org" / name
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text("{}", encoding="utf-8")
    config = Config(storage_root=str(tmp_path / "private"), serving=serving)
    return validate_tree(root, config, cache=cache)


def _validate(tmp_path: Path, text: str, cache: ValidationCache | None = None) -> DesiredState:
    return validate_files(tmp_path, {FILE: text}, cache=cache)


def _found(state: DesiredState) -> list[tuple[IssueCode, str, int]]:
    return sorted((i.code, i.pointer, i.line) for i in state.issues())


def test_each_version_is_a_spec_with_the_model_level_defaults(tmp_path: Path) -> None:
    state = _validate(tmp_path, TWO)
    assert state.issues() == ()
    stable, canary = state.specs
    assert (stable.suffix, stable.version, stable.weight) == ("m@stable", "stable", 80)
    assert (canary.suffix, canary.version, canary.weight) == ("m@canary", "canary", 20)
    assert stable.resolved_source.endswith("/hf/org/a")
    assert canary.resolved_source.endswith("/hf/org/b")
    assert (stable.num_replicas, canary.num_replicas) == (2, 1)  # the model's, the version's
    assert stable.engine_kwargs == canary.engine_kwargs == {"max_model_len": 512}
    assert stable.spec_hash() != canary.spec_hash()


def test_weight_is_not_in_the_spec_hash(tmp_path: Path) -> None:
    before = _validate(tmp_path, TWO).specs
    after = _validate(tmp_path, TWO.replace("weight: 80", "weight: 50")
                      .replace("weight: 20", "weight: 50")).specs
    assert [s.spec_hash() for s in before] == [s.spec_hash() for s in after]
    assert [s.weight for s in after] == [50, 50]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(TWO.replace("weight: 20", "weight: 30"), [(E422, "/versions", 4)],
                 id="weights sum to 110"),
    pytest.param(TWO.replace("name: canary", "name: stable"),
                 [(E409, "/versions/0/name", 5), (E409, "/versions/1/name", 8)],
                 id="duplicate names, both lines"),
    pytest.param("model_id: m\nmodel_source: $HOME/common/hf/org/a\n" + TWO.split("\n", 1)[1],
                 [(E400, "/versions", 5)], id="both model_source and versions"),
    pytest.param("model_id: m\nnum_replicas: 1\n", [(E400, "/model_source", 1)],
                 id="neither model_source nor versions"),
    pytest.param(TWO.replace("name: canary", "name: Canary_1"),
                 [(E400, "/versions/1/name", 8)], id="name not a DNS label"),
    pytest.param(TWO.replace("weight: 20", "weight: 120"),
                 [(E422, "/versions/1/weight", 10)], id="weight above 100"),
    pytest.param(TWO.replace("$HOME/common/hf/org/b", "/etc"),
                 [(E403, "/versions/1/model_source", 9)], id="source outside the roots"),
    pytest.param(TWO.replace("    num_replicas: 1\n", "    gpus_per_replica: 1\n"),
                 [(E422, "/versions/1/gpus_per_replica", 11)], id="a version's knob is checked"),
    pytest.param(TWO.replace("max_model_len: 512", "tokenizer: x"),
                 [(E403, "/engine_kwargs/tokenizer", 3)], id="a model-level refusal once"),
])
def test_errors_name_file_line_field_and_class(
        tmp_path: Path, text: str, expected: list[tuple[IssueCode, str, int]]) -> None:
    state = _validate(tmp_path, text)
    found = _found(state)
    assert [(c, p) for c, p, _ in found] == [(c, p) for c, p, _ in expected], state.issues()
    assert found == sorted(expected)
    assert all(i.file == FILE for i in state.issues())
    assert state.specs == ()


@pytest.mark.parametrize(("extra", "pointer", "line", "words"), [
    pytest.param("    autoscaling: {max_replicas: 3}\n", "/versions/1/autoscaling", 12,
                 "num_replicas and autoscaling exclude each other", id="replicas"),
    pytest.param("    cpus_per_replica: 1\n    gpus_per_replica: 0\n"
                 "    parallelism: {tensor: 1}\n", "/versions/1/gpus_per_replica", 12,
                 "gpus_per_replica and parallelism exclude each other", id="parallelism"),
])
def test_a_version_may_not_set_both_of_two_exclusive_fields(
        tmp_path: Path, extra: str, pointer: str, line: int, words: str) -> None:
    """As at the model level (the schema's ``not``: a 400), a version setting
    both is refused; the message names the version, the issue its line and
    field. (One of the two at the model level and the other in the version is
    fine: the version's replaces the model's.)"""
    text = TWO + extra if extra.startswith("    auto") \
        else TWO.replace("    num_replicas: 1\n", extra)
    state = _validate(tmp_path, text)
    (issue,) = state.issues()
    assert (issue.code, issue.file, issue.pointer, issue.line) == (E400, FILE, pointer, line)
    assert issue.message.startswith("version 'canary': ") and words in issue.message
    assert state.specs == ()
    fine = TWO.replace("num_replicas: 2\n", "autoscaling: {max_replicas: 2}\n")
    assert _validate(tmp_path, fine).issues() == ()


def test_the_sum_is_in_the_message(tmp_path: Path) -> None:
    (issue,) = _validate(tmp_path, TWO.replace("weight: 20", "weight: 30")).issues()
    assert "sum to 110 (80 + 30)" in issue.message


def test_a_cached_pass_sees_a_version_source_turn_into_a_symlink_out(tmp_path: Path) -> None:
    cache = ValidationCache()
    assert len(_validate(tmp_path, TWO, cache).specs) == 2
    assert len(_validate(tmp_path, TWO, cache).specs) == 2
    assert cache.checked == 1  # unchanged file, same answers: reused
    folder = tmp_path / "private" / "hf" / "org" / "b"
    (folder / "config.json").unlink()
    folder.rmdir()
    folder.symlink_to("/etc")
    root = tmp_path / "tree"
    config = Config(storage_root=str(tmp_path / "private"),
                    serving=ServingConfig(accelerator_type="cpu"))
    state = validate_tree(root, config, cache=cache)  # the file itself is unchanged
    assert [(i.code, i.pointer) for i in state.issues()] == [(E403, "/versions/1/model_source")]
    assert cache.checked == 2  # a version's source answered otherwise: checked afresh


def test_a_cache_hit_merges_no_version(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached file's versions' sources are re-resolved every tick without a
    merged copy of the document per version."""
    from servesync.desired import versioning

    cache = ValidationCache()
    assert len(_validate(tmp_path, TWO, cache).specs) == 2
    merges: list[str] = []
    real = versioning.merged
    monkeypatch.setattr(versioning, "merged", lambda data, version: (
        merges.append(version["name"]), real(data, version))[1])
    assert [s.resolved_source[-5:] for s in _validate(tmp_path, TWO, cache).specs] == \
        ["org/a", "org/b"]
    assert cache.checked == 1 and merges == []  # a hit; each source checked, nothing merged
    _validate(tmp_path, TWO.replace("weight: 80", "weight: 70").replace("20", "30"), cache)
    assert cache.checked == 2 and set(merges) == {"stable", "canary"}  # a miss merges


def test_model_source_is_the_merged_documents() -> None:
    from servesync.desired import versioning

    data = {"model_source": "top", "versions": []}
    for version in ({"name": "a"}, {"name": "b", "model_source": "own"},
                    {"name": "c", "model_source": None}):
        assert versioning.model_source(data, version) == \
            versioning.merged(data, version).get("model_source")
    assert versioning.model_source({}, {"name": "a"}) is None


def test_a_missing_folder_is_not_a_validation_error(tmp_path: Path) -> None:
    """As for model_source: a path with no model yet is Ray's failure to load
    (that version FAILED, never routed), not the file's."""
    state = _validate(tmp_path, TWO.replace("$HOME/common/hf/org/b", "$HOME/models/none"))
    assert state.issues() == ()


def test_quotas_count_every_version(tmp_path: Path) -> None:
    """Two versions of 2 and 1 replicas are 3 replicas: over a quota of 2, a
    422 naming the version's line; each version counts as one model."""
    from servesync.config import Quota, Quotas
    from servesync.desired import quotas

    state = _validate(tmp_path, TWO)
    assert quotas.apply(state, (), Quotas(default=Quota(replicas=3))) is state
    refused = quotas.apply(state, (), Quotas(default=Quota(replicas=2)))
    (issue,) = refused.issues()
    assert (issue.code, issue.file) == (E422, FILE)
    assert issue.pointer == "/versions/1/num_replicas" and issue.line == 11
    assert refused.specs == ()
    assert quotas.apply(state, (), Quotas(default=Quota(models=1))).specs == ()
