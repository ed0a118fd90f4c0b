"""Reading desired-state files (servesync.desired.loading): walk, limits, YAML, line map."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from servesync.desired import loading
from servesync.desired.loading import LoadedFile, RawDocument
from servesync.errors import IssueCode

GOOD = "model_id: m\nmodel_source: org/name\n"


def _write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _only(text: str) -> RawDocument:
    docs = loading.parse_text(text, rel="users/a/f.yaml")
    assert len(docs) == 1
    return docs[0]


# --- line map -------------------------------------------------------------------------

LINES = """\
# comment
model_id: m
engine_kwargs:
  max_model_len: 10
  a/b~c: 1
env:
  X: "1"
list:
  - one
  - two: 2
"""


@pytest.mark.parametrize(
    ("pointer", "line"),
    [
        ("", 2),
        ("/model_id", 2),
        ("/engine_kwargs", 3),
        ("/engine_kwargs/max_model_len", 4),
        ("/engine_kwargs/a~1b~0c", 5),
        ("/env/X", 7),
        ("/list/0", 9),
        ("/list/1/two", 10),
        ("/env/Y", 6),  # missing: the nearest parent
        ("/nope/deeper", 2),  # no parent either: the document
    ],
)
def test_every_key_has_a_line(pointer: str, line: int) -> None:
    assert _only(LINES).line_of(pointer) == line


def test_values_are_plain_python() -> None:
    doc = _only(LINES)
    assert doc.issues == ()
    assert doc.data == {
        "model_id": "m",
        "engine_kwargs": {"max_model_len": 10, "a/b~c": 1},
        "env": {"X": "1"},
        "list": ["one", {"two": 2}],
    }


def test_documents_keep_their_own_lines_and_skip_empty_ones() -> None:
    text = "---\n---\nmodel_id: a\n---\n# only a comment\n---\nmodel_id: b\nx: 1\n...\n"
    docs = loading.parse_text(text, rel="f")
    assert [d.data for d in docs] == [{"model_id": "a"}, {"model_id": "b", "x": 1}]
    assert [d.index for d in docs] == [0, 1]
    assert [d.line for d in docs] == [3, 7]
    assert docs[1].line_of("/x") == 8


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n", "---\n...\n"])
def test_empty_files_have_no_documents(text: str) -> None:
    assert loading.parse_text(text, rel="f") == ()


# --- refused YAML ---------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

REFUSED = [
    # (text, line of the issue, pointer, words)
    ("a: [1, 2\nb: 3\n", 2, "", "invalid YAML"),
    ("a: b: c\n", 1, "", "invalid YAML"),
    ("a: \"unterminated\n", 1, "", "invalid YAML"),
    ("base: &b 1\nother: *b\n", 1, "", "anchors and aliases"),
    ("x: *nothing\n", 1, "", "invalid YAML"),
    (BOMB, 1, "", "anchors and aliases"),
    ("a: 1\na: 2\n", 2, "/a", "duplicate key"),
    ("1: x\n", 1, "", "must be a string"),
    ("? [a, b]\n: c\n", 1, "", "must be a string"),
    ("<<: {a: 1}\n", 1, "", "merge keys"),
    ("a: !!python/object:os.system x\n", 1, "/a", "not allowed"),
    ("a: !custom x\n", 1, "/a", "not allowed"),
    ("when: 2024-01-01\n", 1, "/when", "timestamp"),
    ("blob: !!binary aGVsbG8=\n", 1, "/blob", "binary"),
    ("x: !!set {a, b}\n", 1, "/x", "not allowed"),
    ("n: .nan\n", 1, "/n", "NaN"),
    ("n: -.inf\n", 1, "/n", "infinite"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", 1, "", "nested deeper"),
    ("a: \x07\n", 1, "", "invalid YAML"),
]


@pytest.mark.parametrize(("text", "line", "pointer", "words"), REFUSED)
def test_refused_yaml_is_an_invalid_document(
    text: str, line: int, pointer: str, words: str
) -> None:
    doc = _only(text)
    assert doc.data is None
    assert [(i.code, i.line, i.pointer) for i in doc.issues][:1] == \
        [(IssueCode.INVALID, line, pointer)]
    assert words in doc.issues[0].message


def test_an_alias_bomb_is_refused_quickly() -> None:
    start = time.perf_counter()
    _only(BOMB)
    assert time.perf_counter() - start < 0.5


def test_deep_nesting_is_refused_quickly() -> None:
    start = time.perf_counter()
    doc = _only("a: " + "[" * 100_000 + "]" * 100_000)
    assert "nested deeper" in doc.issues[0].message
    assert time.perf_counter() - start < 1.0


def test_a_bad_document_keeps_the_ones_before_it_and_stops_reading() -> None:
    """Reading stops at the first YAML error (the rest can't be read reliably, and
    retrying part by part cost seconds): the documents before it are kept, the
    error is the last document and says that nothing after it is read."""
    text = "model_id: a\n---\nmodel_id: [b\n---\nmodel_id: c\nx: &y 1\n---\nmodel_id: d\n"
    docs = loading.parse_text(text, rel="f")
    assert [d.data for d in docs] == [{"model_id": "a"}, None]
    assert [d.issues[0].line for d in docs if d.issues] == [3]  # not the next '---' (line 4)
    assert [d.line for d in docs] == [1, 3]
    assert "nothing after line 3 is read" in docs[1].issues[0].message


@pytest.mark.parametrize(("text", "lines"), [
    ("model_id: a\n---\nx: &y 1\n---\nmodel_id: d\n", [1, 3]),  # an anchor stops it too
    ("model_id: a\n---\n\n# c\n---\n  x: [1\n", [1, 6]),
    ("a: 1\n...\nfoo: : bar\n", [1, 3]),
])
def test_reading_stops_at_the_first_error_of_any_kind(text: str, lines: list[int]) -> None:
    docs = loading.parse_text(text, rel="f")
    assert [d.line for d in docs] == lines
    assert docs[0].issues == () and docs[-1].data is None
    assert [i.line for i in docs[-1].issues] == lines[-1:]


def test_quoted_numbers_stay_strings_and_yaml11_booleans_are_booleans() -> None:
    doc = _only('a: "1"\nb: yes\nc: 0x10\nd: 1.5\ne: null\nf: ~\n')
    assert doc.data == {"a": "1", "b": True, "c": 16, "d": 1.5, "e": None, "f": None}


# --- files and the tree ----------------------------------------------------------------


def _load(root: Path) -> dict[str, LoadedFile]:
    return {f.path: f for f in loading.load_tree(root)}


def test_which_files_are_read(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "users/alice/a.yaml": GOOD,
        "users/alice/deep/b.yml": GOOD,
        "users/alice/C.YAML": GOOD,
        "users/alice/notes.txt": "not yaml",
        "users/alice/.hidden.yaml": GOOD,
        "users/.secret/x.yaml": GOOD,
        ".github/workflows/ci.yml": "on: push\n",
        ".pre-commit-config.yaml": "repos: []\n",
        "README.md": "# hi\n",
    })
    loaded = _load(root)
    assert sorted(loaded) == ["users/alice/C.YAML", "users/alice/a.yaml",
                              "users/alice/deep/b.yml"]
    assert all(f.user_id == "alice" and not f.issues for f in loaded.values())


# Repository tooling, never a desired-state file: a dot-file or anything under a
# dot-folder, at any depth, and files that are not YAML.
IGNORED = [
    ".pre-commit-config.yaml",
    ".gitlab-ci.yml",
    ".yamllint.yaml",
    ".github/workflows/ci.yml",
    ".github/dependabot.yml",
    ".config/deep/x.yaml",
    "docs/.hidden.yaml",
    "docs/.drafts/m.yaml",
    "README.md",
    "models.json",
    "notes/m.yaml.txt",
    "users/.keep/m.yaml",
]


@pytest.mark.parametrize("rel", IGNORED)
def test_tooling_outside_users_is_ignored(tmp_path: Path, rel: str) -> None:
    loaded = _load(_write(tmp_path, {rel: GOOD, "users/alice/m.yaml": GOOD}))
    assert list(loaded) == ["users/alice/m.yaml"]


@pytest.mark.parametrize(
    ("rel", "code", "words"),
    [
        ("users/x.yaml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("models/alice/x.yaml", IssueCode.INVALID, "not under users/<user_id>/"),
        # top-level model files: a user who forgot users/<user_id>/ is told so
        ("m.yaml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("alice.yml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("Model.YAML", IssueCode.INVALID, "not under users/<user_id>/"),
        ("mkdocs.yml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("alice/m.yaml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("docs/examples/m.yml", IssueCode.INVALID, "not under users/<user_id>/"),
        ("users/Alice/x.yaml", IssueCode.INVALID, "not a valid user id"),
        ("users/-bob/x.yaml", IssueCode.INVALID, "not a valid user id"),
        ("users/" + "a" * 33 + "/x.yaml", IssueCode.INVALID, "not a valid user id"),
    ],
)
def test_misplaced_files_are_reported(tmp_path: Path, rel: str, code: IssueCode,
                                      words: str) -> None:
    loaded = _load(_write(tmp_path, {rel: GOOD}))
    assert list(loaded) == [rel]
    [issue] = loaded[rel].issues
    assert (issue.code, issue.file, issue.line, issue.pointer) == (code, rel, 0, "")
    assert words in issue.message
    assert loaded[rel].documents == ()


def test_misplaced_files_do_not_hide_the_valid_ones(tmp_path: Path) -> None:
    loaded = _load(_write(tmp_path, {"m.yaml": GOOD, "stray/n.yml": GOOD,
                                     "users/alice/m.yaml": GOOD}))
    assert [(f.path, f.user_id, len(f.issues), len(f.documents))
            for f in loaded.values()] == [
        ("m.yaml", None, 1, 0), ("stray/n.yml", None, 1, 0), ("users/alice/m.yaml", "alice", 0, 1)]


@pytest.mark.parametrize("rel", ["m.yaml", "stray/m.yaml"])
@pytest.mark.parametrize("kind", ["big", "fifo", "symlink", "bad utf-8"])
def test_misplaced_files_are_reported_unread(tmp_path: Path, rel: str, kind: str) -> None:
    """Outside users/ a file is only named, never opened: no size, type or link can
    make the walk read it or block on it."""
    root = _write(tmp_path, {"users/alice/m.yaml": GOOD})
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "big":
        path.write_text("# " + "x" * loading.MAX_FILE_BYTES + "\n")
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "symlink":
        os.symlink("/etc/passwd", path)
    else:
        path.write_bytes(b"model_id: \xff\n")
    loaded = _load(root)
    [issue] = loaded[rel].issues
    assert (issue.code, issue.line, issue.message) == \
        (IssueCode.INVALID, 0, "not under users/<user_id>/: ignored")
    assert loaded[rel].documents == ()
    assert loaded["users/alice/m.yaml"].issues == ()


def test_a_symlinked_folder_outside_users_is_not_followed(tmp_path: Path) -> None:
    root = _write(tmp_path / "tree", {"users/alice/m.yaml": GOOD})
    _write(tmp_path / "outside", {"m.yaml": GOOD})
    os.symlink(tmp_path / "outside", root / "linked")
    assert list(_load(root)) == ["users/alice/m.yaml"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"users/alice/m.yaml": GOOD}, None),
        ({"users/.gitkeep": ""}, None),
        ({}, "no users/ folder in the desired-state folder"),
        ({"alice/m.yaml": GOOD}, "no users/ folder in the desired-state folder"),
        ({"users": "a file\n"}, "no users/ folder in the desired-state folder"),
    ],
)
def test_users_dir_problem(tmp_path: Path, files: dict[str, str], problem: str | None) -> None:
    root = _write(tmp_path / "tree", files)
    root.mkdir(exist_ok=True)
    assert loading.users_dir_problem(root) == problem


def test_files_over_the_limit_are_refused_unread(tmp_path: Path) -> None:
    big = "# " + "x" * loading.MAX_FILE_BYTES + "\n"
    loaded = _load(_write(tmp_path, {"users/a/big.yaml": big, "users/a/ok.yaml": GOOD}))
    assert "byte limit" in loaded["users/a/big.yaml"].issues[0].message
    assert loaded["users/a/big.yaml"].issues[0].code == IssueCode.INVALID
    assert loaded["users/a/ok.yaml"].issues == ()


def test_exactly_the_limit_is_fine(tmp_path: Path) -> None:
    text = GOOD + "#" * (loading.MAX_FILE_BYTES - len(GOOD) - 1) + "\n"
    loaded = _load(_write(tmp_path, {"users/a/f.yaml": text}))
    assert loaded["users/a/f.yaml"].issues == ()


@pytest.mark.parametrize(("content", "words"), [
    (b"model_id: \xff\xfe\n", "not UTF-8"),
    ("model_id: m\n".encode("utf-16"), "not UTF-8"),
])
def test_undecodable_files_are_refused(tmp_path: Path, content: bytes, words: str) -> None:
    loaded = _load(_write(tmp_path, {"users/a/f.yaml": content}))
    assert words in loaded["users/a/f.yaml"].issues[0].message


def test_special_files_are_not_read(tmp_path: Path) -> None:
    root = _write(tmp_path, {"users/a/ok.yaml": GOOD})
    os.mkfifo(root / "users/a/pipe.yaml")  # reading it would block forever
    loaded = _load(root)
    assert "not a regular file" in loaded["users/a/pipe.yaml"].issues[0].message


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    loaded = _load(_write(tmp_path, {"users/a/f.yaml": b"\xef\xbb\xbf" + GOOD.encode()}))
    assert loaded["users/a/f.yaml"].documents[0].data == {"model_id": "m",
                                                          "model_source": "org/name"}


def test_symlinks_under_users_are_forbidden(tmp_path: Path) -> None:
    root = _write(tmp_path, {"users/bob/x.yaml": GOOD, "elsewhere/y.yaml.txt": GOOD})
    (root / "users/alice").mkdir()
    os.symlink(root / "users/bob/x.yaml", root / "users/alice/x.yaml")
    os.symlink(root / "users/bob", root / "users/alice/linked")
    os.symlink(root / "users/bob", root / "users/carol")
    loaded = _load(root)
    for rel in ("users/alice/x.yaml", "users/alice/linked", "users/carol"):
        assert [i.code for i in loaded[rel].issues] == [IssueCode.FORBIDDEN], rel
        assert loaded[rel].documents == ()
    assert loaded["users/bob/x.yaml"].issues == ()


def test_the_file_path_and_user_are_recorded_in_issues(tmp_path: Path) -> None:
    loaded = _load(_write(tmp_path, {"users/dave/m.yaml": "a: [\n"}))
    [doc] = loaded["users/dave/m.yaml"].documents
    assert doc.issues[0].file == "users/dave/m.yaml"
    assert loaded["users/dave/m.yaml"].user_id == "dave"


@pytest.mark.parametrize("value", [
    "!!int hunter2isMyPassword", "!!float CorrectHorseBatteryStaple",
    "98765432109876543210987654321", "1" + "0" * 400 + ".5", "!!bool sk-verysecretvalue",
])
def test_an_env_value_that_fails_to_parse_is_never_quoted(value: str) -> None:
    text = f"model_id: m\nenv:\n  VLLM_LOGGING_LEVEL: {value}\n"
    (doc,) = loading.parse_text(text, rel="users/alice/m.yaml")
    assert doc.issues and all(i.pointer == "/env/VLLM_LOGGING_LEVEL" for i in doc.issues)
    secret = value.split()[-1]
    for issue in doc.issues:
        assert "(value not shown)" in issue.message
        assert secret[:12] not in issue.render() and secret[-6:] not in issue.render()


# --- reads: unchanged files are not opened again ----------------------------------------


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real = os.open

    def spy(path: str, *args: object, **kwargs: object) -> int:
        opened.append(os.path.basename(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loading.os, "open", spy)
    return opened


def test_a_file_whose_stamp_holds_is_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write(tmp_path, {"users/a/one.yaml": GOOD, "users/a/two.yaml": GOOD})
    reads = loading.Reads()
    reads.now_ns = lambda: time.time_ns() + 10 * loading.RACY_NS  # both files are old news
    first = loading.load_tree(root, reads=reads)
    opened = _opened(monkeypatch)
    again = loading.load_tree(root, reads=reads)
    assert opened == [] and again == first
    (root / "users/a/two.yaml").write_text("model_id: n\nmodel_source: org/name\n")
    changed = {f.path: f for f in loading.load_tree(root, reads=reads)}
    assert opened == ["two.yaml"]
    assert changed["users/a/two.yaml"].documents[0].data["model_id"] == "n"


def test_a_file_changed_just_before_it_was_read_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git's racily-clean rule: a same-size rewrite within the clock's grain
    could keep the stamp, so a file this young is not trusted to it."""
    root = _write(tmp_path, {"users/a/one.yaml": GOOD})
    reads = loading.Reads()
    loading.load_tree(root, reads=reads)  # written a moment ago: not kept
    opened = _opened(monkeypatch)
    loading.load_tree(root, reads=reads)
    assert opened == ["one.yaml"]


