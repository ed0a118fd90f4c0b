"""What servesync may show of a value: the one place secrets are taken out of text.

Everything servesync tells people (validation issues, the status files,
``servesync status``, the CLI's errors, the logs) may be read by other tenants
or end up in CI logs, so it passes through here:

* :class:`~servesync.errors.Issue` and :class:`~servesync.errors.ServesyncError`
  :func:`scrub` their message when they are built (and an issue's pointer,
  which names keys: :func:`scrub_pointer`), so no code path can make them
  carry a secret-shaped string;
* code that shows a user's value in a message uses :func:`quote` or
  :func:`describe`, never ``repr``: scalars are scrubbed and clipped, lists
  and mappings (a whole document, an ``env`` block) are only described;
* the status files scrub every string they write, with the recorded env
  values as known secrets (:mod:`servesync.status.publishing`), and the log
  handler scrubs every line (:class:`servesync.daemon.logs.RedactingFilter`).

What :func:`scrub` recognises: credentials in a URL
(``https://user:token@host/x`` -> ``https://***@host/x``), tokens with a known
prefix (``hf_``, ``sk-``, ``ghp_``, ``github_pat_``, ``glpat-``, ``xoxb-``,
``AKIA``, ...; also as allow-list normalising spells them, ``sk_...``) and at
least :data:`MIN_TOKEN_BODY` characters after it (so a key name such as
``hf_token`` stays readable) -> ``<redacted>``, and the known values it is
given. It cannot recognise a password without such a shape: that is why env
values are never quoted at all, only their names.

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "<redacted>"
MIN_TOKEN_BODY = 16
"""Characters after a token prefix for :func:`scrub` to take it for a secret
(an AWS key id has 16 after ``AKIA``; HF, OpenAI, GitHub tokens more)."""
MIN_KNOWN_SECRET = 8
"""Known values (env values) shorter than this are not searched for: ``INFO``
or ``4`` would blank ordinary words and numbers."""
QUOTE_LIMIT = 80
"""Characters of a string value :func:`quote` shows at most."""

_PREFIXES = ("hf_", "sk-", "ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_", "glpat-",
             "xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "AKIA", "ASIA")

SECRET_VALUE = re.compile("^(?:" + "|".join(map(re.escape, _PREFIXES)) + ")")
"""A whole value that starts like a token (any length): data, not a message."""
SECRET_KEY = re.compile(  # whole words only: max_num_batched_tokens, tokenizer_mode stay
    r"(?:^|[_.-])(?:token|secret|password|passwd|credentials?|api[_-]?key|auth(?:orization)?|"
    r"private[_-]?key|access[_-]?key)(?:$|[_.-])", re.I)
"""A key whose value is a secret (``hf_token``, ``api-key``): its value is never shown."""

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]*(:[^/\s@]*)?@")


def _loose(prefix: str) -> str:
    """``prefix`` as allowlists.normalise() may have rewritten it: lower case, ``-`` -> ``_``."""
    return re.escape(prefix.lower()).replace(r"\-", "[-_]")


_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    + "|".join(sorted({re.escape(p) for p in _PREFIXES} | {_loose(p) for p in _PREFIXES}))
    + rf")[A-Za-z0-9_.+=-]{{{MIN_TOKEN_BODY},}}")


def redact_url(text: str) -> str:
    """``https://user:token@host/x`` -> ``https://***@host/x``; other text unchanged."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def known_secrets(values: Iterable[object]) -> tuple[str, ...]:
    """The strings among ``values`` long enough to search for, longest first."""
    found = {v for v in values if isinstance(v, str) and len(v) >= MIN_KNOWN_SECRET}
    return tuple(sorted(found, key=len, reverse=True))


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without URL credentials, secret-shaped tokens and the ``known``
    values (pass them through :func:`known_secrets`)."""
    for value in known:
        text = text.replace(value, REDACTED)
    return _TOKEN.sub(REDACTED, redact_url(text))


def scrub_pointer(pointer: str) -> str:
    """A JSON pointer with each token scrubbed: a key is unescaped first (a URL
    used as a key has its ``/`` written ``~1``), then escaped again."""
    def token(text: str) -> str:
        text = scrub(text.replace("~1", "/").replace("~0", "~"))
        return text.replace("~", "~0").replace("/", "~1")
    return "/".join(token(t) for t in pointer.split("/"))


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def kind(value: object) -> str:
    """The YAML/JSON name of a value's type: ``string``, ``integer``, ``mapping``..."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string",
             list: "list", tuple: "list", dict: "mapping", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def quote(value: object, *, limit: int = QUOTE_LIMIT) -> str:
    """A user's value as a message may show it: a scalar's ``repr``, scrubbed
    and clipped; a list or mapping only as its size (it may hold anything)."""
    if isinstance(value, Mapping):
        return f"a mapping ({len(value)} {'key' if len(value) == 1 else 'keys'})"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a list ({len(value)} {'item' if len(value) == 1 else 'items'})"
    if isinstance(value, str):
        return repr(clip(scrub(value), limit))
    if value is None or isinstance(value, bool | int | float):
        return clip(repr(value), limit)
    return f"a {type(value).__name__}"


def describe(value: object) -> str:
    """``string 'x'``, ``integer 5``, ``a list (2 items)``: for "got ..." in messages."""
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return quote(value)
    return f"{kind(value)} {quote(value)}"
