"""Loading servesync.yaml: path resolution and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import config
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
