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
:meth:`Store.batch` the writes of a whole phase become one. A write appends
one line to the journal ``state.journal`` and fsyncs it: the changed records
(or ``null`` for a deleted one), and the gateway and meta if they changed.
So a tick that changes one model of a thousand writes that model's line, not
the 3.6 MB file. When the journal outgrows half the base file (or there is no
base yet, or the journal's tail was torn), the write is a compaction instead:
the whole state goes through :func:`servesync.atomicio.atomic_write` (temp
file, fsync, rename, fsync the folder) under a new ``epoch``, and the journal
is removed. Each journal line names the epoch of the base it follows; lines
of another epoch (a compaction killed before it removed the journal; a
reader that copied the base and the journal either side of a compaction)
are ignored. A kill -9 at any instant leaves the old state or the new one:
at most the journal's last line is torn, and a torn last line (no newline,
or not JSON) is dropped at open, since its write never completed and so no
Ray call followed it; the next write compacts. A damaged line before the
last is a :class:`StateFileError`. JSON only.

On disk: ``state.json`` is ``{"epoch": {"1": {"id": "<hex>"}}, "gateway":
{"1": {...}}, "meta": {"1": {...}}, "models": {"<model_key>": {...}, ...}}``,
one record a line; each line of ``state.journal`` is ``{"epoch": "<hex>",
"models": {"<model_key>": {...} or null}, "gateway": {...}, "meta": {...}}``
(the last two only when they changed). Older servesyncs wrote the
same tables through tinydb, with the records keyed by tinydb's document ids
(``"1"``, ``"2"``, ...); such a file loads as it is (a record's key is its
``model_key`` field) and is rewritten in the new shape at the first change.

Only one process may write: hold :class:`servesync.locking.StateLock` first.

Privacy: the records keep each model's ``env`` values (the planner needs
them to tell a change), which may be secrets. ``state.json`` is therefore
0600, and so is ``state.journal`` (every write creates them so, and an
older looser file is tightened at open) and the state dir 0700, or 0711 when the status dir lies
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
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servesync.converge.records import GatewayRecord, ModelRecord
from servesync.errors import ServesyncError
from servesync.state.atomicio import atomic_write, fsync_dir, remove_temps

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
JOURNAL_FILE = "state.journal"
JOURNAL_MIN_BYTES = 256 * 1024  # the journal may grow to this, or half the base file
STATE_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700
STATE_DIR_MODE_TRAVERSABLE = 0o711
"""The state dir's mode when the status dir is inside it: others may reach
``status/`` by name, but not list the state dir."""
_SINGLETON_ID = "1"  # the gateway and meta tables hold one document, id "1" (tinydb's shape)
_TABLES = ("epoch", "gateway", "meta", "models")


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


def read_models(state_dir: Path) -> list[ModelRecord]:
    """The model records of ``state_dir`` (its base file and journal), read
    without opening a :class:`Store` (which may create the folder and set
    modes): for ``servesync validate``, which writes nothing. [] when there
    is no state file; StateFileError when it cannot be read (e.g. it belongs
    to the daemon's user: 0600)."""
    reader = Store.__new__(Store)
    reader._init_memory(Path(state_dir))
    base, journal = read_consistent(Path(state_dir))
    if base is not None:
        reader._load_base(base)
    if journal is not None:
        reader._load_journal(journal)
    return list(reader._models.values())


