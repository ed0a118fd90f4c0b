"""Loading servesync.yaml: path resolution and error messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from servesync import config, schemas
from servesync.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "servesync.yaml"
    path.write_text(text)
    return config.load(path)


@pytest.mark.parametrize(
    "url",
    [
        "deploy@git.example:ml/ds.git",
        "gitlab:ml/ds.git",
        "git@git.example:ml/ds.git",
        "ssh://git@git.example/ml/ds.git",
    ],
)
def test_remote_git_urls_are_kept_as_they_are(tmp_path: Path, url: str) -> None:
    cfg = _load(tmp_path, f"source:\n  git_url: '{url}'\n")
    assert cfg.source.git_url == url
    assert config.is_remote_url(url)


def test_a_relative_git_url_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "source:\n  git_url: repos/ds\n")
    assert cfg.source.git_url == str(tmp_path.resolve() / "repos" / "ds")
    assert not config.is_remote_url("repos/ds") and not config.is_remote_url("C:/repos/ds")


@pytest.mark.parametrize(
    ("env", "pointer"),
    [
        ("{HF_TOKEN: 987654321}", "/serving/replica_env/HF_TOKEN"),
        ("{HF_TOKEN: [hf_s3cr3t]}", "/serving/replica_env/HF_TOKEN"),
        ("HF_TOKEN=hf_s3cr3t", "/serving/replica_env"),
    ],
)
def test_a_bad_replica_env_value_is_never_shown(tmp_path: Path, env: str, pointer: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"serving:\n  replica_env: {env}\n")
    text = str(err.value)
    assert f"{pointer}: must be of type" in text
    assert "987654321" not in text and "s3cr3t" not in text


# --- the allow-lists -----------------------------------------------------------------


def test_the_allow_list_defaults_come_from_the_schema() -> None:
    serving = schemas.load("servesync-config")["properties"]["serving"]["properties"]
    cfg = config.Config().serving
    assert cfg.engine_kwargs_allowed == tuple(serving["engine_kwargs_allowed"]["default"])
    assert cfg.env_allowed == tuple(serving["env_allowed"]["default"])
    never = [k for g in serving["engine_kwargs_allowed"]["items"]["allOf"]
             for k in g["not"]["enum"]]
    assert sorted(config.NEVER_ALLOWED_ENGINE_KWARGS) == sorted(never)
    assert len(never) == len(set(never))


def test_an_existing_config_with_deny_lists_only_keeps_loading(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "serving:\n  engine_kwargs_deny: [dtype]\n  env_deny: [HF_TOKEN]\n")
    assert (cfg.serving.engine_kwargs_deny, cfg.serving.env_deny) == (("dtype",), ("HF_TOKEN",))
    assert cfg.serving.engine_kwargs_allowed == config.DEFAULT_ENGINE_KWARGS_ALLOWED
    assert cfg.serving.env_allowed == config.DEFAULT_ENV_ALLOWED


def test_the_operator_lists_replace_the_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "serving:\n  engine_kwargs_allowed: [max_model_len, "
                "limit_mm_per_prompt]\n  env_allowed: [HF_HUB_OFFLINE, 'MYAPP_*']\n")
    assert cfg.serving.engine_kwargs_allowed == ("max_model_len", "limit_mm_per_prompt")
    assert cfg.serving.env_allowed == ("HF_HUB_OFFLINE", "MYAPP_*")


# (key an operator tries to allow, the reason the error must give)
NEVER = [
    ("chat_template", "takes a path on the node"),
    ("tokenizer", "takes a path on the node"),
    ("download_dir", "takes a path on the node"),
    ("allowed_local_media_path", "takes a path on the node"),
    ("worker_cls", "names code to import or run"),
    ("trust_remote_code", "names code to import or run"),
    ("speculative_config", "is nested config that can carry paths, code or addresses"),
    ("tool_server", "takes a URL or a network address"),
    ("hf_token", "is a credential"),
    ("served_model_name", "is set by servesync or Ray Serve"),
]


@pytest.mark.parametrize(("key", "reason"), NEVER)
def test_a_key_that_takes_a_path_or_code_can_never_be_allowed(
        tmp_path: Path, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"serving:\n  engine_kwargs_allowed: [max_model_len, {key}]\n")
    assert f"/serving/engine_kwargs_allowed/1: {key!r} can never be allowed: it {reason}" \
        in str(err.value)
    with pytest.raises(ConfigError, match=f"{key!r} can never be allowed: it {reason}"):
        config.ServingConfig(engine_kwargs_allowed=("max_model_len", key))


@pytest.mark.parametrize(("entry", "key"), [
    ("Max-Model-Len", "engine_kwargs_allowed"), ("'max_model_len '", "engine_kwargs_allowed"),
    ("Tokenizer", "engine_kwargs_allowed"), ("'*'", "env_allowed"),
    ("'lower_*'", "env_allowed"), ("'A*B'", "env_allowed"), ("'VLLM_*_X'", "env_allowed"),
])
def test_allow_list_entries_must_be_spelled_exactly(
        tmp_path: Path, entry: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"/serving/{key}/0: .* does not match"):
        _load(tmp_path, f"serving:\n  {key}: [{entry}]\n")


@pytest.mark.parametrize("argv", [["validate", "{tmp}"], ["run"]])
def test_the_daemon_refuses_a_config_that_allows_a_path_key_with_exit_2(
        tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from servesync import cli
    from servesync.daemon import logs

    monkeypatch.setattr(logs, "setup_logging", lambda **_: None)
    (tmp_path / "users").mkdir()
    path = tmp_path / "servesync.yaml"
    path.write_text("serving:\n  engine_kwargs_allowed: [max_model_len, chat_template]\n")
    args = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main([*args, "--config", str(path)]) == 2
    assert "'chat_template' can never be allowed: it takes a path" in capsys.readouterr().err


def test_gateway_replicas_default_to_two_and_follow_the_file(tmp_path: Path) -> None:
    serving = schemas.load("servesync-config")["properties"]["serving"]["properties"]
    assert serving["gateway_replicas"]["default"] == config.ServingConfig().gateway_replicas == 2
    assert _load(tmp_path, "serving:\n  gateway_replicas: 1\n").serving.gateway_replicas == 1
    with pytest.raises(ConfigError, match="gateway_replicas"):
        _load(tmp_path, "serving:\n  gateway_replicas: 0\n")


# --- source.web_url ----------------------------------------------------------------


def test_a_web_url_template_loads(tmp_path: Path) -> None:
    url = "https://git.example.com/org/desired/blob/{revision}/{path}#L{line}"
    assert _load(tmp_path, f"source:\n  web_url: '{url}'\n").source.web_url == url
    assert _load(tmp_path, "source: {}\n").source.web_url is None


@pytest.mark.parametrize("url", ["javascript:alert(1)//{path}", "data:text/html,x",
                                 "ftp://git.example.com/{path}", "git.example.com/{path}"])
def test_a_web_url_that_is_not_http_is_refused_clearly(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"source:\n  web_url: '{url}'\n")
    assert str(err.value) == (
        f"{tmp_path / 'servesync.yaml'}: /source/web_url: must be an http:// or https:// URL "
        "template, e.g. https://git.example.com/org/desired/blob/{revision}/{path}#L{line}")


@pytest.mark.parametrize(("url", "why"), [
    ("https://git.example.com/{user}/{path}", "unknown placeholder {user}: only {revision}"),
    ("https://git.example.com/{path.__class__}", "unknown placeholder {path.__class__}"),
    ("https://git.example.com/{path}}", "a { or } that opens or closes no placeholder"),
])
def test_a_web_url_placeholder_servesync_does_not_fill_is_refused(
        tmp_path: Path, url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"servesync.yaml: source.web_url: {why}")):
        _load(tmp_path, f"source:\n  web_url: '{url}'\n")
    with pytest.raises(ConfigError, match=re.escape(f"source.web_url: {why}")):  # in code too
        config.SourceConfig(web_url=url)
