"""Issue 11's LoRA adapters: the rules of a model file's ``lora`` field that
only code can check, and what a valid one becomes in its spec.

Called by :mod:`servesync.desired.validating` after the JSON Schema passed the
field's shape (scheme, characters, lengths). Pure: reads the document and the
cluster's :class:`~servesync.config.ServingConfig`, nothing else.

Rules (each names the field; the classes are the README's):

* ``lora`` on a cluster without ``serving.lora`` -> 422;
* a ``path`` part that is empty, ``.`` or ``..`` (``s3://adapters/alice/../bob``,
  ``s3://adapters//alice``) -> 403: object stores do not resolve them the way
  a file system does, so a path is compared exactly as written, and one
  that could mean another folder is refused rather than interpreted;
* a ``path`` not under the user's prefix (``serving.lora.prefix`` with
  ``{user_id}`` replaced, or the user's own entry) -> 403; the comparison is
  by whole parts (``s3://adapters/alice-x/`` is not under ``s3://adapters/alice/``);
* ``max_adapters_per_replica`` above the cluster's -> 422.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from servesync.config import ServingConfig
from servesync.desired.specs import Lora
from servesync.errors import IssueCode
from servesync.redaction import quote

Problem = tuple[IssueCode, str, str]
"""(class, JSON pointer, message) of one refused field."""

SCHEME_END = "://"


def issues(data: Mapping[str, Any], serving: ServingConfig, user_id: str,
           flagged: set[str]) -> Iterator[Problem]:
    """The ``lora`` field's problems the schema cannot see (``flagged``:
    pointers the schema already refused, left alone)."""
    lora = data.get("lora")
    if not isinstance(lora, Mapping) or "/lora" in flagged:
        return
    offer = serving.lora
    if offer is None:
        yield (IssueCode.UNPROCESSABLE, "/lora", "this cluster offers no LoRA adapters "
               "(serving.lora is not set in its servesync.yaml): remove lora")
        return
    path = lora.get("path")
    if isinstance(path, str) and "/lora/path" not in flagged:
        prefix = offer.prefix_for(user_id)
        if not well_formed(path):
            yield (IssueCode.FORBIDDEN, "/lora/path",
                   f"lora.path {quote(path)} has an empty, '.' or '..' part: write the "
                   f"folder as it is stored, under {prefix}")
        elif not under(path, prefix):
            yield (IssueCode.FORBIDDEN, "/lora/path",
                   f"lora.path {quote(path)} is outside your adapters' prefix {prefix} "
                   "(serving.lora)")
    most = lora.get("max_adapters_per_replica")
    if isinstance(most, int) and not isinstance(most, bool) \
            and most > offer.max_adapters_per_replica \
            and "/lora/max_adapters_per_replica" not in flagged:
        yield (IssueCode.UNPROCESSABLE, "/lora/max_adapters_per_replica",
               f"lora.max_adapters_per_replica {most} is above this cluster's limit of "
               f"{offer.max_adapters_per_replica} (serving.lora.max_adapters_per_replica)")


def well_formed(path: str) -> bool:
    """No empty, ``.`` or ``..`` part after the scheme (a trailing ``/`` is fine)."""
    if SCHEME_END not in path:
        return False
    rest = path.split(SCHEME_END, 1)[1].rstrip("/")
    return all(part not in ("", ".", "..") for part in rest.split("/"))


def under(path: str, prefix: str) -> bool:
    """Is ``path`` the folder ``prefix`` (ending in ``/``) or inside it?"""
    return (path.rstrip("/") + "/").startswith(prefix)


def spec_lora(data: Mapping[str, Any], serving: ServingConfig) -> Lora | None:
    """The :class:`~servesync.desired.specs.Lora` of a valid document (its path
    without a trailing ``/``, as Ray keeps it; the cluster's default count)."""
    lora = data.get("lora")
    if not isinstance(lora, Mapping) or serving.lora is None:
        return None
    most = lora.get("max_adapters_per_replica", serving.lora.max_adapters_per_replica)
    return Lora(path=str(lora["path"]).rstrip("/"), max_adapters_per_replica=int(most))
