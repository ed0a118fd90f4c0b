"""``servesync validate`` and ``servesync schema``: exit codes and output formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from servesync import cli, schemas
from servesync.desired.sources import DirectorySource
from servesync.errors import SourceError

GOOD = "model_id: m\nmodel_source: org/m\n"
BAD = "model_id: m\nmodel_source: org/m\nnum_replicas: 0\nfoo: 1\n"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Judge by built-in defaults unless a test passes --config."""
    monkeypatch.delenv("SERVESYNC_CONFIG", raising=False)
    monkeypatch.setattr("servesync.config.DEFAULT_CONFIG_PATH", str(tmp_path / "none.yaml"))
    return tmp_path


def test_a_valid_tree_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": GOOD})
    assert cli.main(["validate", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("ok: 1 files, 1 documents, 1 valid models")


def test_an_invalid_tree_exits_1_with_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": BAD, "users/alice/n.yaml": GOOD,
                            "stray/x.yaml": GOOD})
    assert cli.main(["validate", str(root)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "stray/x.yaml:0: 400 /: not under users/<user_id>/: ignored",
        "users/alice/m.yaml:1: 409 /model_id: model_id 'm' of user 'alice' is also declared "
        "at users/alice/n.yaml:1",
        "users/alice/m.yaml:3: 422 /num_replicas: 0 is less than the minimum of 1",
        "users/alice/m.yaml:4: 400 /foo: unknown field 'foo'",
        "users/alice/n.yaml:1: 409 /model_id: model_id 'm' of user 'alice' is also declared "
        "at users/alice/m.yaml:1",
    ]
    assert err.startswith("invalid: 3 files, 2 documents, 0 valid models; 5 errors in 3 files")


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": GOOD + "---\n" + "model_id: [\n",
                            "users/x.yaml": GOOD})
    assert cli.main(["validate", str(root), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    [alice, stray] = data["files"]
    assert (alice["path"], alice["ok"], alice["errors"]) == ("users/alice/m.yaml", False, [])
    assert [(d["model_id"], d["ok"]) for d in alice["documents"]] == [("m", True), (None, False)]
    [error] = alice["documents"][1]["errors"]
    assert set(error) == {"code", "line", "pointer", "message"}
    assert (error["code"], error["line"], error["pointer"]) == (400, 4, "")
    assert stray["documents"] == []
    assert [e["code"] for e in stray["errors"]] == [400]


def test_json_of_a_valid_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": GOOD})
    assert cli.main(["validate", str(root), "--format=json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["files"][0]["documents"][0]["errors"] == []


def test_the_config_decides_the_platform(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": GOOD + "gpus_per_replica: 1\n"})
    cfg = tmp_path / "servesync.yaml"
    cfg.write_text("serving: {accelerator_type: cpu}\n")
    assert cli.main(["validate", str(root)]) == 0
    assert cli.main(["validate", str(root), "--config", str(cfg)]) == 1


def test_the_default_path_is_the_configured_source(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": BAD})
    cfg = tmp_path / "servesync.yaml"
    cfg.write_text(f"source: {{path: {root}}}\n")
    assert cli.main(["validate", "--config", str(cfg)]) == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["validate", "{tmp}/absent"], "not a directory"),
        (["validate", "{tmp}", "--config", "{tmp}/missing.yaml"], "config file not found"),
        (["validate", "{tmp}", "--config", "{tmp}/bad.yaml"], "'nope' was unexpected"),
        (["validate", "--config", "{tmp}/git.yaml"], "git URL"),
        (["validate", "{tmp}", "--format", "xml"], "invalid choice"),
        (["schema", "nope"], "unknown schema"),
        (["frobnicate"], "invalid choice"),
        ([], "usage"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             argv: list[str], words: str) -> None:
    (tmp_path / "bad.yaml").write_text("serving: {nope: 1}\n")
    (tmp_path / "git.yaml").write_text("source: {git_url: 'https://example.com/r.git'}\n")
    assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert words in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit 0 all valid, 1 any invalid, 2 usage error" in text


@pytest.mark.parametrize("name", ["serving-model", "servesync-config"])
def test_schema_prints_the_schema(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", name]) == 0
    assert json.loads(capsys.readouterr().out) == schemas.load(name)


def test_the_installed_console_script(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"users/alice/m.yaml": BAD})
    script = Path(sys.executable).parent / "servesync"
    env = {"PATH": "/usr/bin:/bin", "SERVESYNC_CONFIG": str(tmp_path / "c.yaml")}
    (tmp_path / "c.yaml").write_text("serving: {accelerator_type: cpu}\n")
    done = subprocess.run([str(script), "validate", str(root)], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1
    assert "users/alice/m.yaml:3: 422 /num_replicas" in done.stdout
    assert done.stderr.startswith("invalid: ")


# --- a reader that stops early (`servesync validate . | head`) ----------------------

# 20 issues are shown per file, so spread them: 400 files of 20 errors, ~1 MB of
# output, far more than a pipe holds.
MANY_ERRORS = {f"users/a/m{i}.yaml": "x: 1\n---\n" * 7 for i in range(400)}

# (id, argv, lines read before the pipe is closed, the tree's files)
BROKEN_PIPES = [
    ("validate | head -1", ["validate", "{tree}"], 1, MANY_ERRORS),
    ("validate --format json | head -1", ["validate", "{tree}", "--format", "json"], 1,
     MANY_ERRORS),
    ("a valid tree as json, nothing read", ["validate", "{tree}", "--format", "json"], 0,
     {"users/a/m.yaml": GOOD}),
    ("schema, nothing read", ["schema", "serving-model"], 0, {}),
    ("status, nothing read", ["status"], 0, {}),
]


@pytest.mark.parametrize(("argv", "lines", "files"), [c[1:] for c in BROKEN_PIPES],
                         ids=[c[0] for c in BROKEN_PIPES])
def test_a_closed_stdout_ends_quietly_with_exit_1(
    tmp_path: Path, argv: list[str], lines: int, files: dict[str, str]
) -> None:
    root = _tree(tmp_path, files)
    status = tmp_path / "status"
    status.mkdir()
    (status / "index.json").write_text(json.dumps({"tick": 1, "models": []}))
    (tmp_path / "c.yaml").write_text(f"status_dir: {status}\n")
    env = {"PATH": "/usr/bin:/bin", "SERVESYNC_CONFIG": str(tmp_path / "c.yaml")}
    command = [sys.executable, "-m", "servesync", *(a.format(tree=root) for a in argv)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for _ in range(lines):
            assert proc.stdout.readline()
        proc.stdout.close()  # as `head` does once it has its lines
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err
    assert (code, err) == (1, "")


# --- a tree without users/: the daemon refuses it, so validate fails it ------------

NO_USERS = "no users/ folder in the desired-state folder"

# (id, files, the per-file lines that follow the tree's own line)
WITHOUT_USERS = [
    ("an empty folder", {}, []),
    ("only a README", {"README.md": "# models\n"}, []),
    ("users is a file", {"users": "alice\n"}, []),
    ("model files beside users/", {"alice/m.yaml": GOOD},
     ["alice/m.yaml:0: 400 /: not under users/<user_id>/: ignored"]),
    ("a folder named user", {"user/alice/m.yaml": GOOD},
     ["user/alice/m.yaml:0: 400 /: not under users/<user_id>/: ignored"]),
]


@pytest.mark.parametrize(("files", "more"), [c[1:] for c in WITHOUT_USERS],
                         ids=[c[0] for c in WITHOUT_USERS])
def test_a_tree_without_users_is_invalid_in_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], more: list[str]
) -> None:
    root = _tree(tmp_path, files)
    assert cli.main(["validate", str(root)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"users/:0: 400 /: {NO_USERS}: the daemon refuses this tree (a wrong path?); "
        "model files go under users/<user_id>/",
        *more,
    ]
    assert err.startswith(f"invalid: {NO_USERS}; {len(more)} files, 0 documents, "
                          "0 valid models")


@pytest.mark.parametrize(("files", "more"), [c[1:] for c in WITHOUT_USERS],
                         ids=[c[0] for c in WITHOUT_USERS])
def test_a_tree_without_users_is_invalid_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], more: list[str]
) -> None:
    root = _tree(tmp_path, files)
    assert cli.main(["validate", str(root), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    [error] = data["errors"]
    assert (error["path"], error["code"], error["line"], error["pointer"]) == \
        ("users/", 400, 0, "")
    assert error["message"].startswith(NO_USERS)
    assert [f["path"] for f in data["files"]] == [line.split(":")[0] for line in more]


@pytest.mark.parametrize(
    "files",
    [{}, {"users/alice/m.yaml": GOOD}, {"users/.gitkeep": ""}, {"users": "x\n"},
     {"alice/m.yaml": GOOD}, {"users/alice/m.yaml": BAD}],
    ids=["empty", "a model", "empty users/", "users is a file", "beside users/", "invalid"],
)
def test_validate_and_the_daemon_agree_on_the_users_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str]
) -> None:
    root = _tree(tmp_path, files)
    try:
        DirectorySource(root).refresh()
        refused = False
    except SourceError as e:
        refused = NO_USERS in str(e)
        assert refused, e
    code = cli.main(["validate", str(root), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert bool(data["errors"]) is refused
    if refused:
        assert code == 1 and data["ok"] is False


def test_an_empty_users_folder_is_valid(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path, {"users/.gitkeep": ""})
    assert cli.main(["validate", str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["errors"], data["files"]) == (True, [], [])


# --- YAML files outside users/<user_id>/: reported, never silently skipped ---------

# (id, the tree's files, exit code, stdout lines)
OUTSIDE_USERS = [
    ("a top-level model file", {"users/alice/m.yaml": GOOD, "m.yaml": GOOD}, 1,
     ["m.yaml:0: 400 /: not under users/<user_id>/: ignored"]),
    ("a top-level .yml", {"users/alice/m.yaml": GOOD, "bob.yml": GOOD}, 1,
     ["bob.yml:0: 400 /: not under users/<user_id>/: ignored"]),
    ("a sub-folder", {"users/alice/m.yaml": GOOD, "models/bob/m.yaml": GOOD}, 1,
     ["models/bob/m.yaml:0: 400 /: not under users/<user_id>/: ignored"]),
    ("tooling in dot-files and dot-folders", {
        "users/alice/m.yaml": GOOD, ".pre-commit-config.yaml": "repos: []\n",
        ".github/workflows/ci.yml": "on: push\n", ".gitlab-ci.yml": "x: 1\n",
        "README.md": "# models\n", "docs/.hidden.yaml": "x: 1\n"}, 0, []),
]


@pytest.mark.parametrize(("files", "code", "lines"), [c[1:] for c in OUTSIDE_USERS],
                         ids=[c[0] for c in OUTSIDE_USERS])
def test_yaml_outside_users_is_reported_and_the_rest_still_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], code: int,
    lines: list[str],
) -> None:
    root = _tree(tmp_path, files)
    assert cli.main(["validate", str(root)]) == code
    out, err = capsys.readouterr()
    assert out.splitlines() == lines
    assert f"{1 + len(lines)} files, 1 documents, 1 valid models" in err


def test_the_example_desired_state_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "desired_state"
    assert (example / ".pre-commit-config.yaml").is_file()
    assert cli.main(["validate", str(example)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("ok: ")
