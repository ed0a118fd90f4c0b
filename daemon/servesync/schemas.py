"""Access to servesync's JSON Schemas (draft 2020-12), the single source of truth.

The files live in the repository's top-level ``schemas/`` folder and are
packaged as ``servesync/schemas/*.json`` (a symlink in the source tree).
Called by the validator, the config loader, the status writer and
``servesync schema``. Reads package data only, cached.

:func:`message` words a validation error without printing the instance
itself: jsonschema's own messages quote it whole (a document, an ``env``
block), and these messages reach status files and logs.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from servesync.redaction import describe, quote

NAMES = ("serving-model", "servesync-config", "status-index", "status-model")


def text(name: str) -> str:
    """The schema file's text, as shipped."""
    if name not in NAMES:
        raise KeyError(name)
    return (resources.files("servesync") / "schemas" / f"{name}.schema.json").read_text("utf-8")


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text(name))
    return data


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name))


# jsonschema's message quotes only the schema and the instance's keys, never a value
_KEYS_ONLY = frozenset({"required", "additionalProperties", "const", "dependentRequired",
                        "unevaluatedProperties"})
_QUOTING = {
    "minimum": "{shown} is less than the minimum of {expected!r}",
    "maximum": "{shown} is greater than the maximum of {expected!r}",
    "exclusiveMinimum": "{shown} is less than or equal to the minimum of {expected!r}",
    "exclusiveMaximum": "{shown} is greater than or equal to the maximum of {expected!r}",
    "multipleOf": "{shown} is not a multiple of {expected!r}",
    "minLength": "{shown} is too short (at least {expected} characters)",
    "maxLength": "{shown} is too long (at most {expected} characters)",
    "minItems": "{shown} is too short (at least {expected} items)",
    "maxItems": "{shown} is too long (at most {expected} items)",
    "minProperties": "{shown} has too few keys (at least {expected})",
    "maxProperties": "{shown} has too many keys (at most {expected})",
    "uniqueItems": "{shown} has repeated items",
    "enum": "{shown} is not one of {expected!r}",
    "pattern": "{shown} does not match {expected!r}",
    "type": "expected {expected}, got {described}",
    "anyOf": "{shown} matches none of the allowed forms",
    "oneOf": "{shown} does not match exactly one of the allowed forms",
}


def message(error: ValidationError) -> str:
    """jsonschema's message for ``error``, the instance shown only through
    :func:`servesync.redaction.quote` (scalars, scrubbed and clipped; a list or
    mapping by its size)."""
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword in _KEYS_ONLY:
        return str(error.message)
    if keyword == "type" and isinstance(expected, list):
        expected = " or ".join(map(str, expected))
    if keyword == "not" and isinstance(expected, dict) and expected.get("description"):
        return str(expected["description"])
    template = _QUOTING.get(str(keyword), "{shown} is not allowed here ({keyword})")
    return template.format(shown=quote(instance), described=describe(instance),
                           expected=expected, keyword=keyword)
