"""The long-running loop of ``servesync run``: when to tick, never how.

Called by the CLI with a ticker factory (the reconcile tick lives in
:mod:`servesync.converge.reconciling`). :func:`run_daemon`:

* takes the state-dir lock (another servesync there → exit 2, message logged);
* ticks on one worker thread, so ticks never overlap. Wake-ups come from
  the file watcher (a commit or an edit), apscheduler's interval job
  (``tick_interval_s``, drift repair) and, for a remote git source, its poll
  job (``poll_interval_s``: a tick only if the fetched tip changed). Triggers
  arriving during a tick coalesce into exactly one more tick after it;
* a tick that raises is logged with its traceback, and the loop goes on,
  except :class:`~servesync.errors.RayConnectionLost` (the Ray head went away,
  or a Ray call has been stuck past its bound): no tick in this process can
  reach Ray again, so the daemon stops and exits 3 for systemd to restart it
  (the records are the truth: a new process adopts or redeploys). So a
  wedged Ray also ends the WATCHDOG=1 pings, not only a wedged tick;
* each tick's :class:`~servesync.converge.reconciling.TickResult` says when
  it next needs a look (``requeue_after_s``: Ray's settle delay while a model
  loads, the end of a backoff): exactly one tick is scheduled then, replacing
  the previous tick's request; ``None`` schedules nothing;
* sd_notify: READY=1 once the first tick attempt has finished (failed or
  not: STATUS then says why), WATCHDOG=1 from the worker thread itself,
  always right before a tick starts (a stuck tick stops the pings, so
  systemd restarts a wedged daemon),
  STATUS= after each tick, STOPPING=1 at shutdown;
* SIGTERM/SIGINT: finish the current tick (at most ``STOP_GRACE_S``), exit 0;
  nothing is ever undeployed on the way out. SIGHUP: re-read the config (an
  invalid one is logged and the old kept), force a fetch, tick.

Exit codes: 0 stopped by a signal or ``stop_event``; 1 the worker died
(a bug; systemd restarts); 2 config error, unreadable recorded state
(``state.json``) or the state dir is locked; 3 the Ray connection was lost
(systemd restarts: ``Restart=on-failure``).

The factory returns a context manager yielding a :class:`Ticker` (e.g.
``wiring.reconciler(config, lock=False)``: this module holds the lock); it is
left when the ticker is replaced (config reload) or at exit.
Nothing here logs environment values or URL credentials.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from servesync import config as config_mod
from servesync.config import Config
from servesync.converge.reconciling import TickResult
from servesync.daemon.sdnotify import Notifier
from servesync.desired.sources import Snapshot, Source, open_source
from servesync.desired.watching import Watcher
from servesync.errors import (
    LockHeldError,
    RayConnectionLost,
    ServesyncError,
    SourceError,
    TransientError,
)
from servesync.state.locking import StateLock

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_RAY_LOST = 0, 1, 2, 3
STOP_GRACE_S = 8.0  # finish the current tick; systemd's TimeoutStopSec is 15
MIN_REQUEUE_S = 0.5  # never tick again sooner than this on a ticker's request
IDLE_WAKE_S = 1.0
REQUEUE_JOB = "requeue"


class Ticker(Protocol):
    """One reconcile pass over a snapshot (``Reconciler``); may raise."""

    def tick(self, snapshot: Snapshot) -> TickResult: ...


TickerFactory = Callable[[Config], AbstractContextManager[Ticker]]


class Triggers:
    """Reasons to tick, coalesced: many fires while busy mean one wake-up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reasons: set[str] = set()

    def fire(self, reason: str) -> None:
        with self._cond:
            self._reasons.add(reason)
            self._cond.notify()

    def take(self, timeout: float) -> frozenset[str]:
        """Wait up to ``timeout`` for a reason; return and clear all pending ones."""
        with self._cond:
            if not self._reasons:
                self._cond.wait(timeout)
            taken, self._reasons = frozenset(self._reasons), set()
            return taken


class _TickerSlot:
    """The current Ticker, built lazily by the factory and closed on replacement."""

    def __init__(self, factory: TickerFactory) -> None:
        self._factory = factory
        self._stack = contextlib.ExitStack()
        self.ticker: Ticker | None = None

    def get(self, config: Config) -> Ticker:
        if self.ticker is None:
            stack = contextlib.ExitStack()
            ticker = stack.enter_context(self._factory(config))
            self._stack, self.ticker = stack, ticker
        return self.ticker

    def close(self) -> None:
        stack, self.ticker = self._stack, None
        try:
            stack.close()
        except Exception:
            log.exception("closing the ticker failed")


