"""Validation of ``aliases``: the name syntax (400, from the schema) and one
alias per user across the tree (409, every place reported), each issue with
its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from servesync.desired.specs import DesiredState
from servesync.desired.validating import validate_tree
from servesync.errors import IssueCode

HEAD = "model_id: {m}\nmodel_source: org/{m}\n"
E400, E409 = IssueCode.INVALID, IssueCode.CONFLICT


def validate(tmp_path: Path, files: dict[str, str]) -> DesiredState:
    root = tmp_path / "tree"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    config = Config(storage_root=str(tmp_path / "private"),
                    serving=ServingConfig(accelerator_type="cpu"))
    return validate_tree(root, config)


def doc(aliases: str, m: str = "m") -> str:
    return HEAD.format(m=m) + f"aliases: {aliases}\n"


# (id, the aliases value as YAML, expected (code, pointer, line) issues, words of the message)
BAD = [
    ("upper case", "[Chat]", [(E400, "/aliases/0", 3)], "'Chat' does not match"),
    ("starts with a digit", "[1chat]", [(E400, "/aliases/0", 3)], "does not match"),
    ("ends with a hyphen", "[chat-]", [(E400, "/aliases/0", 3)], "does not match"),
    ("underscore", "[my_chat]", [(E400, "/aliases/0", 3)], "does not match"),
    ("too long", f"[{'a' * 64}]", [(E400, "/aliases/0", 3)], "does not match"),
    ("empty", "['']", [(E400, "/aliases/0", 3)], "does not match"),
    ("a newline", '["chat\\n"]', [(E400, "/aliases/0", 3)], "does not match"),
    ("a number", "[7]", [(E400, "/aliases/0", 3)], "expected string"),
    ("shaped like a public id", "[chat, x-202601061230-m]", [(E400, "/aliases/1", 3)],
     "12 digits"),
    ("a public id's tail", "[202601061230-m]", [(E400, "/aliases/0", 3)] * 2, "12 digits"),
    ("not a list", "chat", [(E400, "/aliases", 3)], "expected array"),
    ("repeated", "[chat, chat]", [(E400, "/aliases", 3)], "repeated items"),
    ("too many", "[" + ", ".join(f"a{i}" for i in range(9)) + "]", [(E400, "/aliases", 3)],
     "at most 8 items"),
    ("block list, second bad", "\n  - chat\n  - Bad", [(E400, "/aliases/1", 5)],
     "does not match"),
]


@pytest.mark.parametrize(("aliases", "expected", "words"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_aliases_are_400_with_file_line_and_field(
        tmp_path: Path, aliases: str, expected: list[tuple[IssueCode, str, int]],
        words: str) -> None:
    state = validate(tmp_path, {"users/alice/m.yaml": doc(aliases)})
    found = sorted((i.code, i.pointer, i.line) for i in state.issues())
    assert found == sorted(expected)
    assert all(i.file == "users/alice/m.yaml" for i in state.issues())
    assert any(words in i.message for i in state.issues()), state.issues()
    assert state.specs == ()
    assert ("alice", "m") in state.held_names  # a recorded model keeps its last good version


@pytest.mark.parametrize("aliases", ["[chat]", "[a, qwen2.5-chat, x-2026-m, b1]",
                                     f"[{'a' * 63}]", "[x-20260106123-m]", "[]"])
def test_good_aliases_reach_the_spec_as_written(tmp_path: Path, aliases: str) -> None:
    state = validate(tmp_path, {"users/alice/m.yaml": doc(aliases)})
    assert state.issues() == ()
    (s,) = state.specs
    assert list(s.aliases) == [a.strip() for a in aliases.strip("[]").split(",") if a]


def test_no_aliases_is_none(tmp_path: Path) -> None:
    (s,) = validate(tmp_path, {"users/alice/m.yaml": HEAD.format(m="m")}).specs
    assert s.aliases == () and s.to_json()["aliases"] == []


@pytest.mark.parametrize(
    ("files", "conflicting"),
    [
        # two files of one user: both reported, each at its alias's line
        ({"users/alice/a.yaml": doc("[chat]", "a"),
          "users/alice/b.yaml": "# b\n" + doc("[x, chat]", "b")},
         [("users/alice/a.yaml", 3, "/aliases/0"), ("users/alice/b.yaml", 4, "/aliases/1")]),
        # two documents of one file
        ({"users/alice/a.yaml": doc("[chat]", "a") + "---\n" + doc("[chat]", "b")},
         [("users/alice/a.yaml", 3, "/aliases/0"), ("users/alice/a.yaml", 7, "/aliases/0")]),
        # three places: each names the two others
        ({"users/alice/a.yaml": doc("[chat]", "a"), "users/alice/b.yaml": doc("[chat]", "b"),
          "users/alice/sub/c.yml": doc("[chat]", "c")},
         [("users/alice/a.yaml", 3, "/aliases/0"), ("users/alice/b.yaml", 3, "/aliases/0"),
          ("users/alice/sub/c.yml", 3, "/aliases/0")]),
        # a document invalid for another reason still holds its alias
        ({"users/alice/a.yaml": doc("[chat]", "a") + "num_replicas: 0\n",
          "users/alice/b.yaml": doc("[chat]", "b")},
         [("users/alice/a.yaml", 3, "/aliases/0"), ("users/alice/b.yaml", 3, "/aliases/0")]),
        # another user may use the same alias: bob-chat is another name
        ({"users/alice/a.yaml": doc("[chat]", "a"), "users/bob/b.yaml": doc("[chat]", "b")}, []),
        # an alias equal to another model's model_id is no conflict (alice-a vs alice-<ts>-a)
        ({"users/alice/a.yaml": doc("[b]", "a"), "users/alice/b.yaml": doc("[x]", "b")}, []),
    ],
)
def test_one_alias_in_two_documents_of_a_user_is_409_on_both(
        tmp_path: Path, files: dict[str, str],
        conflicting: list[tuple[str, int, str]]) -> None:
    state = validate(tmp_path, files)
    conflicts = [i for i in state.issues() if i.code == E409]
    assert sorted((i.file, i.line, i.pointer) for i in conflicts) == conflicting
    for issue in conflicts:
        others = [f"{f}:{line}" for f, line, _ in conflicting if (f, line) != (issue.file,
                                                                              issue.line)]
        assert all(o in issue.message for o in others), issue.message
        assert "alias 'chat' of user 'alice'" in issue.message
    if conflicting:
        assert not any(s.user_id == "alice" for s in state.specs)


def test_the_409_names_the_other_model(tmp_path: Path) -> None:
    state = validate(tmp_path, {"users/alice/a.yaml": doc("[chat]", "a"),
                                "users/alice/b.yaml": doc("[chat]", "b")})
    by_file = {i.file: i.message for i in state.issues()}
    assert "users/alice/b.yaml:3 (model_id 'b')" in by_file["users/alice/a.yaml"]
    assert "users/alice/a.yaml:3 (model_id 'a')" in by_file["users/alice/b.yaml"]
    assert "last good aliases" in by_file["users/alice/a.yaml"]


def test_an_alias_in_another_users_names_is_403(tmp_path: Path) -> None:
    """alice's ``x-chat`` would be called ``alice-x-chat``: with a user
    ``alice-x`` on the cluster, every ``alice-x-*`` name is theirs."""
    state = validate(tmp_path, {"users/alice/a.yaml": doc("[x-chat, mine]", "a"),
                                "users/alice-x/b.yaml": doc("[chat]", "b")})
    (issue,) = state.issues()
    assert (issue.code, issue.file, issue.line, issue.pointer) == \
        (IssueCode.FORBIDDEN, "users/alice/a.yaml", 3, "/aliases/0")
    assert "'alice-x-chat'" in issue.message and "user 'alice-x'" in issue.message
    assert {s.user_id for s in state.specs} == {"alice-x"}  # alice's model is held
    alone = validate(tmp_path / "2", {"users/alice/a.yaml": doc("[x-chat]", "a")})
    assert alone.issues() == () or list(alone.issues()) == []
