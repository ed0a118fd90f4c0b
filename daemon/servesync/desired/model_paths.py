"""``model_source``: macro expansion and the rules on where a model may come from.

Called by :mod:`servesync.desired.validating` for every document (and for the
recorded source of a model held at its last-known-good spec). Pure string
work, except the optional real-path check and folder walk, which read the
file system (symlinks, directory listings) but never write.

Rules (``<root>`` is the daemon config's ``storage_root``):

* ``$HOME`` -> ``<root>/users/<user_id>``; ``$HOME/common/hf`` -> ``<root>/hf``;
  ``$HOME/common/datasets`` -> ``<root>/datasets``. No other ``$`` macro.
* A hub repo id is ``org/name`` by Hugging Face's repo id rules (each part 1
  to 96 of ``A-Z a-z 0-9 _ . -``, starting and ending with a letter, digit or
  ``_``; no ``--``, no ``..``, not ending in ``.git``). It passes unchanged
  unless the config sets ``serving.allow_hub_ids: false`` (403), or its
  ``org`` is a top-level system folder (:data:`SYSTEM_FOLDERS`), the first
  component of the storage root, or any folder that exists at ``/<org>`` on
  this node (``/scratch``, ``/data``, ...) (403): vLLM tries a model name as a local
  path first, and replicas start in ``/`` (ray-head.service sets no working
  directory), so ``tmp/evil-model`` would load ``/tmp/evil-model``.
* A local path must be absolute after expansion (400 otherwise) and lie
  strictly under ``<root>/hf/`` or ``<root>/users/<user_id>/``; another user's
  folder, anything else under the root, or outside it is 403. So is any
  ``..`` (anywhere in the string) and a path whose real path, symlinks
  resolved as far as the path exists, leaves those folders. An existing
  folder is walked (:mod:`servesync.desired.model_dirs`): every entry in it
  must resolve inside those folders too, within the walk's bounds (403).
* Empty (or blank) sources and control characters are 400.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from dataclasses import dataclass

from servesync.desired import model_dirs
from servesync.errors import IssueCode

HOME_MACRO = "$HOME"
MACROS = (("common/hf", "hf"), ("common/datasets", "datasets"))
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID_RE = re.compile(f"{_HUB_PART}/{_HUB_PART}")
SYSTEM_FOLDERS = frozenset({
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
    "opt", "proc", "root", "run", "sbin", "snap", "srv", "sys", "tmp", "usr", "var",
})
"""The top-level folders of a Linux root (the FHS, plus the usual multilib and
snap ones): an ``org`` named like one is a relative path from ``/``, where
replicas start. Those a user can write to (``tmp``, ``dev/shm``, ``var/tmp``,
``home``, ``run/user``, mounts under ``mnt``/``media``/``srv``/``opt``) could
hold a model folder with symlinks to anyone's files; the rest hold no model."""
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a model_source is refused: an issue class and a message for the user."""

    code: IssueCode
    message: str


@functools.lru_cache(maxsize=16_384)  # pure; asked for every model on every tick
def expand(source: str, *, user_id: str, storage_root: str) -> str:
    """Apply the ``$HOME`` macros; any other string is returned unchanged."""
    if source != HOME_MACRO and not source.startswith(HOME_MACRO + "/"):
        return source
    root = posixpath.normpath(storage_root)
    rest = source[len(HOME_MACRO):]  # "" or "/..."
    for macro, target in MACROS:
        if rest == "/" + macro or rest.startswith(f"/{macro}/"):
            return posixpath.join(root, target) + rest[len(macro) + 1:]
    return posixpath.join(root, "users", user_id) + rest


def is_hub_id(source: str) -> bool:
    """``org/name`` by the Hugging Face hub's repo id rules (not a path, not a macro)."""
    return HUB_ID_RE.fullmatch(source) is not None and "--" not in source \
        and ".." not in source and not source.endswith(".git")


def _hub_id_problem(source: str, *, storage_root: str) -> Rejection | None:
    """A hub id whose ``org`` names a top-level system folder or the storage
    root's first folder: a relative path from ``/`` in disguise."""
    org = source.split("/", 1)[0]
    root_top = posixpath.normpath(storage_root).lstrip("/").split("/", 1)[0]
    if org in SYSTEM_FOLDERS or org == root_top or os.path.lexists("/" + org):
        return Rejection(IssueCode.FORBIDDEN, f"{source!r} is not taken as a hub repo id: "
                         f"{org!r} is a top-level folder name, and vLLM would read /{source} "
                         "(write an absolute path under the storage root instead)")
    return None


