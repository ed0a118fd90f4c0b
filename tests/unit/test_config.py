"""Loading servesync.yaml: path resolution and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import config


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
