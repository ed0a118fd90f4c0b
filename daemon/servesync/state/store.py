"""The recorded state: what servesync applied, kept in ``state_dir/state.json``.

Holds one :class:`~servesync.records.ModelRecord` per model (by model key),
the :class:`~servesync.records.GatewayRecord`, and a small ``meta`` mapping
(tick counter, last revision, last tick time). Called by the reconcile loop
(read at start, written after each phase of a tick) and by read-only CLI
commands.

In memory: the file is parsed once, at open; after that the records live in
a dict (reads never touch the disk or re-parse), each with its compact JSON
kept beside it, so a write re-encodes only the records that changed and joins
the rest. The process is the single writer, so memory and file agree, except
after a write that failed (disk full): its error then ends the tick before any
Ray call that depended on it (the write-ahead holds), and the next successful
write stores memory as it is. An older servesync (tinydb, records under
numbered ids) cannot read a file this one wrote: downgrading means moving the
state file aside (below).

Durability: every public write method is one disk write at most, and none at
all when the content is unchanged (an idle tick writes nothing); inside
:meth:`Store.batch` the writes of a whole phase become one. A write goes
through :func:`servesync.atomicio.atomic_write` (temp file, fsync, rename,
fsync the folder), so a kill -9 at any instant leaves the old file or the
new one. JSON only.

On disk: ``{"gateway": {"1": {...}}, "meta": {"1": {...}}, "models":
{"<model_key>": {...}, ...}}``, one record a line. Older servesyncs wrote the
same tables through tinydb, with the records keyed by tinydb's document ids
(``"1"``, ``"2"``, ...); such a file loads as it is (a record's key is its
``model_key`` field) and is rewritten in the new shape at the first change.

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servesync.converge.records import GatewayRecord, ModelRecord
from servesync.errors import ServesyncError
from servesync.state.atomicio import atomic_write, remove_temps

STATE_FILE = "state.json"
STATE_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700
STATE_DIR_MODE_TRAVERSABLE = 0o711
"""The state dir's mode when the status dir is inside it: others may reach
``status/`` by name, but not list the state dir."""
_SINGLETON_ID = "1"  # the gateway and meta tables hold one document, id "1" (tinydb's shape)
_TABLES = ("gateway", "meta", "models")


class StateFileError(ServesyncError):
    """The recorded-state file exists but cannot be loaded; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: recorded state is unreadable ({reason}). servesync will not start "
            "from an empty record (that would redeploy every model): fix or restore the "
            "file, or move it aside to start afresh (see servesync.state.store)."
        )
        self.path = path
        self.reason = reason


