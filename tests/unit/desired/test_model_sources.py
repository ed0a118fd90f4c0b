"""Hostile model sources through validation: which are refused, and which
refusals *revoke* a model (``DesiredState.revoked``: the planner stops it)
rather than hold it at its last-known-good spec. Real folders, real symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from servesync.desired.specs import DesiredState
from servesync.desired.validating import recheck_held, validate_tree
from servesync.errors import IssueCode

E400, E403 = IssueCode.INVALID, IssueCode.FORBIDDEN


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "private"
    for d in ("hf/org/model", "users/alice/models/good", "users/bob/secret"):
        (root / d).mkdir(parents=True)
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            (root / d / name).write_text(f"{name} of {d}\n")
    return root


def _config(storage: Path, **serving: object) -> Config:
    return Config(storage_root=str(storage),
                  serving=ServingConfig(accelerator_type="cpu", **serving))  # type: ignore[arg-type]


def _validate(storage: Path, files: dict[str, str], **serving: object) -> DesiredState:
    tree = storage.parent / "tree"
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text, encoding="utf-8")
    return validate_tree(tree, _config(storage, **serving))


def _doc(source: str, extra: str = "") -> str:
    return f"model_id: m\nmodel_source: {source}\n{extra}"


def _evil(storage: Path) -> None:
    """alice's folder: her own config, bob's tokenizer and weights (attack a)."""
    folder = storage / "users/alice/models/evil"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for name in ("tokenizer.json", "model.safetensors"):
        (folder / name).symlink_to(storage / "users/bob/secret" / name)


# (id, model_source, refused with, revoked)
SOURCES = [
    ("a folder of my own", "$HOME/models/good", None, False),
    ("a hub cache folder", "$HOME/common/hf/org/model", None, False),
    ("a hub id", "org/model", None, False),
    ("not there yet: a path in my home", "$HOME/models/later", None, False),
    ("files linked to bob's (a)", "$HOME/models/evil", E403, True),
    ("etc/passwd is no hub id (c)", "etc/passwd", E403, True),
    ("tmp/evil-model is no hub id (c)", "tmp/evil-model", E403, True),
    ("bob's folder", "/private-root/users/bob/secret", E403, True),
    ("a relative path", "models/a/b", E400, False),  # 400: not a path rule, held
]


@pytest.mark.parametrize(("source", "code", "revoked"), [c[1:] for c in SOURCES],
                         ids=[c[0] for c in SOURCES])
def test_sources(storage: Path, source: str, code: IssueCode | None, revoked: bool) -> None:
    _evil(storage)
    state = _validate(storage, {"users/alice/m.yaml": _doc(
        source.replace("/private-root", str(storage)))})
    assert [(i.code, i.pointer) for i in state.issues()] == (
        [(code, "/model_source")] if code else [])
    assert (("alice", "m") in state.revoked) is revoked


def test_the_revocation_says_which_file_leaves(storage: Path) -> None:
    _evil(storage)
    state = _validate(storage, {"users/alice/m.yaml": _doc("$HOME/models/evil")})
    (issue,) = state.issues()
    assert issue.line == 2
    assert issue.message.startswith(
        f"model.safetensors in {storage}/users/alice/models/evil is a symlink that leads out")
    assert state.revoked == {("alice", "m"): f"model_source $HOME/models/evil: {issue.message}"}


def test_a_source_that_appears_later_as_a_symlink_out_is_revoked(storage: Path) -> None:
    """Attack (b): accepted while it does not exist, refused once it is a link to bob's."""
    files = {"users/alice/m.yaml": _doc("$HOME/models/later")}
    assert _validate(storage, files).ok
    (storage / "users/alice/models/later").symlink_to(storage / "users/bob/secret")
    state = _validate(storage, files)
    assert [i.code for i in state.issues()] == [E403]
    assert ("alice", "m") in state.revoked


@pytest.mark.parametrize("extra", [
    "num_replicas: many\n",  # a schema error too
    "gpus_per_replica: 2\n",  # a 422 on a CPU cluster too
])
def test_a_refused_source_with_other_issues_is_held_not_revoked(storage: Path,
                                                                extra: str) -> None:
    _evil(storage)
    state = _validate(storage, {"users/alice/m.yaml": _doc("$HOME/models/evil", extra)})
    assert len(state.issues()) == 2 and state.revoked == {}
    assert ("alice", "m") in state.held_names  # recheck_held looks at what it runs from


def test_a_conflict_is_no_revocation(storage: Path) -> None:
    _evil(storage)
    state = _validate(storage, {"users/alice/m.yaml": _doc("$HOME/models/evil"),
                                "users/alice/n.yaml": _doc("$HOME/models/good")})
    assert state.revoked == {}


def test_forbidding_hub_ids_revokes_hub_models(storage: Path) -> None:
    state = _validate(storage, {"users/alice/m.yaml": _doc("org/model")}, allow_hub_ids=False)
    assert ("alice", "m") in state.revoked


# --- recheck_held: the recorded source of a held model -----------------------------


def _recorded(storage: Path, folder: str, source_file: str = "users/alice/m.yaml"
              ) -> tuple[tuple[str, str], str, str, None]:
    return ("alice", "m"), source_file, str(storage / "users/alice/models" / folder), None


@pytest.mark.parametrize(("text", "folder", "revoked"), [
    ("model_id: m\nmodel_source: [unclosed\n", "evil", True),  # file-level parse error
    (_doc("$HOME/models/good", "num_replicas: many\n"), "evil", True),  # text changed too
    ("model_id: m\nmodel_source: [unclosed\n", "good", False),  # recorded source still fine
    (_doc("$HOME/models/evil"), "evil", True),  # revoked by the document already
    (_doc("$HOME/models/good"), "evil", False),  # valid spec: the planner deploys it
])
def test_a_held_model_is_revoked_when_its_recorded_source_fails(
        storage: Path, text: str, folder: str, revoked: bool) -> None:
    _evil(storage)
    state = _validate(storage, {"users/alice/m.yaml": text})
    rechecked = recheck_held(state, [_recorded(storage, folder)], _config(storage))
    assert (("alice", "m") in rechecked.revoked) is revoked
    if revoked and ("alice", "m") not in state.revoked:
        assert rechecked.revoked[("alice", "m")].startswith(
            f"model_source {storage}/users/alice/models/evil (as last deployed; "
            "users/alice/m.yaml has errors): model.safetensors in")


def test_an_undeclared_model_is_not_rechecked(storage: Path) -> None:
    """No longer declared (not held): the planner deletes it anyway."""
    _evil(storage)
    state = _validate(storage, {"users/alice/n.yaml": _doc("$HOME/models/good")})
    rechecked = recheck_held(state, [_recorded(storage, "evil")], _config(storage))
    assert rechecked is state and rechecked.revoked == {}
