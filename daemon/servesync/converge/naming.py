"""Model naming, as in the MVP serving API. Pure.

* public model id (what clients send as ``model``):
  ``<user_id>-<YYYYMMDDHHMM>-<suffix>``; the prefix is fixed when the model
  is first admitted and kept for its whole life (restarts, stop/start).
* alias name (what clients may send instead, :func:`alias_name`):
  ``<user_id>-<alias>``, for each of the model's ``aliases``; stable across
  deleting and re-adding the model. The schema keeps an alias from looking
  like a ``<YYYYMMDDHHMM>`` part; where two names still meet (user ids may
  hold '-'), a public id wins over an alias and the first admitted model
  over a later one (:func:`servesync.converge.planning.plan`).
* ``model_key`` (status file name and Serve application name):
  ``svc-<user_id>-<YYYYMMDD>-<HHMMSS>-<4 hex>``, the hex derived from the
  user, suffix and admission time so that it is stable and testable.
  A model's versions each have their own, ``<stem>.<version>``
  (:func:`version_key`), the stem shared by all of them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

GATEWAY_APP = "servesync-gateway"
"""The Serve application at route ``/`` that is the OpenAI ingress for every model."""


def model_prefix(user_id: str, admitted_at: datetime) -> str:
    return f"{user_id}-{admitted_at:%Y%m%d%H%M}"


def model_key(user_id: str, suffix: str, admitted_at: datetime) -> str:
    stamp = f"{admitted_at:%Y%m%d-%H%M%S}"
    digest = hashlib.sha256(f"{user_id}/{suffix}/{admitted_at.isoformat()}".encode()).hexdigest()
    return f"svc-{user_id}-{stamp}-{digest[:4]}"


def version_key(stem: str, version: str) -> str:
    """A version's ``model_key`` and Serve application name: the model's key
    stem (``svc-...-<4 hex>``, the same for all its versions), ``.``, the
    version's name, e.g. ``svc-alice-20261123-093000-1a2b.canary``."""
    return f"{stem}.{version}"


def key_stem(model_key: str) -> str | None:
    """The model's key stem of a version's key (:func:`version_key`), else None."""
    head, sep, _ = model_key.partition(".")
    return head if sep else None


def alias_name(user_id: str, alias: str) -> str:
    """The name clients call a model's ``alias`` by: ``<user_id>-<alias>``."""
    return f"{user_id}-{alias}"
