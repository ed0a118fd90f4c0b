"""Access to servesync's JSON Schemas (draft 2020-12), the single source of truth.

The files live in the repository's top-level ``schemas/`` folder and are
packaged as ``servesync/schemas/*.json`` (a symlink in the source tree).
Called by the validator, the config loader, the status writer and
``servesync schema``. Reads package data only, cached.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

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
