"""The one git helper of the tests: real git repositories and gpg keys in temp folders.

Used by the unit tests (sources, watching, the daemon loop, the CLI) and by
the daemon e2e test (:class:`GitRepo`). Everything runs the real ``git`` and
``gpg`` binaries with a throwaway identity; nothing touches the user's own
git config or keyring.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 60.0
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full = {**os.environ, **GIT_ENV, **(env or {})}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=full, capture_output=True, text=True, check=False,
        timeout=GIT_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def init_repo(path: Path, *, branch: str = "main", bare: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", f"--initial-branch={branch}", *(["--bare"] if bare else []))
    return path


def commit_file(
    repo: Path,
    rel: str,
    text: str,
    *,
    message: str = "change",
    sign_with: GpgKey | None = None,
) -> str:
    """Write ``rel``, commit it (signed when a key is given); returns the SHA."""
    return commit_files(repo, {rel: text}, message=message, sign_with=sign_with)


def commit_files(
    repo: Path,
    files: Mapping[str, str],
    *,
    message: str = "change",
    sign_with: GpgKey | None = None,
) -> str:
    """Write ``files`` (path → text), commit them in one commit (signed when a
    key is given); returns the SHA."""
    for rel, text in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(repo, "add", rel)
    if sign_with is None:
        git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", message)
    else:
        git(
            repo,
            "-c",
            f"user.signingkey={sign_with.fingerprint}",
            "commit",
            "--quiet",
            "-S",
            "-m",
            message,
            env={"GNUPGHOME": str(sign_with.home)},
        )
    return git(repo, "rev-parse", "HEAD")


class GitRepo:
    """A desired-state repository a test commits to as a user does (e2e)."""

    def __init__(self, path: Path, *, branch: str = "main") -> None:
        self.path = init_repo(path, branch=branch)

    def git(self, *args: str) -> str:
        return git(self.path, *args)

    def commit(self, files: Mapping[str, str], message: str) -> tuple[str, float]:
        """Write ``files`` (path → text), commit them; (SHA, time.monotonic() after)."""
        return commit_files(self.path, files, message=message), time.monotonic()


@dataclass(frozen=True)
class GpgKey:
    home: Path
    fingerprint: str

    def export(self) -> str:
        return _gpg(self.home, "--armor", "--export", self.fingerprint)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            capture_output=True,
            check=False,
        )


def make_key(home: Path, uid: str) -> GpgKey:
    """A throwaway ed25519 key without passphrase in its own GNUPGHOME."""
    home.mkdir(mode=0o700, parents=True)
    _gpg(home, "--passphrase", "", "--quick-gen-key", uid, "future-default", "default", "never")
    colons = _gpg(home, "--list-secret-keys", "--with-colons")
    fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    return GpgKey(home, fpr)


def _gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"gpg {' '.join(args)} failed: {done.stderr}")
    return done.stdout
