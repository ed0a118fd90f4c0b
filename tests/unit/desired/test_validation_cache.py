"""The validation cache: unchanged files are not checked again, and nothing a
file's result depends on beyond its text (the config, other files, the model
folder on disk) is taken from the cache. Real files, real folders, real symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from servesync.desired import validating
from servesync.desired.specs import DesiredState
from servesync.desired.validating import ValidationCache, validate_tree
from servesync.errors import IssueCode

MODEL = "model_id: {name}\nmodel_source: $HOME/common/hf/{name}\ncpus_per_replica: 1\n"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(tree, storage root): three valid files of alice, each with its model folder."""
    tree, storage = tmp_path / "tree", tmp_path / "private"
    (tree / "users" / "alice").mkdir(parents=True)
    (storage / "users" / "bob" / "secret").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (storage / "hf" / name).mkdir(parents=True)
        (storage / "hf" / name / "config.json").write_text("{}")
        (tree / "users" / "alice" / f"{name}.yaml").write_text(MODEL.format(name=name))
    return tree, storage


def config(storage: Path, **serving: object) -> Config:
    return Config(storage_root=str(storage),
                  serving=ServingConfig(accelerator_type="cpu", **serving))  # type: ignore[arg-type]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every document ``validating._check`` really checks."""
    seen: list[str] = []
    real = validating._check

    def counting(doc, file, cfg, limit):  # type: ignore[no-untyped-def]
        seen.append(file.path)
        return real(doc, file, cfg, limit)

    monkeypatch.setattr(validating, "_check", counting)
    return seen


def same_as_uncached(state: DesiredState, tree: Path, cfg: Config) -> None:
    assert state == validate_tree(tree, cfg, revision=state.revision)


def test_unchanged_files_are_not_checked_again(world: tuple[Path, Path],
                                               checks: list[str]) -> None:
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    first = validate_tree(tree, cfg, cache=cache)
    assert len(checks) == 3 and len(first.specs) == 3
    checks.clear()
    again = validate_tree(tree, cfg, cache=cache)
    assert checks == [] and cache.checked == 3
    assert again == first
    (tree / "users" / "alice" / "b.yaml").write_text(MODEL.format(name="b") + "num_replicas: 2\n")
    changed = validate_tree(tree, cfg, cache=cache)
    assert checks == ["users/alice/b.yaml"]
    assert {s.suffix: s.num_replicas for s in changed.specs} == {"a": 1, "b": 2, "c": 1}
    checks.clear()
    same_as_uncached(changed, tree, cfg)


def test_a_changed_config_checks_every_file_again(world: tuple[Path, Path],
                                                  checks: list[str]) -> None:
    tree, storage = world
    cache = ValidationCache()
    validate_tree(tree, config(storage), cache=cache)
    checks.clear()
    refused = validate_tree(tree, config(storage, env_allowed=()), cache=cache)
    assert sorted(checks) == [f"users/alice/{n}.yaml" for n in "abc"]
    assert refused.ok  # no env in these files: the same verdicts, but really checked


def test_a_model_folder_swapped_under_an_unchanged_file_is_revoked(
        world: tuple[Path, Path], checks: list[str]) -> None:
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    assert validate_tree(tree, cfg, cache=cache).ok
    checks.clear()
    folder = storage / "hf" / "b"
    (folder / "config.json").unlink()
    folder.rmdir()
    os.symlink(storage / "users" / "bob" / "secret", folder)
    state = validate_tree(tree, cfg, cache=cache)
    assert checks == ["users/alice/b.yaml"]  # its source resolved differently: checked afresh
    assert [s.suffix for s in state.specs] == ["a", "c"]
    assert list(state.revoked) == [("alice", "b")]
    same_as_uncached(state, tree, cfg)


def test_an_entry_swapped_inside_a_model_folder_is_seen(world: tuple[Path, Path]) -> None:
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    assert validate_tree(tree, cfg, cache=cache).ok
    (storage / "hf" / "c" / "config.json").unlink()
    os.symlink(storage / "users" / "bob" / "secret", storage / "hf" / "c" / "config.json")
    state = validate_tree(tree, cfg, cache=cache)
    assert list(state.revoked) == [("alice", "c")]


def test_a_duplicate_in_a_new_file_conflicts_with_a_cached_one(
        world: tuple[Path, Path], checks: list[str]) -> None:
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    validate_tree(tree, cfg, cache=cache)
    checks.clear()
    (tree / "users" / "alice" / "z.yaml").write_text(MODEL.format(name="a"))
    state = validate_tree(tree, cfg, cache=cache)
    assert checks == ["users/alice/z.yaml"]
    conflicts = sorted(i.file for i in state.issues() if i.code is IssueCode.CONFLICT)
    assert conflicts == ["users/alice/a.yaml", "users/alice/z.yaml"]
    (tree / "users" / "alice" / "z.yaml").unlink()
    assert validate_tree(tree, cfg, cache=cache).ok  # and the cached a.yaml is clean again


def test_a_file_moved_to_another_user_is_checked_as_theirs(
        world: tuple[Path, Path], checks: list[str]) -> None:
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    validate_tree(tree, cfg, cache=cache)
    checks.clear()
    (tree / "users" / "bob").mkdir()
    (tree / "users" / "alice" / "a.yaml").rename(tree / "users" / "bob" / "a.yaml")
    state = validate_tree(tree, cfg, cache=cache)
    assert checks == ["users/bob/a.yaml"]
    assert sorted((s.user_id, s.suffix) for s in state.specs) == [
        ("alice", "b"), ("alice", "c"), ("bob", "a")]


@pytest.mark.parametrize(("before", "after"), [("1", "true"), ("true", "1"), ("1", "1.0")])
def test_a_value_python_calls_equal_is_still_a_change(world: tuple[Path, Path], before: str,
                                                      after: str) -> None:
    """``1``, ``true`` and ``1.0`` are equal in Python, not in the schema: the
    cache tells files apart by their text, so the verdict is the uncached one."""
    tree, storage = world
    cfg, cache = config(storage), ValidationCache()
    path = tree / "users" / "alice" / "b.yaml"
    path.write_text(MODEL.format(name="b") + f"num_replicas: {before}\n")
    validate_tree(tree, cfg, cache=cache)
    path.write_text(MODEL.format(name="b") + f"num_replicas: {after}\n")
    cached = validate_tree(tree, cfg, cache=cache)
    same_as_uncached(cached, tree, cfg)
    integer = after != "true"  # JSON Schema counts 1.0 as an integer
    assert any(s.suffix == "b" for s in cached.specs) is integer


def test_an_overlong_model_source_is_refused_before_it_is_resolved(
        world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The path helpers keep memos: a source past 4,096 characters (PATH_MAX)
    is a 400 from the schema and never reaches them (or a memo's memory)."""
    from servesync.desired import model_paths

    tree, storage = world
    expanded: list[str] = []
    real = model_paths.expand
    monkeypatch.setattr(model_paths, "expand",
                        lambda text, *a, **k: expanded.append(text) or real(text, *a, **k))
    (tree / "users" / "alice" / "long.yaml").write_text(
        "model_id: long\nmodel_source: $HOME/" + "x" * 5000 + "\ncpus_per_replica: 1\n")
    state = validate_tree(tree, config(storage))
    (issue,) = [i for i in state.issues() if i.file == "users/alice/long.yaml"]
    assert issue.code is IssueCode.INVALID and "/model_source" in issue.render()
    assert "is too long (at most 4096 characters)" in issue.render()
    assert not any(len(text) > 4096 for text in expanded)
