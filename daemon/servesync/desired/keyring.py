"""The private GnuPG keyring that ``verify_signatures`` checks commits against.

Called by :class:`servesync.desired.sources.GitSource`. Side effects: a
GNUPGHOME folder (mode 0700) under the state dir, rebuilt from
``trusted_keys_file`` whenever that file changes, and short ``gpg`` /
``gpgconf`` subprocesses. No other keyring of the machine is ever read.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from servesync.errors import SourceError

log = logging.getLogger(__name__)

GPG_TIMEOUT_S = 30.0  # as long as one git call may take


class Keyring:
    """A private GNUPGHOME holding exactly the armored keys of ``keys_file``.

    Rebuilt from scratch whenever the file's content changes, so removing a
    key from the file revokes it at the next verification."""

    def __init__(self, home: Path, keys_file: Path | None) -> None:
        self.home = home
        self.keys_file = keys_file
        self._digest: str | None = None

    def ensure(self) -> bool:
        """Make the keyring match the file; True when it changed."""
        if self.keys_file is None:
            raise SourceError("verify_signatures is on but source.trusted_keys_file is not set")
        try:
            data = self.keys_file.read_bytes()
        except OSError as e:
            raise SourceError(f"{self.keys_file}: cannot read trusted keys: {e}") from e
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return False
        if self.home.exists():
            self._stop_agent()
            shutil.rmtree(self.home)
        self.home.mkdir(mode=0o700, parents=True)
        self.home.chmod(0o700)
        (self.home / "gpg.conf").write_text("no-auto-key-retrieve\ntrust-model always\n")
        done = subprocess.run(
            ["gpg", "--batch", "--quiet", "--homedir", str(self.home), "--import"],
            input=data,
            capture_output=True,
            timeout=GPG_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise SourceError(
                f"{self.keys_file}: gpg --import failed: {done.stderr.decode()[-300:]}"
            )
        self._stop_agent()  # `gpg --import` starts one; verification needs none
        self._digest = digest
        log.info("trusted keys loaded from %s", self.keys_file)
        return True

    def _stop_agent(self) -> None:
        """End the gpg-agent gpg may have started for this keyring (never left behind)."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=GPG_TIMEOUT_S, check=False)

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}