class DaemonLoop:
    """Scheduler, watcher and the worker thread around one Ticker."""

    def __init__(
        self,
        config: Config,
        *,
        ticker_factory: TickerFactory,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.triggers = Triggers()
        self.ticks = 0
        self.ready = threading.Event()
        self.exit_code: int | None = None  # set when the loop ended itself (Ray lost)
        self._slot = _TickerSlot(ticker_factory)
        self._clock = clock
        self._stop = threading.Event()
        self._last: Snapshot | None = None
        self._last_ping = float("-inf")
        self._last_status = ""
        self.source: Source = open_source(config)
        self._watcher: Watcher | None = None
        self._scheduler = BackgroundScheduler(timezone=UTC, daemon=True)
        self._worker = threading.Thread(target=self._run, name="servesync-tick", daemon=True)

    # -- lifecycle (main thread) -------------------------------------------

    def start(self) -> None:
        self._scheduler.start()
        self._schedule()
        self._watch()
        self.triggers.fire("start")
        self._worker.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        """Stop waking, let the current tick finish; False if it outlived ``grace_s``."""
        self._stop.set()
        self.triggers.fire("stop")
        with contextlib.suppress(Exception):
            self._scheduler.shutdown(wait=False)
        if self._watcher is not None:
            self._watcher.stop()
        self._worker.join(grace_s)
        if self._worker.is_alive():
            log.warning("a tick is still running after %.0f s; exiting anyway", grace_s)
            return False
        self._slot.close()
        return True

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def request_reload(self) -> None:
        self.triggers.fire("reload")

    def prepare(self) -> None:
        """Build the ticker now, so a config error or an unreadable recorded
        state ends the start (exit 2); only a transient failure is retried."""
        try:
            self._slot.get(self.config)
        except TransientError:
            log.exception("cannot build the reconciler yet; the next tick retries")
        except ServesyncError:
            raise
        except Exception:
            log.exception("cannot build the reconciler yet; the next tick retries")

    def _schedule(self) -> None:
        self._scheduler.add_job(
            self.triggers.fire, "interval", args=("interval",), id="tick", replace_existing=True,
            seconds=self.config.tick_interval_s, coalesce=True, max_instances=1,
            misfire_grace_time=None,  # a late wake-up (busy head) still ticks
        )  # fmt: skip
        poll = self.source.poll_interval_s()
        if poll:
            self._scheduler.add_job(
                self.triggers.fire, "interval", args=("poll",), id="poll", replace_existing=True,
                seconds=poll, coalesce=True, max_instances=1, misfire_grace_time=None,
            )  # fmt: skip
        elif self._scheduler.get_job("poll"):
            self._scheduler.remove_job("poll")

    def _watch(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        paths = self.source.watch_paths()
        self._watcher = Watcher(
            paths, lambda: self.triggers.fire("watch"), ignore=[Path(self.config.state_dir)]
        )
        self._watcher.start()
        log.info("watching %s", ", ".join(map(str, paths)) or "nothing (polling)")

    # -- the worker thread ---------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            reasons = self.triggers.take(self._wait_s())
            if self._stop.is_set():
                break
            self._ping()
            if "reload" in reasons:
                try:
                    self._reload()
                except Exception:
                    log.exception("applying the reloaded config failed")
            if reasons:
                self._step(reasons)
                self._ping()

    def _wait_s(self) -> float:
        interval = self.notifier.watchdog_interval_s()
        if interval is None:
            return IDLE_WAKE_S
        return max(0.0, min(IDLE_WAKE_S, self._last_ping + interval - self._clock()))

    def _ping(self, *, force: bool = False) -> None:
        """WATCHDOG=1 when one is due (``force``: now, if a watchdog is set)."""
        interval = self.notifier.watchdog_interval_s()
        if interval is None:
            return
        if force or self._clock() - self._last_ping >= interval * 0.9:
            self.notifier.watchdog()
            self._last_ping = self._clock()

    def _step(self, reasons: frozenset[str]) -> None:
        try:
            snapshot = self.source.refresh()
            if self._worth_a_tick(reasons, snapshot):
                self._tick(snapshot, reasons)
        except RayConnectionLost as e:
            log.critical("%s; exiting (code %d) so that systemd restarts servesync",
                         e, EXIT_RAY_LOST)
            self.notifier.status(f"exiting: {e}"[:200])
            self.exit_code = EXIT_RAY_LOST
            self._stop.set()
        except SourceError as e:
            log.error("desired state unavailable: %s", e)
            self.notifier.status(f"no desired state: {e}"[:200])
        except Exception as e:
            log.exception("tick failed (reasons: %s)", ",".join(sorted(reasons)))
            self.notifier.status(f"tick {self.ticks} failed: {type(e).__name__}: {e}"[:200])
        finally:
            if not self.ready.is_set():
                self.notifier.ready()
                self.ready.set()

    def _worth_a_tick(self, reasons: frozenset[str], snapshot: Snapshot) -> bool:
        """A poll, or a watch event on a git source, ticks only if the tip moved."""
        if reasons - {"poll", "watch"} or self._last is None:
            return True
        if snapshot.revision is None and "watch" in reasons:
            return True
        return snapshot != self._last

    def _tick(self, snapshot: Snapshot, reasons: frozenset[str]) -> None:
        ticker = self._slot.get(self.config)
        self.ticks += 1
        started = self._clock()
        log.debug("tick %d starts (%s)", self.ticks, ",".join(sorted(reasons)))
        self._last = snapshot
        self._ping(force=True)  # a full watchdog period for the tick, not what is left of one
        result = ticker.tick(snapshot)
        took = self._clock() - started
        state = "converged" if result.converged else "converging"
        rev = snapshot.revision[:12] if snapshot.revision else "working tree"
        text = f"tick {self.ticks} at {rev}: {state}, {len(result.actions)} action(s)"
        if snapshot.error:
            text += f"; source: {snapshot.error}"
        self.notifier.status(text[:200])
        self._requeue(result.requeue_after_s)
        quiet = text.split(" ", 2)[2] == self._last_status  # same outcome as last time
        log.log(logging.DEBUG if quiet else logging.INFO, "%s in %.2f s", text, took)
        self._last_status = text.split(" ", 2)[2]

    def _requeue(self, after_s: float | None) -> None:
        """The one follow-up tick the last result asked for (None: none)."""
        with contextlib.suppress(Exception):  # the scheduler is shut down while stopping
            if after_s is None:
                if self._scheduler.get_job(REQUEUE_JOB):
                    self._scheduler.remove_job(REQUEUE_JOB)
                return
            when = datetime.now(UTC) + timedelta(seconds=max(MIN_REQUEUE_S, after_s))
            self._scheduler.add_job(self.triggers.fire, "date", args=("requeue",),
                                    id=REQUEUE_JOB, replace_existing=True, run_date=when)

    def _reload(self) -> None:
        """SIGHUP: new config if valid (same state_dir), then fetch now."""
        log.info("SIGHUP: reloading %s and fetching", self.config.path or "the default config")
        old = self.config
        try:
            new = config_mod.load(old.path)
        except Exception as e:  # ConfigError, or anything else: never lose the loop
            log.error("config reload failed, keeping the running config: %s", e)
            new = old
        if new.state_dir != old.state_dir:
            log.error("state_dir changed in %s: restart servesync to move it", old.path)
            new = old
        if new != old:
            log.info("config reloaded from %s", new.path)
            self.config = new
            self._slot.close()
            if new.source != old.source:
                self.source = open_source(new)
                self._last = None
                self._watch()
            self._schedule()
        self.source.force_fetch()


def run_daemon(
    config: Config,
    *,
    ticker_factory: TickerFactory,
    notifier: Notifier,
    stop_event: threading.Event | None = None,
    stop_grace_s: float = STOP_GRACE_S,
) -> int:
    """Run until SIGTERM/SIGINT (main thread) or ``stop_event``; the exit code."""
    stop = stop_event or threading.Event()
    lock = StateLock(Path(config.state_dir))
    try:
        lock.acquire()
    except LockHeldError as e:
        log.error("%s; not starting a second one", e)
        return EXIT_CONFIG
    restore: dict[int, Any] = {}
    try:
        loop = DaemonLoop(config, ticker_factory=ticker_factory, notifier=notifier)
        restore = _install_signals(stop, loop)
        loop.prepare()
        if stop.is_set():
            return EXIT_OK
        loop.start()
        while not stop.wait(IDLE_WAKE_S):
            if loop.exit_code is not None:
                notifier.stopping()
                loop.stop(stop_grace_s)
                return loop.exit_code
            if not loop.alive:
                log.critical("the tick worker died; exiting so that systemd restarts us")
                notifier.stopping()
                return EXIT_FAILED
        log.info("stopping: finishing the current tick; models keep serving")
        notifier.stopping()
        loop.stop(stop_grace_s)
        return EXIT_OK
    except ServesyncError as e:  # a bad config, an unreadable state.json: no retry helps
        log.error("not starting: %s", e)
        return EXIT_CONFIG
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        lock.release()


def _install_signals(stop: threading.Event, loop: DaemonLoop) -> dict[int, Any]:
    """SIGTERM/SIGINT stop, SIGHUP reloads; only possible on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        loop.request_reload()  # no logging in a signal handler: the worker logs

    previous: dict[int, Any] = {
        s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    return previous