@functools.lru_cache(maxsize=4096)  # pure
def allowed_roots(*, user_id: str, storage_root: str) -> tuple[str, str]:
    """The two folders a local model_source may lie under."""
    root = posixpath.normpath(storage_root)
    return posixpath.join(root, "hf"), posixpath.join(root, "users", user_id)


def _under(path: str, base: str) -> bool:
    return path.startswith(base.rstrip("/") + "/")


def resolve_model_source(
    source: str,
    *,
    user_id: str,
    storage_root: str,
    allow_hub_ids: bool = True,
    check_realpath: bool = True,
) -> str | Rejection:
    """The resolved source (absolute path or hub id), or why it is refused."""
    got = _by_text(source, user_id=user_id, storage_root=storage_root,
                   allow_hub_ids=allow_hub_ids)
    if isinstance(got, Rejection):
        return got
    kind, value = got
    if kind == "hub":  # whether /<org> exists on the node is the file system's answer
        return _hub_id_problem(value, storage_root=storage_root) or value
    problem = _real_problem(value, user_id=user_id, storage_root=storage_root) \
        if check_realpath else None
    return problem if problem is not None else value


@functools.lru_cache(maxsize=16_384)  # pure: what the text alone decides, asked every tick
def _by_text(source: str, *, user_id: str, storage_root: str,
             allow_hub_ids: bool) -> tuple[str, str] | Rejection:
    """``("hub", id)``, ``("path", normalised absolute path)`` or the refusal
    the text alone earns (syntax, macros, location)."""
    if not source.strip():
        return Rejection(IssueCode.INVALID, "model_source is empty")
    if _CONTROL_RE.search(source):
        return Rejection(IssueCode.INVALID, "model_source contains control characters")
    if ".." in source:
        return Rejection(IssueCode.FORBIDDEN, "'..' is not allowed in model_source")
    if source.startswith("$") and expand(source, user_id=user_id, storage_root="/") == source:
        return Rejection(IssueCode.INVALID, "unknown macro: only $HOME, $HOME/common/hf and "
                         "$HOME/common/datasets are expanded")
    if is_hub_id(source):
        if not allow_hub_ids:
            return Rejection(IssueCode.FORBIDDEN,
                             f"hub repo ids are not allowed on this cluster: {source!r}")
        return ("hub", source)
    path = expand(source, user_id=user_id, storage_root=storage_root)
    if not path.startswith("/"):
        return Rejection(IssueCode.INVALID, "model_source must be an absolute path, a $HOME "
                         "path or a hub repo id org/name")
    path = posixpath.normpath(path)
    problem = _location_problem(path, user_id=user_id, storage_root=storage_root)
    return problem if problem is not None else ("path", path)


def _location_problem(path: str, *, user_id: str, storage_root: str) -> Rejection | None:
    roots = allowed_roots(user_id=user_id, storage_root=storage_root)
    if any(_under(path, r) for r in roots):
        return None
    root = posixpath.normpath(storage_root)
    users = posixpath.join(root, "users")
    where = f"{roots[0]}/ or {roots[1]}/"
    other = path[len(users) + 1:].split("/")[0]
    if _under(path, users) and other != user_id:
        return Rejection(IssueCode.FORBIDDEN, f"{path} is in another user's folder "
                         f"({other!r}); models may come from {where}")
    if path in roots or path == root or _under(path, root):
        return Rejection(IssueCode.FORBIDDEN, f"{path} is not under {where}")
    return Rejection(IssueCode.FORBIDDEN, f"{path} is outside the storage root {root}")


def _real_problem(path: str, *, user_id: str, storage_root: str) -> Rejection | None:
    """The path's real path, symlinks resolved (within the lookup budget), must
    lie under the allowed folders; and so must every entry of a model folder."""
    roots = allowed_roots(user_id=user_id, storage_root=storage_root)
    try:
        real = model_dirs.real_path(path)
    except model_dirs.TooCostly as e:
        return Rejection(IssueCode.FORBIDDEN, f"{path} has symlinks that take more than "
                         f"{e.args[0]:,} lookups to resolve: too costly to check")
    if not any(_under(real, model_dirs.realpath(r)) for r in roots):
        # Not naming `real`: it could show the layout of another user's folder.
        return Rejection(IssueCode.FORBIDDEN, f"{path} resolves through a symlink to a place "
                         f"outside {roots[0]}/ and {roots[1]}/")
    problem = model_dirs.check_folder(path, roots, real=real)
    return None if problem is None else Rejection(IssueCode.FORBIDDEN, problem)
