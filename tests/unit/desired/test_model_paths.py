"""model_source macros and location rules (servesync.desired.model_paths), as tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servesync.desired.model_paths import Rejection, expand, is_hub_id, resolve_model_source
from servesync.errors import IssueCode

ROOT = "/private"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("$HOME", "/private/users/alice"),
        ("$HOME/models/x", "/private/users/alice/models/x"),
        ("$HOME/common/hf", "/private/hf"),
        ("$HOME/common/hf/Qwen/Qwen2.5", "/private/hf/Qwen/Qwen2.5"),
        ("$HOME/common/datasets/d1", "/private/datasets/d1"),
        ("$HOME/common/hfx/y", "/private/users/alice/common/hfx/y"),
        ("$HOME/common", "/private/users/alice/common"),
        ("$HOMEX/y", "$HOMEX/y"),
        ("/private/hf/a", "/private/hf/a"),
        ("Qwen/Qwen2.5", "Qwen/Qwen2.5"),
    ],
)
def test_expand(source: str, expected: str) -> None:
    assert expand(source, user_id="alice", storage_root=ROOT) == expected


def test_expand_uses_the_configured_root() -> None:
    assert expand("$HOME/common/hf/m", user_id="u", storage_root="/data/") == "/data/hf/m"


@pytest.mark.parametrize(
    ("source", "hub"),
    [("Qwen/Qwen2.5-0.5B-Instruct", True), ("org/name", True), ("a/b/c", False),
     ("/abs/path", False), ("$HOME/x", False), ("name", False), ("./x/y", False),
     # Hugging Face's repo id rules
     ("_org/name_", True), ("o/" + "n" * 96, True), ("o/" + "n" * 97, False),
     ("org/na--me", False), ("org/name.git", False), ("org/a..b", False), ("org/-name", False),
     ("org/name.", False), ("./name", False), ("../name", False), ("org/.", False),
     ("org/caf\u00e9", False), ("org/na me", False)],
)
def test_is_hub_id(source: str, hub: bool) -> None:
    assert is_hub_id(source) is hub


ACCEPTED = [
    ("$HOME/common/hf/Qwen/Qwen2.5", True, "/private/hf/Qwen/Qwen2.5"),
    ("$HOME/models/ft", True, "/private/users/alice/models/ft"),
    ("/private/hf/org/model", True, "/private/hf/org/model"),
    ("/private/users/alice/m", True, "/private/users/alice/m"),
    ("/private//hf/./org/model/", True, "/private/hf/org/model"),
    ("Qwen/Qwen2.5-0.5B-Instruct", True, "Qwen/Qwen2.5-0.5B-Instruct"),
]


@pytest.mark.parametrize(("source", "hub", "expected"), ACCEPTED)
def test_accepted(source: str, hub: bool, expected: str) -> None:
    got = resolve_model_source(source, user_id="alice", storage_root=ROOT,
                               allow_hub_ids=hub, check_realpath=False)
    assert got == expected


REJECTED = [
    # (source, allow_hub_ids, code, words in the message)
    ("", True, IssueCode.INVALID, "empty"),
    ("   ", True, IssueCode.INVALID, "empty"),
    ("/private/hf/a\nb", True, IssueCode.INVALID, "control"),
    ("$USER/x", True, IssueCode.INVALID, "unknown macro"),
    ("${HOME}/x", True, IssueCode.INVALID, "unknown macro"),
    ("models/a/b", True, IssueCode.INVALID, "absolute"),
    ("~/models/a", True, IssueCode.INVALID, "absolute"),
    ("$HOME/../bob/x", True, IssueCode.FORBIDDEN, ".."),
    ("/private/hf/../users/bob", True, IssueCode.FORBIDDEN, ".."),
    ("org/..", True, IssueCode.FORBIDDEN, ".."),
    ("/private/users/bob/model", True, IssueCode.FORBIDDEN, "another user's folder ('bob')"),
    ("/private/users/alicex/model", True, IssueCode.FORBIDDEN, "another user's folder"),
    ("/etc/passwd", True, IssueCode.FORBIDDEN, "outside the storage root"),
    ("/privateer/hf/x", True, IssueCode.FORBIDDEN, "outside the storage root"),
    ("/private/other/x", True, IssueCode.FORBIDDEN, "not under"),
    ("$HOME/common/datasets/d", True, IssueCode.FORBIDDEN, "not under"),
    ("$HOME/common/hf", True, IssueCode.FORBIDDEN, "not under"),
    ("$HOME", True, IssueCode.FORBIDDEN, "not under"),
    ("/private", True, IssueCode.FORBIDDEN, "not under"),
    ("Qwen/Qwen2.5", False, IssueCode.FORBIDDEN, "hub repo ids are not allowed"),
    # relative paths from / dressed as hub ids (attack c): replicas start in /
    ("etc/passwd", True, IssueCode.FORBIDDEN, "vLLM would read /etc/passwd"),
    ("tmp/evil-model", True, IssueCode.FORBIDDEN, "'tmp' is a top-level folder name"),
    ("dev/shm", True, IssueCode.FORBIDDEN, "top-level folder"),
    ("home/alice", True, IssueCode.FORBIDDEN, "top-level folder"),
    ("var/tmp", True, IssueCode.FORBIDDEN, "top-level folder"),
    ("private/users", True, IssueCode.FORBIDDEN, "top-level folder"),  # the storage root's
    ("etc/passwd", False, IssueCode.FORBIDDEN, "hub repo ids are not allowed"),
    ("tmp/../x", True, IssueCode.FORBIDDEN, ".."),
    ("org/na--me", True, IssueCode.INVALID, "absolute"),  # no hub id: a relative path
]


@pytest.mark.parametrize(("source", "hub", "code", "words"), REJECTED)
def test_rejected(source: str, hub: bool, code: IssueCode, words: str) -> None:
    got = resolve_model_source(source, user_id="alice", storage_root=ROOT,
                               allow_hub_ids=hub, check_realpath=False)
    assert isinstance(got, Rejection)
    assert got.code == code
    assert words in got.message


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "private"
    for d in ("hf/org/model", "users/alice/models", "users/bob/secret", "datasets"):
        (root / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("link", "target", "ok"),
    [
        ("users/alice/models/leak", "users/bob/secret", False),
        ("users/alice/models/etc", "/etc", False),
        ("hf/org/sneaky", "users/bob/secret", False),
        ("users/alice/models/cached", "hf/org/model", True),
    ],
)
def test_symlinks_are_followed(tmp_path: Path, link: str, target: str, ok: bool) -> None:
    root = _tree(tmp_path)
    os.symlink(target if target.startswith("/") else root / target, root / link)
    source = f"{root}/{link}/sub/weights"  # the leaf need not exist
    got = resolve_model_source(source, user_id="alice", storage_root=str(root))
    if ok:
        assert got == source
    else:
        assert isinstance(got, Rejection)
        assert got.code == IssueCode.FORBIDDEN
        assert "symlink" in got.message


def test_a_symlinked_storage_root_is_fine(tmp_path: Path) -> None:
    real = _tree(tmp_path)
    alias = tmp_path / "alias"
    os.symlink(real, alias)
    got = resolve_model_source("$HOME/models/m", user_id="alice", storage_root=str(alias))
    assert got == f"{alias}/users/alice/models/m"


@pytest.mark.parametrize(("storage_root", "source", "refused"),
                         [("/data/models", "data/x", True), ("/data/models", "private/x", False),
                          ("/", "org/x", False)])
def test_the_storage_roots_first_folder_is_no_hub_org(storage_root: str, source: str,
                                                       refused: bool) -> None:
    got = resolve_model_source(source, user_id="alice", storage_root=storage_root,
                               check_realpath=False)
    assert isinstance(got, Rejection) is refused


def test_an_org_that_is_a_folder_at_the_node_root_is_no_hub_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """/scratch, /data, /work...: a tenant who can write there could plant a model
    folder of symlinks, and vLLM (started in /) would read it for 'scratch/m'."""
    real = os.path.lexists
    monkeypatch.setattr("servesync.desired.model_paths.os.path.lexists",
                        lambda p: p == "/scratch" or real(p))
    got = resolve_model_source("scratch/m", user_id="alice", storage_root="/private",
                               allow_hub_ids=True)
    assert isinstance(got, Rejection) and got.code is IssueCode.FORBIDDEN
    assert "/scratch/m" in got.message
    assert resolve_model_source("some-org-that-is-no-folder/m", user_id="alice",
                                storage_root="/private", allow_hub_ids=True) \
        == "some-org-that-is-no-folder/m"