def test_a_file_swapped_for_a_symlink_after_the_stat_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lstat saw a regular file; by the open it is a link to another user's file."""
    root = _write(tmp_path, {"users/a/f.yaml": GOOD, "users/b/secret.yaml": GOOD})
    real_lstat = os.lstat

    def lstat_then_swap(path: str | os.PathLike[str]) -> os.stat_result:
        st = real_lstat(path)
        if str(path).endswith("users/a/f.yaml"):
            os.unlink(path)
            os.symlink(root / "users/b/secret.yaml", path)
        return st

    monkeypatch.setattr(loading.os, "lstat", lstat_then_swap)
    got = loading.load_file(root, "users/a/f.yaml")
    assert got.documents == () and "cannot read" in got.issues[0].message


def test_a_folder_swapped_for_a_symlink_after_the_stat_is_not_read_nor_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lstat saw alice's file; before the open her folder becomes a link to
    bob's (same file name): the read is refused, and nothing is kept under
    her file's stamp, so the next pass reads her own file."""
    root = _write(tmp_path, {"users/alice/sub/a.yaml": GOOD,
                             "users/bob/sub/a.yaml": "model_id: bobs\nmodel_source: org/x\n"})
    real_lstat = os.lstat
    swapped = []

    def lstat_then_swap(path: str | os.PathLike[str]) -> os.stat_result:
        st = real_lstat(path)
        if str(path).endswith("users/alice/sub/a.yaml") and not swapped:
            os.rename(root / "users/alice/sub", root / "users/alice/kept")
            os.symlink(root / "users/bob/sub", root / "users/alice/sub")
            swapped.append(True)
        return st

    reads = loading.Reads()
    reads.now_ns = lambda: time.time_ns() + 10 * loading.RACY_NS
    monkeypatch.setattr(loading.os, "lstat", lstat_then_swap)
    got = loading.load_file(root, "users/alice/sub/a.yaml", reads=reads)
    assert got.documents == () and "changed while being read" in got.issues[0].message
    monkeypatch.undo()
    os.unlink(root / "users/alice/sub")
    os.rename(root / "users/alice/kept", root / "users/alice/sub")
    again = loading.load_file(root, "users/alice/sub/a.yaml", reads=reads)
    assert again.documents[0].data["model_id"] == "m"
