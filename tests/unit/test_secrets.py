"""Secrets never leave the state file: each known leak, checked in every output.

For each case a desired tree holding a secret is run through ``servesync
validate`` (text and JSON, through ``cli.main``), a tick with the fake Ray
(``index.json``, ``models/*.json``, the tick's log records), ``servesync
status``, and the secret must be in none of them, while the state file keeps
env values (the planner needs them). Config files with a secret are loaded and
the error (and its traceback) must not quote it. A property test plants a
secret anywhere in generated documents.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from servesync import cli, config
from servesync.desired.sources import Snapshot
from servesync.errors import ConfigError, PermanentError
from tests.support.clock import FakeClock
from tests.support.fakeray import SettlingRay, make_reconciler

SK = "sk-proj-Q3xT9vLm2KpZr8WbNc4Y"
HF = "hf_QmZx81LkPqRtYvWs0NbHcJdEfGaU"
PASSWORD = "Zr8WbNc4YqT9pw"  # no token shape: only a URL's or env's place gives it away
URL = f"https://bot:{PASSWORD}@git.example.internal/x"
PLAIN = "correct-horse-battery-staple"  # an env value with no shape at all

HEAD = "model_id: m\nmodel_source: $HOME/common/hf/tiny\n"

# (id, model file text, the secret that must not appear)
LEAKS = [
    ("list-document", f"- env: {{OPENAI_API_KEY: {PLAIN}}}\n", PLAIN),
    ("string-document", f'"env: {{OPENAI_API_KEY: {PLAIN}}}"\n', PLAIN),
    ("plain-string-document", f"{PLAIN}\n", PLAIN),
    ("document-of-a-mapping-list", f"[{{env: {{A: {PLAIN}}}}}]\n", PLAIN),
    ("url-in-allowed-engine-key", HEAD + f"engine_kwargs: {{tool_call_parser: '{URL}'}}\n",
     PASSWORD),
    ("url-in-refused-engine-key", HEAD + f"engine_kwargs: {{some_key: '{URL}'}}\n", PASSWORD),
    ("token-in-allowed-engine-key", HEAD + f"engine_kwargs: {{tool_call_parser: {HF}}}\n", HF),
    ("token-inside-an-engine-value", HEAD + f"engine_kwargs: {{tool_call_parser: 'x {SK}'}}\n",
     SK),
    ("token-as-engine-key", HEAD + f"engine_kwargs: {{{SK}: 1}}\n", SK),
    ("token-as-env-name", HEAD + f"env: {{{SK}: x}}\n", SK),
    ("url-as-model-source", f"model_id: m\nmodel_source: '{URL}'\n", PASSWORD),
    ("token-as-model-id", f"model_id: {SK}\nmodel_source: org/m\n", SK),
    ("token-as-unknown-field", HEAD + f"{SK}: 1\n", SK),
    ("url-as-engine-key", HEAD + f"engine_kwargs: {{'{URL}': 1}}\n", PASSWORD),
    ("url-as-unknown-field", HEAD + f"'{URL}': 1\n", PASSWORD),
    ("mapping-under-kind", HEAD + f"kind: {{env: {{A: {PLAIN}}}}}\n", PLAIN),
    ("list-under-autoscaling", HEAD + f"autoscaling: [{PLAIN}]\n", PLAIN),
    ("env-value-of-wrong-type", HEAD + f"env: {{HF_TOKEN: [{PLAIN}]}}\n", PLAIN),
    ("env-value-refused-name", HEAD + f"env: {{HF_TOKEN: {PLAIN}}}\n", PLAIN),
    ("yaml-error-on-the-secret-line",
     HEAD + f'env: {{OPENAI_API_KEY: "{PLAIN}\n', PLAIN),
    ("yaml-mapping-error-on-the-secret-line",
     HEAD + f"env:\n  OPENAI_API_KEY: {PLAIN}: x\n", PLAIN),
    ("yaml-tab-on-the-secret-line", HEAD + f"env:\n\tOPENAI_API_KEY: {PLAIN}\n", PLAIN),
    ("duplicate-key", HEAD + f"engine_kwargs: {{{SK}: 1, {SK}: 2}}\n", SK),
    ("non-string-key", HEAD + f"engine_kwargs: {{? !!binary {SK}: 1}}\n", SK),
]


@pytest.fixture
def cfg_file(tmp_path: Path, desired_tree: Path, storage_root: Path) -> Path:
    path = tmp_path / "servesync.yaml"
    path.write_text(
        f"source: {{path: {desired_tree}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"status_dir: {tmp_path / 'status'}\nstorage_root: {storage_root}\n"
        "serving:\n  accelerator_type: cpu\n"
        "  env_allowed: [VLLM_LOGGING_LEVEL, OPENAI_API_KEY]\n")
    return path


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
         ) -> pytest.LogCaptureFixture:
    """Every record of servesync's loggers (setup_logging may have stopped propagation)."""
    monkeypatch.setattr(logging.getLogger("servesync"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    return caplog


def _outputs(cfg_file: Path, desired_tree: Path, capsys: pytest.CaptureFixture[str],
             logs: pytest.LogCaptureFixture, ray: SettlingRay | None = None) -> dict[str, str]:
    """Every place a tenant or a log reader could see: name -> text."""
    out: dict[str, str] = {}
    for fmt in ("text", "json"):
        cli.main(["validate", str(desired_tree), "--config", str(cfg_file), "--format", fmt])
        captured = capsys.readouterr()
        out[f"validate {fmt}"] = captured.out + captured.err
    cfg = config.load(cfg_file)
    rec = make_reconciler(cfg, ray or SettlingRay(), FakeClock(step_s=5))
    try:
        for _ in range(6):  # create, app up, join the gateway, gateway up, RUNNING
            rec.tick(Snapshot(root=desired_tree, revision="r1"))
    finally:
        rec.store.close()
    status = Path(cfg.status_dir)
    out["index.json"] = (status / "index.json").read_text()
    for path in sorted((status / "models").glob("*.json")):
        out[f"models/{path.name}"] = path.read_text()
    for args in (["status"], ["status", "--json"]):
        cli.main([*args, "--config", str(cfg_file)])
        captured = capsys.readouterr()
        out[" ".join(args)] = captured.out + captured.err
    out["logs"] = "\n".join(r.getMessage() for r in logs.records)
    return out


def _assert_absent(secret: str, outputs: dict[str, str]) -> None:
    leaks = [name for name, text in outputs.items() if secret in text]
    assert not leaks, f"{secret!r} leaked into {leaks}"


@pytest.mark.parametrize(("text", "secret"), [c[1:] for c in LEAKS], ids=[c[0] for c in LEAKS])
def test_a_secret_in_a_model_file_is_in_no_output(
        text: str, secret: str, cfg_file: Path, desired_tree: Path,
        capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture) -> None:
    (desired_tree / "users" / "alice" / "m.yaml").write_text(text)
    (desired_tree / "users" / "alice" / "ok.yaml").write_text(
        "model_id: ok\nmodel_source: $HOME/common/hf/tiny\n")  # so a tick deploys something
    outputs = _outputs(cfg_file, desired_tree, capsys, logs)
    assert '"state": "RUNNING"' in outputs["index.json"]
    _assert_absent(secret, outputs)


def test_env_values_stay_in_the_state_file_and_out_of_ray_errors(
        cfg_file: Path, desired_tree: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture) -> None:
    """Ray's and pydantic's errors may quote a deployment's config: the env value
    is taken out of the log line, the record's error and the status files."""
    (desired_tree / "users" / "alice" / "m.yaml").write_text(
        HEAD + f"env: {{OPENAI_API_KEY: {PLAIN}}}\n")
    ray = SettlingRay()
    ray.fail_next = PermanentError(
        f"cannot deploy: ValidationError: runtime_env input_value={{'OPENAI_API_KEY': "
        f"'{PLAIN}'}} via {URL}")
    outputs = _outputs(cfg_file, desired_tree, capsys, logs, ray)
    assert "FAILED" in outputs["index.json"] and "OPENAI_API_KEY" in outputs["models/" + next(
        n.split("/", 1)[1] for n in outputs if n.startswith("models/"))]
    assert "failed (permanent): cannot deploy" in outputs["logs"]
    _assert_absent(PLAIN, outputs)
    _assert_absent(PASSWORD, outputs)
    assert PLAIN in (tmp_path / "state" / "state.json").read_text()  # the planner's copy


# --- the daemon config ----------------------------------------------------------------

CONFIG_LEAKS = [
    ("yaml-error-unterminated-quote",
     f'serving:\n  replica_env:\n    OPENAI_API_KEY: "{PLAIN}\n    X: y\n', PLAIN),
    ("yaml-error-mapping-on-the-line",
     f"serving:\n  replica_env:\n    OPENAI_API_KEY: {PLAIN}: x\n", PLAIN),
    ("yaml-error-tab-on-the-line", f"serving:\n\tpw: {PLAIN}\n", PLAIN),
    ("yaml-error-flow", f"serving: {{replica_env: {{A: {PLAIN}]}}}}\n", PLAIN),
    ("not-a-mapping", f"- {URL}\n- {PLAIN}\n", PLAIN),
    ("source-of-wrong-type", f"source: [{URL}]\n", PASSWORD),
    ("serving-of-wrong-type", f"serving: [{PLAIN}]\n", PLAIN),
    ("replica-env-of-wrong-type", f"serving: {{replica_env: {{A: [{PLAIN}]}}}}\n", PLAIN),
    ("replica-env-not-a-mapping", f"serving: {{replica_env: [{PLAIN}]}}\n", PLAIN),
    ("token-as-allowed-key", f"serving: {{engine_kwargs_allowed: [{SK}]}}\n", SK),
    ("token-as-unknown-field", f"{SK}: 1\n", SK),
    ("url-beside-a-bad-field", f"source: {{git_url: '{URL}', branch: [1]}}\n", PASSWORD),
]


@pytest.mark.parametrize(("text", "secret"), [c[1:] for c in CONFIG_LEAKS],
                         ids=[c[0] for c in CONFIG_LEAKS])
def test_a_config_error_quotes_no_secret(
        text: str, secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "servesync.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    shown = "".join(traceback.format_exception(err.value))  # causes included
    assert str(path) in str(err.value)
    (tmp_path / "users").mkdir()
    assert cli.main(["validate", str(tmp_path), "--config", str(path)]) == 2
    captured = capsys.readouterr()
    _assert_absent(secret, {"ConfigError": shown, "validate": captured.out + captured.err})


def test_a_yaml_error_in_the_config_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "servesync.yaml"
    path.write_text(f"serving:\n  replica_env:\n    OPENAI_API_KEY: {PLAIN}: x\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line 3, column \d+: .*mapping values"):
        config.load(path)


# --- property: a secret planted anywhere ----------------------------------------------

SECRETS = [SK, HF, "ghp_" + "Zq7" * 12, "AKIAIOSFODNN7EXAMPLE", URL]
FIELDS = ["model_id", "model_source", "num_replicas", "autoscaling", "engine_kwargs", "env",
          "kind", "enabled"]


def _planted(secret: str) -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.just(secret), st.just(f"x {secret} y"), st.integers(), st.none(),
                     st.sampled_from(["org/m", "m", "$HOME/common/hf/tiny"]))
    key = st.one_of(st.just(secret), st.sampled_from([*FIELDS, "OPENAI_API_KEY", "max_model_len",
                                                      "min_replicas"]))
    tree = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(key, inner, max_size=4), max_leaves=12)
    mapping_doc = st.dictionaries(st.one_of(key, st.sampled_from(FIELDS)), tree,
                                  min_size=1, max_size=6)
    return st.one_of(mapping_doc, st.lists(tree, min_size=1, max_size=3), leaf,
                     st.just({"env": {"OPENAI_API_KEY": secret}}))


def _mangle(text: str, secret: str, how: str) -> str:
    if how == "quote":  # an unterminated quote opening on the secret's line
        return text.replace(secret, '"' + secret, 1)
    if how == "colon":  # "mapping values are not allowed here" on the secret's line
        return text.replace(secret, secret + ": x: y", 1)
    if how == "tab":
        at = text.find(secret)
        start = text.rfind("\n", 0, at) + 1
        return text[:start] + "\t" + text[start:]
    return text


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


@pytest.fixture(scope="module")
def tree() -> Iterator[Path]:
    """One tree for every example: each writes its own users/alice/m.yaml."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tree" / "users" / "alice").mkdir(parents=True)
        (Path(tmp) / "c.yaml").write_text("storage_root: /nonexistent\n")
        yield Path(tmp)


@settings(derandomize=True, max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), secret=st.sampled_from(SECRETS),
       how=st.sampled_from(["none", "none", "quote", "colon", "tab"]))
def test_a_planted_secret_is_in_no_validate_output(tree: Path, data: st.DataObject,
                                                   secret: str, how: str) -> None:
    docs = data.draw(st.lists(_planted(secret), min_size=1, max_size=3))
    text = _mangle(yaml.safe_dump_all(docs, allow_unicode=True, width=1000), secret, how)
    assume(secret in text)
    hidden = PASSWORD if secret == URL else secret
    (tree / "tree" / "users" / "alice" / "m.yaml").write_text(text)
    for fmt in ("text", "json"):
        with _captured() as out:
            code = cli.main(["validate", str(tree / "tree"), "--config", str(tree / "c.yaml"),
                             "--format", fmt])
        assert code in (0, 1)
        assert hidden not in out.getvalue(), (text, out.getvalue())