def _read(path: Path) -> dict[str, Any]:
    """The state file's tables ({} when there is no file); StateFileError if unreadable."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise StateFileError(path, str(e)) from e
    try:
        data = json.loads(blob)
    except ValueError as e:
        raise StateFileError(path, f"not valid JSON: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
        raise StateFileError(path, "not a mapping of tables")
    return data


def read_models(state_dir: Path) -> list[ModelRecord]:
    """The model records of ``state_dir``, read without opening a :class:`Store`
    (which may create the folder and set modes): for ``servesync validate``,
    which writes nothing. [] when there is no state file; StateFileError when
    it cannot be read (e.g. it belongs to the daemon's user: 0600)."""
    path = Path(state_dir) / STATE_FILE
    data = _read(path)
    try:
        return [ModelRecord.from_json(dict(doc)) for doc in data.get("models", {}).values()]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise StateFileError(path, f"bad record: {type(e).__name__}: {e}") from e


def encode_json(data: Any) -> str:
    """Stable JSON on one line (sorted keys, UTF-8 text): no indent, so the C
    encoder's fast path (an indented dump runs the pure-Python encoder)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _line(rec: ModelRecord) -> str:
    """The record's line of the file: ``"<model key>": {...}``."""
    return f"{encode_json(rec.model_key)}: {encode_json(rec.to_json())}"


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
        self._disk_writes = 0
        self._models: dict[str, ModelRecord] = {}
        self._encoded: dict[str, str] = {}  # model key -> its line of the file
        self._sorted: dict[str, ModelRecord] | None = None  # models() by key, until a change
        self._gateway: GatewayRecord | None = None
        self._meta: dict[str, Any] | None = None
        self._dirty = False  # memory differs from the file
        self._depth = 0  # nesting of batch()
        self._load()

    def _load(self) -> None:
        """Parse the file once, at open, so damage shows at start, not mid-tick."""
        data = _read(self.path)
        try:
            for doc in data.get("models", {}).values():  # keyed by model key, or tinydb's ids
                rec = ModelRecord.from_json(dict(doc))
                self._models[rec.model_key] = rec
                self._encoded[rec.model_key] = _line(rec)
            gateway = data.get("gateway", {}).get(_SINGLETON_ID)
            if gateway is not None:
                self._gateway = GatewayRecord.from_json(dict(gateway))
            meta = data.get("meta", {}).get(_SINGLETON_ID)
            if meta is not None:
                self._meta = dict(meta)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise StateFileError(self.path, f"bad record: {type(e).__name__}: {e}") from e

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several writes (the records, gateway and meta of one phase of a
        tick) into one disk write, none if nothing changed; if the block raises,
        none of them is written and memory is as it was before the block."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        saved = (dict(self._models), dict(self._encoded), self._gateway,
                 None if self._meta is None else dict(self._meta), self._dirty)
        self._depth = 1
        try:
            yield
        except BaseException:
            (self._models, self._encoded, self._gateway, self._meta, self._dirty) = saved
            self._sorted = None
            raise
        finally:
            self._depth = 0
        self._flush()

    @property
    def disk_writes(self) -> int:
        """How many times this Store wrote its file (for tests and metrics)."""
        return self._disk_writes

    def close(self) -> None:
        """Nothing to release: every write is already on disk."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        if self._depth or not self._dirty:
            return
        atomic_write(self.path, self.encode(), mode=STATE_FILE_MODE)
        self._dirty = False
        self._disk_writes += 1

    def encode(self) -> bytes:
        """The file's bytes: stable (sorted keys), one record a line, UTF-8."""
        singletons = {name: "{}" if doc is None else
                      f'{{"{_SINGLETON_ID}": {encode_json(doc)}}}'
                      for name, doc in (("gateway", self._gateway and self._gateway.to_json()),
                                        ("meta", self._meta))}
        models = ",\n".join(self._encoded[key] for key in sorted(self._encoded))
        return (f'{{"gateway": {singletons["gateway"]},\n"meta": {singletons["meta"]},\n'
                f'"models": {{\n{models}\n}}}}\n').encode()

    # -- models --------------------------------------------------------------

    def models(self) -> dict[str, ModelRecord]:
        """Every record, by model key, sorted by key (a new dict; records are frozen)."""
        if self._sorted is None:
            self._sorted = {key: self._models[key] for key in sorted(self._models)}
        return dict(self._sorted)

    def get(self, model_key: str) -> ModelRecord | None:
        return self._models.get(model_key)

    def put(self, record: ModelRecord) -> None:
        self.put_many((record,))

    def put_many(self, records: Iterable[ModelRecord]) -> None:
        """Insert or replace records by model key, in one disk write at most."""
        for rec in records:
            if self._models.get(rec.model_key) == rec:
                continue
            self._models[rec.model_key] = rec
            self._encoded[rec.model_key] = _line(rec)
            self._sorted = None
            self._dirty = True
        self._flush()

    def delete(self, model_key: str) -> None:
        self.delete_many((model_key,))

    def delete_many(self, model_keys: Iterable[str]) -> None:
        """Drop records by model key (unknown keys are ignored), one write at most."""
        for key in model_keys:
            if self._models.pop(key, None) is not None:
                del self._encoded[key]
                self._sorted = None
                self._dirty = True
        self._flush()

    # -- gateway and meta ----------------------------------------------------

    def gateway(self) -> GatewayRecord:
        return self._gateway if self._gateway is not None else GatewayRecord()

    def set_gateway(self, rec: GatewayRecord) -> None:
        if rec != self._gateway:
            self._gateway, self._dirty = rec, True
        self._flush()

    def meta(self) -> dict[str, Any]:
        """Free-form daemon facts: ``tick``, ``revision``, ``last_tick_at``..."""
        return dict(self._meta) if self._meta is not None else {}

    def set_meta(self, **kv: Any) -> None:
        """Merge ``kv`` into meta (values must be JSON-serializable)."""
        new = {**self.meta(), **kv}
        json.dumps(new)  # refuse what can't be written before memory holds it
        if new != self._meta:
            self._meta, self._dirty = new, True
        self._flush()
