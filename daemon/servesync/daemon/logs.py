"""Logging set-up of the daemon: one line per event on stderr, text or JSON.

Called once by the CLI (``servesync run``) before :func:`servesync.daemon.run_daemon`.
Side effects: replaces the root logger's handlers; quiets apscheduler's
per-job INFO lines and watchfiles' per-change lines.

* ``text``: ``2025-01-01T12:00:00.123Z INFO servesync.daemon.loop: tick 3 done key=value``;
  under journald (``$JOURNAL_STREAM`` matches stderr) the timestamp is left
  out, journald adds its own.
* ``json``: one object per line, ``{"ts", "level", "logger", "msg", ...}``
  plus every ``extra=`` field of the call, and ``exc`` with the traceback.

Secrets: servesync never logs environment values, replica ``env`` values,
or the daemon's environment file; code that logs a git URL passes it through
:func:`~servesync.redaction.redact_url` first. As a second line of defence,
:class:`RedactingFilter` (installed by :func:`setup_logging`) runs every
rendered line through :func:`servesync.redaction.scrub`: URL credentials
(``https://user:token@host``), secret-shaped tokens (``hf_...``, ``sk-...``)
and the values of the daemon's secret-looking environment variables
(``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*KEY*``, ...) are blanked
wherever they appear. This is best effort, not a guarantee: the rule is
still "never pass a secret to a logger".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

from servesync.redaction import scrub

LogFormat = Literal["text", "json"]

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|API_?KEY|PRIVATE|AUTH", re.I)
_MIN_SECRET_LEN = 6
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values of variables whose names look secret, longest first."""
    found = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return tuple(sorted(found, key=len, reverse=True))


class RedactingFilter(logging.Filter):
    """Blanks URL credentials, secret-shaped tokens and known secret values in a
    record's rendered text (:func:`servesync.redaction.scrub`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def redact(self, text: str) -> str:
        return scrub(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        # A bad format string must not raise here: the handler reports it as usual.
        with contextlib.suppress(Exception):
            self._redact_record(record)
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        message = self.redact(record.getMessage())
        record.msg, record.args = message, None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out[key] = (
                value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            )
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        if exc:
            out["exc"] = exc
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: msg k=v ...``; a traceback follows on its own lines."""

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self._timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso(record.created)] if self._timestamps else []
        parts += [record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{k}={v}" for k, v in _extras(record).items()]
        line = " ".join(parts)
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        return f"{line}\n{exc}" if exc else line


def setup_logging(
    *,
    fmt: LogFormat = "text",
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Route every logger to one stderr handler; returns the handler."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps=not _under_journald(stream, env)))
    handler.addFilter(RedactingFilter(secret_values(env)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # ray.init() reconfigures the root logger (its own JSON format); servesync's
    # loggers keep this handler whatever Ray does to the root.
    ours = logging.getLogger("servesync")
    for old in list(ours.handlers):
        ours.removeHandler(old)
    ours.addHandler(handler)
    ours.propagate = False
    for noisy in ("apscheduler", "watchfiles", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _under_journald(stream: TextIO, env: Mapping[str, str]) -> bool:
    """systemd sets ``$JOURNAL_STREAM=dev:inode`` of the stream it connected to stderr."""
    want = env.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"
