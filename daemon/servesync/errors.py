"""Typed errors of servesync, chosen by type, never by message text.

Two families:

* :class:`Issue` is *data*, not an exception: one problem found in one
  desired-state document (file, line, JSON pointer, class). Validation
  collects them; a bad document never stops the others.
* :class:`ServesyncError` and its subclasses are raised. ``TransientError``
  means "back off and retry" (a Ray call timed out, the GCS is away);
  ``PermanentError`` means "record it and wait for a new commit" (a model
  failed to deploy). ``ConfigError`` and ``LockHeldError`` stop the process
  with a clear message (CLI exit 2 / systemd failure).

Both reach users (validate output, status files, stderr, logs), so both pass
their text through :func:`servesync.redaction.scrub` when built: a message
can't carry a URL credential or a secret-shaped token, whatever built it.
Code that shows a user's value still quotes it with
:func:`servesync.redaction.quote` (values without a secret's shape can't be
recognised later).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from servesync.redaction import clip, scrub, scrub_pointer

MAX_MESSAGE = 240
"""Characters of an issue's message at most (after scrubbing)."""


class IssueCode(IntEnum):
    """Error classes as in the MVP serving API (HTTP-like codes)."""

    INVALID = 400  # invalid YAML / schema: parse error, missing or unknown field, wrong type
    FORBIDDEN = 403  # path escape, another user's folder, engine key or env name not allowed
    CONFLICT = 409  # two documents of one user declare the same model_id
    UNPROCESSABLE = 422  # replicas/GPUs out of range, min > max, GPUs on a cpu platform, quota


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in one document: where it is and what class it is."""

    code: IssueCode
    file: str  # path relative to the desired-state root, '/'-separated
    line: int  # 1-based; 0 when the problem concerns the whole file and no line applies
    pointer: str  # JSON pointer into the document ('' for the whole document)
    message: str

    def __post_init__(self) -> None:
        # the pointer names the user's keys; the message may quote values
        object.__setattr__(self, "pointer", scrub_pointer(self.pointer))
        object.__setattr__(self, "message", clip(scrub(self.message), MAX_MESSAGE))

    def render(self) -> str:
        """``path:line: <code> <pointer>: message``, the text format of ``validate``."""
        pointer = self.pointer or "/"
        return f"{self.file}:{self.line}: {int(self.code)} {pointer}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "code": int(self.code),
            "line": self.line,
            "pointer": self.pointer,
            "message": self.message,
        }


class ServesyncError(Exception):
    """Base class of every error servesync raises on purpose; its text is scrubbed."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class ConfigError(ServesyncError):
    """The daemon config is missing or invalid (exit 2, never a crash loop)."""


class LockHeldError(ServesyncError):
    """Another servesync already owns this state directory."""


class SourceError(ServesyncError):
    """The desired-state source could not be read (missing dir, git failure)."""


class TransientError(ServesyncError):
    """A failure that may pass by itself: retry with backoff, and never sooner
    than ``delay_s`` (the planner's backoff, 5 s doubling to 5 min, is the
    usual wait; a longer ``delay_s`` raises it)."""

    def __init__(self, message: str, *, delay_s: float = 5.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(ServesyncError):
    """A failure a retry will not fix: record it and wait for a new spec."""


class RayConnectionLost(ServesyncError):
    """This process's Ray connection is gone or wedged (raised by ``rayserve``):
    only a new process reconnects, so the daemon exits 3 and systemd restarts it."""
