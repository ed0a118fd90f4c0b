"""Which ``engine_kwargs`` keys and ``env`` names a model file may set.

Owns the rule, as pure functions of the cluster's
:class:`~servesync.config.ServingConfig`; :mod:`servesync.desired.validating`
turns every :class:`Refusal` into a 403 issue. No I/O.

engine_kwargs keys are compared after :func:`normalise` (case, ``-``/``_``,
whitespace, look-alike Unicode); the first rule that matches decides:

1. a key that can never be allowed (``config.NEVER_ALLOWED_ENGINE_KWARGS``:
   paths, code, nested config, URLs, credentials, what servesync sets) is
   refused with the reason, whatever the config says;
2. a key in ``serving.engine_kwargs_deny`` is refused (deny wins over allow);
3. a key in ``serving.engine_kwargs_allowed`` passes if spelled exactly as
   listed (vLLM only knows that spelling), else it is refused naming it;
4. anything else is refused, naming ``serving.engine_kwargs_allowed``.

env names (the model-file schema already makes them ``[A-Z_][A-Z0-9_]*``)
are compared exactly; an entry ending in ``*`` is a prefix. A name in
``serving.env_deny`` is refused, else it passes only if ``serving.env_allowed``
allows it. Messages name keys only (through :func:`servesync.redaction.quote`,
as a key may be a pasted secret), never a value: env values may be secrets,
and these messages reach status files and CI logs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from servesync.config import NEVER_ALLOWED_ENGINE_KWARGS, ServingConfig
from servesync.redaction import quote

_SEPARATORS = re.compile(r"[\s\-_]+")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One key or name a model file may not set, and why (no value quoted)."""

    key: str  # as the file wrote it
    message: str


def normalise(key: str) -> str:
    """The form keys are compared in: Unicode NFKC, case-folded, invisible
    format characters (zero-width spaces, ...) dropped, every run of
    whitespace, ``-`` and ``_`` made one ``_``, none at either end.
    ``" Max-Model-Len "`` -> ``"max_model_len"``."""
    text = unicodedata.normalize("NFKC", key).casefold()
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return _SEPARATORS.sub("_", text).strip("_")


def engine_kwargs_refusals(keys: Iterable[str], serving: ServingConfig) -> Iterator[Refusal]:
    """A refusal for every key of a model's ``engine_kwargs`` it may not set."""
    never = _index(tuple(NEVER_ALLOWED_ENGINE_KWARGS))
    denied = _index(serving.engine_kwargs_deny)
    allowed = _index(serving.engine_kwargs_allowed)
    for key in keys:
        # An allowed key as listed is already normal; every other key pays for normalise().
        norm = key if allowed.get(key) == key else normalise(key)
        what = f"engine_kwargs key {quote(key)}"
        if norm in never:
            canonical = never[norm]
            yield Refusal(key, f"{what}{_read_as(key, canonical)} is never allowed: it "
                               f"{NEVER_ALLOWED_ENGINE_KWARGS[canonical]}")
        elif norm in denied:
            yield Refusal(key, f"{what}{_read_as(key, denied[norm])} is denied on this cluster "
                               "(serving.engine_kwargs_deny)")
        elif norm in allowed:
            if key != allowed[norm]:
                yield Refusal(key, f"{what} must be spelled {allowed[norm]!r}")
        else:
            yield Refusal(key, f"{what}{_read_as(key, norm)} is not allowed on this cluster "
                               "(the operator can allow it in serving.engine_kwargs_allowed)")


def env_refusals(names: Iterable[str], serving: ServingConfig) -> Iterator[Refusal]:
    """A refusal for every name of a model's ``env`` it may not set."""
    for name in names:
        if matches(name, serving.env_deny):
            yield Refusal(name, f"env name {quote(name)} is denied on this cluster "
                                "(serving.env_deny)")
        elif not matches(name, serving.env_allowed):
            yield Refusal(name, f"env name {quote(name)} is not allowed on this cluster "
                                "(the operator can allow it in serving.env_allowed)")


def matches(name: str, entries: Iterable[str]) -> bool:
    """Whether an env entry list holds ``name``: an entry is an exact name, or
    a prefix written with a trailing ``*`` (``NCCL_*``)."""
    return any(name.startswith(e[:-1]) if e.endswith("*") else name == e for e in entries)


@cache
def _index(keys: tuple[str, ...]) -> dict[str, str]:
    """normalised -> as listed; cached per list (validation runs per document)."""
    return {normalise(k): k for k in keys}


def _read_as(key: str, canonical: str) -> str:
    return "" if key == canonical else f" (read as {quote(canonical)})"
