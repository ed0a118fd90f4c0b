"""Crash-safe file writes: a reader sees the old file or the new one, never half.

``atomic_write`` writes a temp file in the target's folder, fsyncs it,
``os.replace``-s it over the target and fsyncs the folder, so a kill -9 (or a
power cut) at any instant leaves a complete file. Used by
:mod:`servesync.state.store` (the recorded state) and :mod:`servesync.status.publishing`
(the status files). Side effects: files in the target's folder only.

The file gets exactly the ``mode`` asked for, whatever the umask: the temp
file is created with it and set to it before a byte is written, so the
private ``state.json`` (0600) is never readable by others, not even for an
instant, and the status files (0644) are readable by users even under
systemd's ``UMask=0027``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """A fresh hidden temp name beside ``path``: ``.<name>.tmp-<pid>-<random>``."""
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{tag}")


def fsync_dir(folder: Path) -> None:
    """Flush the folder's entry list, so a rename in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temp file is removed if anything fails before the rename; a kill -9
    may leave one behind, which :func:`remove_temps` cleans up later.
    ``durable=False`` skips the two fsyncs: still atomic for every reader and
    across a kill -9, but a power cut may lose the file's content (for files
    rebuilt from elsewhere, compared and rewritten at start: the status files).
    """
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exactly ``mode``: the umask only ever removes bits
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_if_changed(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True
                     ) -> bool:
    """:func:`atomic_write` unless ``path`` already holds exactly ``data``
    (then only its mode is set, if it differs).

    Returns True when the file was written. An idle caller touches nothing.
    """
    try:
        if path.read_bytes() == data:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=mode, durable=durable)
    return True


def remove_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Remove temp files left in ``folder`` by a killed writer (of ``name`` only,
    if given). Call only while no other writer uses the folder (under the
    state lock). Returns the paths removed."""
    pattern = f"{TEMP_PREFIX}{name or '*'}{TEMP_MARK}*"
    removed = []
    for tmp in folder.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
