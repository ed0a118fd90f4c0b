"""Wiring for the CLI: config → source, lock, store, Ray applier, reconciler.

Called by ``servesync once``, ``plan`` and ``run``. Side effects: creates the
state and status dirs, takes the single-writer lock (``once``/``run``),
connects to Ray. ``plan`` writes nothing in the state dir: it works on a
copy of ``state.json`` in a temporary folder, with its own throwaway git
clone and keyring. Leaving never undeploys anything; only a demo Ray started
in-process (``ray.address: local``) ends with the process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from servesync.config import Config
from servesync.converge import actions as act
from servesync.converge.ports import Applier
from servesync.converge.reconciling import Reconciler, TickResult
from servesync.desired.sources import Source, open_source
from servesync.state.locking import StateLock
from servesync.state.store import (
    JOURNAL_FILE,
    STATE_DIR_MODE,
    STATE_DIR_MODE_TRAVERSABLE,
    STATE_FILE,
    Store,
    read_consistent,
)
from servesync.status.notifying import Notifications
from servesync.status.publishing import StatusFiles

log = logging.getLogger("servesync")

ONCE_POLL_S = 2.0


def _applier(config: Config) -> Applier:
    """The Ray applier, not yet connected: its first observe() connects, and a
    Ray that is down then shows as "unreachable" in the status, not a crash.
    Imported here, not at the top: only commands that talk to Ray load it."""
    from servesync.rayserve.applier import RayApplier

    return RayApplier(config)


@contextmanager
def reconciler(config: Config, *, lock: bool = True, notify: bool = True,
               notifications: Notifications | None = None) -> Iterator[Reconciler]:
    """A connected Reconciler holding the state lock (unless ``lock`` is False),
    with the notifications' outbox and delivery threads when the config has
    sinks (unless ``notify`` is False: ``plan``). ``notifications``: the
    daemon's, kept across reloads (reused, not stopped here); without it the
    notifier lives as long as this Reconciler."""
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    Path(config.status_dir).mkdir(parents=True, exist_ok=True)
    own = Notifications() if notifications is None and notify else None
    hub = notifications or own
    with StateLock(state_dir) if lock else nullcontext(), \
            Store(state_dir, dir_mode=state_dir_mode(config)) as store:
        try:
            notifier = hub.get(config, store.models) if hub is not None else None
            applier = _applier(config)
            try:
                yield Reconciler(config, store=store, applier=applier, notifier=notifier,
                                 publisher=StatusFiles(Path(config.status_dir), config.serving,
                                                       config.source))
            finally:
                applier.shutdown()
        finally:
            if own is not None:
                own.close()


def state_dir_mode(config: Config) -> int:
    """0700, or 0711 when the status dir is inside the state dir (the default
    layout): users must reach ``status/``, and only that (state.json is 0600)."""
    state, status = Path(config.state_dir).resolve(), Path(config.status_dir).resolve()
    return STATE_DIR_MODE_TRAVERSABLE if status.is_relative_to(state) else STATE_DIR_MODE


def once(config: Config, *, wait_s: float = 0.0) -> int:
    """One tick; with ``wait_s``, tick until settled or the time is up.
    Exit 0 when converged, 1 when not."""
    source = open_source(config)
    deadline = time.monotonic() + wait_s
    with reconciler(config) as rec:
        result = _tick(rec, source)
        while wait_s and not result.settled and time.monotonic() < deadline:
            time.sleep(ONCE_POLL_S)
            result = _tick(rec, source)
    for line in result.errors:
        print(line)
    state = "converged" if result.converged else ("settled" if result.settled else "pending")
    print(f"tick {result.tick} at {result.revision or 'working tree'}: {state}, "
          f"{len(result.actions)} action(s)")
    return 0 if result.converged else 1


def _tick(rec: Reconciler, source: Source) -> TickResult:
    return rec.tick(source.refresh())


def plan(config: Config) -> int:
    """Print what a tick would do. Exit 0 nothing to do, 1 changes.

    The daemon's state dir is only read: its ``state.json`` and journal are
    copied (as of one moment: ``read_consistent``) into a
    temporary state dir, which also holds this run's git clone and keyring."""
    with tempfile.TemporaryDirectory(prefix="servesync-plan-") as tmp:
        base, journal = read_consistent(Path(config.state_dir))
        for name, data in ((STATE_FILE, base), (JOURNAL_FILE, journal)):
            if data is not None:
                fd = os.open(Path(tmp) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
        scratch = dataclasses.replace(config, state_dir=tmp, status_dir=str(Path(tmp) / "status"))
        source = open_source(scratch)
        with reconciler(scratch, lock=False, notify=False) as rec:
            desired, observed = rec.read(source.refresh())
            actions = rec.plan(desired, observed)
    for issue in desired.issues():
        print(issue.render())
    if not observed.reachable:
        print("Ray is unreachable: nothing can be planned")
        return 2
    for action in actions:
        print(act.describe(action))
    if not actions:
        print("noop: the cluster matches the desired state")
    return 1 if actions else 0
