"""The recorded state: what servesync applied, kept in tinydb at ``state_dir/state.json``.

Holds one :class:`~servesync.records.ModelRecord` per model (by model key),
the :class:`~servesync.records.GatewayRecord`, and a small ``meta`` mapping
(tick counter, last revision, last tick time). Called by the reconcile loop
(read at start, written after apply) and by read-only CLI commands.

Durability: tinydb rewrites its whole file on each write; here it goes through
:class:`AtomicJSONStorage`, which writes via
:func:`servesync.atomicio.atomic_write` (temp file, fsync, rename, fsync the
folder), so a kill -9 at any instant leaves the old file or the new one.
Every public write method is one disk write at most, and none at all when the
serialized content is unchanged (an idle tick writes nothing). JSON only.

Only one process may write: hold :class:`servesync.locking.StateLock` first.

Privacy: the records keep each model's ``env`` values (the planner needs
them to tell a change), which may be secrets. ``state.json`` is therefore
0600 (every atomic rewrite creates it so, and an older looser file is
tightened at open) and the state dir 0700, or 0711 when the status dir lies
inside it (the default layout): users may pass through to ``status/`` but
list and read nothing else. Only the status files are for users.

Recovering from :class:`StateFileError` (the file exists but cannot be read
as servesync's state; atomic writes rule out a half-written file, so this
means disk damage or a hand edit). servesync refuses to start from an empty
record, because it would then treat every running model as new. Either:

1. fix the JSON by hand (``python -m json.tool state.json`` shows where it
   breaks) or restore ``state.json`` from a backup, then restart; or
2. move it aside (``mv state.json state.json.broken``) and restart: servesync
   starts with no records, reads the desired state afresh, and treats the
   Serve applications it finds as it does after a first install.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from servesync.converge.records import GatewayRecord, ModelRecord
from servesync.errors import ServesyncError
from servesync.state.atomicio import atomic_write, remove_temps

STATE_FILE = "state.json"
STATE_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700
STATE_DIR_MODE_TRAVERSABLE = 0o711
"""The state dir's mode when the status dir is inside it: others may reach
``status/`` by name, but not list the state dir."""
_SINGLETON_ID = 1


class StateFileError(ServesyncError):
    """The recorded-state file exists but cannot be loaded; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: recorded state is unreadable ({reason}). servesync will not start "
            "from an empty record (that would redeploy every model): fix or restore the "
            "file, or move it aside to start afresh (see servesync.state.store)."
        )
        self.path = path


def encode(data: dict[str, Any]) -> bytes:
    """The file's bytes for ``data``: stable (sorted keys), readable, UTF-8."""
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


class AtomicJSONStorage(Storage):
    """A tinydb Storage that writes atomically and only when content changes.

    Keeps the last saved bytes in memory (the process is the single writer),
    so reads don't touch the disk. Inside :meth:`batch`, tinydb works on one
    parsed copy, encoded and written once at the end (dropped if the block
    raises): a batch of N operations costs one parse and one write, not N.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.disk_writes = 0
        self._saved = self._load()
        self._pending: dict[str, dict[str, Any]] | None = None
        self._depth = 0

    def _load(self) -> bytes | None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateFileError(self.path, str(e)) from e
        try:
            data = json.loads(blob)
        except ValueError as e:
            raise StateFileError(self.path, f"not valid JSON: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise StateFileError(self.path, "not a mapping of tables")
        return blob

    def _parse_saved(self) -> dict[str, dict[str, Any]] | None:
        if self._saved is None:
            return None
        data: dict[str, dict[str, Any]] = json.loads(self._saved)
        return data

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._depth:
            return self._parse_saved()  # a fresh copy: callers may mutate it
        if self._pending is None:
            self._pending = self._parse_saved()
        return self._pending

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self._depth:
            self._pending = data
            return
        self._flush(encode(data))

    def _flush(self, blob: bytes) -> None:
        if blob == self._saved:
            return
        atomic_write(self.path, blob, mode=STATE_FILE_MODE)
        self._saved = blob
        self.disk_writes += 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Gather the writes of the block into one disk write (none if unchanged)."""
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if not self._depth:
                self._pending = None
            raise
        self._depth -= 1
        if not self._depth and self._pending is not None:
            data, self._pending = self._pending, None
            self._flush(encode(data))