def read_consistent(state_dir: Path, tries: int = 5) -> tuple[bytes | None, bytes | None]:
    """The base file's and the journal's bytes (None: absent), as of one
    moment, while the daemon may write: base, journal, then the base's
    identity again; a compaction in between (a new base) means read again.
    For readers that do not hold the state lock (``plan``, ``validate``)."""
    path, journal = Path(state_dir) / STATE_FILE, Path(state_dir) / JOURNAL_FILE
    for _ in range(tries):
        before, base = _identity(path), _read_or_none(path)
        lines = _read_or_none(journal)
        if _identity(path) == before:
            return base, lines
    raise StateFileError(path, f"it kept changing while being read ({tries} tries)")


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(path, str(e)) from e
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(path, str(e)) from e


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
        self._init_memory(state_dir)
        remove_temps(state_dir, STATE_FILE)  # left by a writer killed mid-write
        for path in (self.path, self.journal):
            with contextlib.suppress(FileNotFoundError):  # written 0644 by an older servesync
                os.chmod(path, STATE_FILE_MODE)
        self._load()

    def _init_memory(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.journal = state_dir / JOURNAL_FILE
        self._disk_writes = 0
        self._epoch: str | None = None  # the base file's; None: no base file yet
        self._base_bytes = 0
        self._journal_bytes = 0
        self._compact = False  # the next write must rewrite the base (old shape, torn tail)
        self._changed: dict[str, ModelRecord | None] = {}  # since the last write
        self._gateway_changed = self._meta_changed = False
        self._models: dict[str, ModelRecord] = {}
        self._encoded: dict[str, str] = {}  # model key -> its line of the file
        self._sorted: dict[str, ModelRecord] | None = None  # models() by key, until a change
        self._gateway: GatewayRecord | None = None
        self._meta: dict[str, Any] | None = None
        self._dirty = False  # memory differs from the file
        self._depth = 0  # nesting of batch()

    def _load(self) -> None:
        """Parse the files once, at open, so damage shows at start, not mid-tick."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            blob = None
        except OSError as e:
            raise StateFileError(self.path, str(e)) from e
        if blob is not None:
            self._load_base(blob)
        try:
            lines = self.journal.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StateFileError(self.journal, str(e)) from e
        self._journal_bytes = len(lines)
        self._load_journal(lines)

    def _load_base(self, blob: bytes) -> None:
        self._base_bytes = len(blob)
        try:
            data = json.loads(blob)
        except ValueError as e:
            raise StateFileError(self.path, f"not valid JSON: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise StateFileError(self.path, "not a mapping of tables")
        try:
            for ident, doc in data.get("models", {}).items():  # by model key, or tinydb's ids
                rec = ModelRecord.from_json(dict(doc))
                self._models[rec.model_key] = rec
                self._encoded[rec.model_key] = _line(rec)
                if ident != rec.model_key:
                    self._compact = True  # rewritten in the new shape at the first change
            gateway = data.get("gateway", {}).get(_SINGLETON_ID)
            if gateway is not None:
                self._gateway = GatewayRecord.from_json(dict(gateway))
            meta = data.get("meta", {}).get(_SINGLETON_ID)
            if meta is not None:
                self._meta = dict(meta)
            epoch = data.get("epoch", {}).get(_SINGLETON_ID)
            self._epoch = str(epoch["id"]) if epoch is not None else ""
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise StateFileError(self.path, f"bad record: {type(e).__name__}: {e}") from e
        if not self._epoch:
            self._compact = True  # a base without an epoch: no journal line can follow it

    def _load_journal(self, blob: bytes) -> None:
        """Replay the journal's lines. Only a last line without its newline is a
        torn write (killed midway: no Ray call followed it) and is dropped; a
        complete line that is not JSON is damage (StateFileError)."""
        lines = blob.split(b"\n")
        tail = lines.pop()  # b"" when the last line is complete
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError as e:
                raise StateFileError(self.journal, f"line {number} is not JSON: {e}") from e
            try:
                self._replay(entry)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise StateFileError(self.journal, f"line {number}: bad record: "
                                     f"{type(e).__name__}: {e}") from e
        if tail:
            log.warning("%s: its last line was torn (a write killed midway); dropped: that "
                        "write never completed", self.journal)
            self._compact = True

    def _replay(self, entry: dict[str, Any]) -> None:
        if self._epoch is None or entry["epoch"] != self._epoch:
            self._compact = True  # written after another base: not this one's changes
            return
        for key, doc in entry.get("models", {}).items():
            if doc is None:
                self._models.pop(key, None)
                self._encoded.pop(key, None)
                continue
            rec = ModelRecord.from_json(dict(doc))
            if rec.model_key != key:
                raise ValueError(f"record {rec.model_key!r} under key {key!r}")
            self._models[key] = rec
            self._encoded[key] = _line(rec)
        if "gateway" in entry:
            self._gateway = GatewayRecord.from_json(dict(entry["gateway"]))
        if "meta" in entry:
            self._meta = dict(entry["meta"])

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
                 None if self._meta is None else dict(self._meta), self._dirty,
                 dict(self._changed), self._gateway_changed, self._meta_changed)
        self._depth = 1
        try:
            yield
        except BaseException:
            (self._models, self._encoded, self._gateway, self._meta, self._dirty,
             self._changed, self._gateway_changed, self._meta_changed) = saved
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
        line = None if self._compact or self._epoch is None else self._journal_line()
        if line is None or self._journal_bytes + len(line) > max(JOURNAL_MIN_BYTES,
                                                                  self._base_bytes // 2):
            self._rewrite()
        else:
            try:
                self._append(line)
            except BaseException:
                self._cut_journal()
                raise
        self._dirty, self._compact = False, False
        self._changed, self._gateway_changed, self._meta_changed = {}, False, False
        self._disk_writes += 1

    def _journal_line(self) -> bytes:
        entry: list[str] = [f'"epoch": {encode_json(self._epoch)}']
        models = ", ".join(self._encoded[key] if rec is not None else
                           f"{encode_json(key)}: null"
                           for key, rec in sorted(self._changed.items(),
                                                  key=lambda kv: kv[0]))
        entry.append(f'"models": {{{models}}}')
        if self._gateway_changed:
            entry.append(f'"gateway": {encode_json(self.gateway().to_json())}')
        if self._meta_changed:
            entry.append(f'"meta": {encode_json(self.meta())}')
        return ("{" + ", ".join(entry) + "}\n").encode()

    def _append(self, line: bytes) -> None:
        """One line at the journal's end, fsynced before returning (the write-ahead)."""
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     STATE_FILE_MODE)
        try:
            created = os.fstat(fd).st_size == 0
            os.fchmod(fd, STATE_FILE_MODE)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        self._journal_bytes += len(line)

    def _cut_journal(self) -> None:
        """After a failed append (disk full, EIO): cut the journal back to its
        last complete line, so the next line is not glued to a fragment; if
        even that fails, the next write compacts instead of appending."""
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, self._journal_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self._compact = True

    def _rewrite(self) -> None:
        """Compaction: the whole state as a new base under a new epoch, then no journal."""
        old = self._epoch
        self._epoch = secrets.token_hex(8)
        try:
            data = self.encode()
            atomic_write(self.path, data, mode=STATE_FILE_MODE)
        except BaseException:
            self._epoch = old
            raise
        self._base_bytes = len(data)
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
            fsync_dir(self.path.parent)
        self._journal_bytes = 0

    def encode(self) -> bytes:
        """The file's bytes: stable (sorted keys), one record a line, UTF-8."""
        singletons = {name: "{}" if doc is None else
                      f'{{"{_SINGLETON_ID}": {encode_json(doc)}}}'
                      for name, doc in (("gateway", self._gateway and self._gateway.to_json()),
                                        ("meta", self._meta))}
        models = ",\n".join(self._encoded[key] for key in sorted(self._encoded))
        epoch = f'{{"{_SINGLETON_ID}": {encode_json({"id": self._epoch})}}}' if self._epoch \
            else "{}"
        return (f'{{"epoch": {epoch},\n"gateway": {singletons["gateway"]},\n'
                f'"meta": {singletons["meta"]},\n"models": {{\n{models}\n}}}}\n').encode()

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
            self._changed[rec.model_key] = rec
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
                self._changed[key] = None
                self._sorted = None
                self._dirty = True
        self._flush()

    # -- gateway and meta ----------------------------------------------------

    def gateway(self) -> GatewayRecord:
        return self._gateway if self._gateway is not None else GatewayRecord()

    def set_gateway(self, rec: GatewayRecord) -> None:
        if rec != self._gateway:
            self._gateway, self._dirty, self._gateway_changed = rec, True, True
        self._flush()

    def meta(self) -> dict[str, Any]:
        """Free-form daemon facts: ``tick``, ``revision``, ``last_tick_at``..."""
        return dict(self._meta) if self._meta is not None else {}

    def set_meta(self, **kv: Any) -> None:
        """Merge ``kv`` into meta (values must be JSON-serializable)."""
        new = {**self.meta(), **kv}
        json.dumps(new)  # refuse what can't be written before memory holds it
        if new != self._meta:
            self._meta, self._dirty, self._meta_changed = new, True, True
        self._flush()