def _replacing(new: dict[str, Any]) -> Callable[[MutableMapping[Any, Any]], None]:
    """A tinydb update that replaces the document's content (not a merge)."""

    def transform(doc: MutableMapping[Any, Any]) -> None:
        doc.clear()
        doc.update(new)

    return transform


class Store:
    """The recorded state of one ``state_dir``. Not thread-safe; one writer."""

    def __init__(self, state_dir: Path, *, dir_mode: int = STATE_DIR_MODE) -> None:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        with contextlib.suppress(PermissionError):  # a dir someone else owns: their choice
            os.chmod(state_dir, dir_mode)
        self.path = state_dir / STATE_FILE
        remove_temps(state_dir, STATE_FILE)  # left by a writer killed mid-write
        with contextlib.suppress(FileNotFoundError):  # written 0644 by an older servesync
            os.chmod(self.path, STATE_FILE_MODE)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        self._storage = storage
        self._models: Table = self._db.table("models")
        self._gateway: Table = self._db.table("gateway")
        self._meta: Table = self._db.table("meta")
        self._check()

    def _check(self) -> None:
        """Parse everything once at open, so damage shows at start, not mid-tick."""
        try:
            self.models()
            self.gateway()
            self.meta()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise StateFileError(self.path, f"bad record: {type(e).__name__}: {e}") from e

    def batch(self) -> AbstractContextManager[None]:
        """Group several writes (records, gateway, meta of one tick) into one disk
        write; if the block raises, none of them is written."""
        return self._storage.batch()

    @property
    def disk_writes(self) -> int:
        """How many times this Store wrote its file (for tests and metrics)."""
        return self._storage.disk_writes

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models --------------------------------------------------------------

    def models(self) -> dict[str, ModelRecord]:
        """Every record, by model key, sorted by key."""
        recs = (ModelRecord.from_json(dict(doc)) for doc in self._models.all())
        return {r.model_key: r for r in sorted(recs, key=lambda r: r.model_key)}

    def get(self, model_key: str) -> ModelRecord | None:
        doc = self._models.get(Query().model_key == model_key)
        return ModelRecord.from_json(dict(doc)) if isinstance(doc, dict) else None

    def put(self, record: ModelRecord) -> None:
        self.put_many((record,))

    def put_many(self, records: Iterable[ModelRecord]) -> None:
        """Insert or replace records by model key, in one disk write at most."""
        with self._storage.batch():
            for rec in records:
                new = rec.to_json()
                cond = Query().model_key == rec.model_key
                if not self._models.update(_replacing(new), cond):
                    self._models.insert(new)

    def delete(self, model_key: str) -> None:
        with self._storage.batch():
            self._models.remove(Query().model_key == model_key)

    # -- gateway and meta ----------------------------------------------------

    def gateway(self) -> GatewayRecord:
        doc = self._gateway.get(doc_id=_SINGLETON_ID)
        return GatewayRecord.from_json(dict(doc)) if isinstance(doc, dict) else GatewayRecord()

    def set_gateway(self, rec: GatewayRecord) -> None:
        self._set_singleton(self._gateway, rec.to_json())

    def meta(self) -> dict[str, Any]:
        """Free-form daemon facts: ``tick``, ``revision``, ``last_tick_at``..."""
        doc = self._meta.get(doc_id=_SINGLETON_ID)
        return dict(doc) if isinstance(doc, dict) else {}

    def set_meta(self, **kv: Any) -> None:
        """Merge ``kv`` into meta (values must be JSON-serializable)."""
        self._set_singleton(self._meta, {**self.meta(), **kv})

    def _set_singleton(self, table: Table, new: dict[str, Any]) -> None:
        with self._storage.batch():
            if not table.update(_replacing(new), doc_ids=[_SINGLETON_ID]):
                table.insert(Document(new, doc_id=_SINGLETON_ID))
