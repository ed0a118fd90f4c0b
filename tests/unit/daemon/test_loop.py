"""The daemon loop with a fake Ticker: sd_notify, triggers, coalescing, signals, lock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servesync.config import Config, SourceConfig
from servesync.converge.reconciling import TickResult
from servesync.daemon.loop import EXIT_CONFIG, EXIT_RAY_LOST, DaemonLoop, run_daemon
from servesync.daemon.sdnotify import Notifier
from servesync.desired.sources import Snapshot
from servesync.errors import RayConnectionLost
from servesync.state.store import Store
from tests.support.gitrepos import commit_file, init_repo
from tests.support.sdnotify import NotifyListener
from tests.support.waiting import wait_for

WITHIN_S = 30.0  # generous bounds (a loaded 2-core CI machine): the benchmark measures latencies
Running = Callable[..., tuple[threading.Event, list[int]]]  # the `running` fixture


class FakeTicker:
    """Records ticks; can block a chosen tick or raise on the first one."""

    def __init__(self, *, fail_first: bool = False, block_tick: int | None = None) -> None:
        self.snapshots: list[Snapshot] = []
        self.fail_first = fail_first
        self.block_tick = block_tick
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False
        self.requeues: list[float | None] = []  # what each tick asks for; then None

    def tick(self, snapshot: Snapshot) -> TickResult:
        self.snapshots.append(snapshot)
        if len(self.snapshots) == self.block_tick:
            self.entered.set()
            assert self.release.wait(WITHIN_S)
        if self.fail_first and len(self.snapshots) == 1:
            raise RuntimeError("boom")
        requeue = self.requeues.pop(0) if self.requeues else None
        return TickResult(len(self.snapshots), snapshot.revision, (), settled=requeue is None,
                          converged=requeue is None, requeue_after_s=requeue)

    def __enter__(self) -> FakeTicker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


def _config(tmp_path: Path, *, tick_interval_s: float = 3600.0) -> Config:
    tree = tmp_path / "tree"
    (tree / "users").mkdir(parents=True, exist_ok=True)
    return Config(
        source=SourceConfig(path=str(tree)),
        state_dir=str(tmp_path / "state"),
        tick_interval_s=tick_interval_s,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """Starts run_daemon in a thread; stops it at the end of the test."""
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(
        config: Config, ticker: FakeTicker, notifier: Notifier
    ) -> tuple[threading.Event, list[int]]:
        stop, rc = threading.Event(), []
        t = threading.Thread(
            target=lambda: rc.append(
                run_daemon(config, ticker_factory=lambda c: ticker, notifier=notifier,
                           stop_event=stop)
            ),
            daemon=True,
        )  # fmt: skip
        t.start()
        stops.append((stop, t))
        return stop, rc

    yield start
    for stop, t in stops:
        stop.set()
        t.join(WITHIN_S)


def test_first_tick_then_ready_and_status(
    tmp_path: Path, notify: NotifyListener, running: Running
) -> None:
    ticker = FakeTicker()
    stop, rc = running(_config(tmp_path), ticker, Notifier(notify.path))
    assert notify.wait_for("READY=1")
    assert len(ticker.snapshots) >= 1
    assert ticker.snapshots[0].root == tmp_path / "tree"
    seen = notify.texts()
    first_status = seen.index("STATUS=tick 1 at working tree: converged, 0 action(s)")
    assert first_status < seen.index("READY=1")
    stop.set()
    wait_for("run_daemon returns 0", lambda: rc == [0], deadline_s=WITHIN_S)
    assert notify.wait_for("STOPPING=1")
    assert ticker.closed


def test_a_file_change_triggers_a_tick(
    tmp_path: Path, notify: NotifyListener, running: Running
) -> None:
    ticker = FakeTicker()
    running(_config(tmp_path), ticker, Notifier(notify.path))
    assert notify.wait_for("READY=1")
    time.sleep(0.3)  # let the watcher settle in (it starts before the first tick)
    before = len(ticker.snapshots)
    (tmp_path / "tree" / "users" / "m.yaml").write_text("a: 1\n")
    wait_for("a tick after the write", lambda: len(ticker.snapshots) > before,
             deadline_s=WITHIN_S)


def test_a_commit_to_a_local_repository_triggers_a_tick_at_the_new_revision(
    tmp_path: Path, notify: NotifyListener, running: Callable[..., object]
) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_file(repo, "users/a/m.yaml", "v: 1\n")
    config = Config(source=SourceConfig(path=str(repo)), state_dir=str(tmp_path / "state"),
                    tick_interval_s=3600.0)  # fmt: skip
    ticker = FakeTicker()
    running(config, ticker, Notifier(notify.path))
    assert notify.wait_for("READY=1")
    assert ticker.snapshots[0].revision == first
    time.sleep(0.3)
    second = commit_file(repo, "users/a/m.yaml", "v: 2\n")
    wait_for("a tick at the second commit", lambda: ticker.snapshots[-1].revision == second,
             deadline_s=WITHIN_S)
    assert (ticker.snapshots[-1].root / "users/a/m.yaml").read_text() == "v: 2\n"


def test_the_interval_ticks(
    tmp_path: Path, notify: NotifyListener, running: Callable[..., object]
) -> None:
    ticker = FakeTicker()
    running(_config(tmp_path, tick_interval_s=0.2), ticker, Notifier(notify.path))
    wait_for("three ticks", lambda: len(ticker.snapshots) >= 3, deadline_s=WITHIN_S)


def test_triggers_during_a_tick_coalesce_into_one_more(tmp_path: Path) -> None:
    ticker = FakeTicker(block_tick=1)
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker, notifier=Notifier(None))
    loop.start()
    try:
        assert ticker.entered.wait(WITHIN_S)
        for _ in range(10):
            loop.triggers.fire("watch")
        loop.triggers.fire("interval")
        ticker.release.set()
        wait_for("two ticks", lambda: len(ticker.snapshots) == 2, deadline_s=WITHIN_S)
        time.sleep(0.5)
        assert len(ticker.snapshots) == 2
    finally:
        assert loop.stop()


def test_a_context_manager_factory_is_entered_once_and_exited_at_stop(tmp_path: Path) -> None:
    ticker, events = FakeTicker(), []

    @contextlib.contextmanager
    def factory(config: Config) -> Iterator[FakeTicker]:
        events.append("enter")
        yield ticker
        events.append("exit")

    loop = DaemonLoop(_config(tmp_path), ticker_factory=factory, notifier=Notifier(None))
    loop.start()
    assert loop.ready.wait(WITHIN_S)
    loop.triggers.fire("interval")
    wait_for("two ticks", lambda: len(ticker.snapshots) == 2, deadline_s=WITHIN_S)
    assert loop.stop()
    assert events == ["enter", "exit"]


def test_a_tick_runs_again_exactly_when_it_asked_and_not_otherwise(tmp_path: Path) -> None:
    ticker = FakeTicker()
    ticker.requeues = [0.6, None]  # tick 1: "look again in 0.6 s"; tick 2: nothing pending
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker, notifier=Notifier(None))
    loop.start()
    try:
        wait_for("the requeued tick", lambda: len(ticker.snapshots) == 2, deadline_s=WITHIN_S)
        time.sleep(1.5)  # no interval (3600 s), no change: nothing else may tick
        assert len(ticker.snapshots) == 2
    finally:
        assert loop.stop()


def test_a_long_requeue_is_scheduled_once_not_polled(tmp_path: Path) -> None:
    ticker = FakeTicker()
    ticker.requeues = [300.0]  # a model backing off for 5 minutes
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker, notifier=Notifier(None))
    loop.start()
    try:
        wait_for("the first tick", lambda: len(ticker.snapshots) == 1, deadline_s=WITHIN_S)
        time.sleep(2.5)  # the old loop re-ticked every 2 s while anything was unsettled
        assert len(ticker.snapshots) == 1
        job = loop._scheduler.get_job("requeue")
        assert job is not None
        left = (job.next_run_time - datetime.now(UTC)).total_seconds()
        assert 290 < left <= 300
        loop.triggers.fire("watch")  # a change ticks at once; its result replaces the request
        wait_for("the change's tick", lambda: len(ticker.snapshots) == 2, deadline_s=WITHIN_S)
        wait_for("the request dropped", lambda: loop._scheduler.get_job("requeue") is None,
                 deadline_s=WITHIN_S)
    finally:
        assert loop.stop()


def test_a_raising_tick_does_not_stop_the_loop(
    tmp_path: Path, notify: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    ticker = FakeTicker(fail_first=True)
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker,
                      notifier=Notifier(notify.path))  # fmt: skip
    loop.start()
    try:
        assert notify.wait_for("READY=1")
        assert "STATUS=tick 1 failed: RuntimeError: boom" in notify.texts()
        assert any(r.exc_info and "tick failed" in r.getMessage() for r in caplog.records)
        loop.triggers.fire("interval")
        wait_for("two ticks", lambda: len(ticker.snapshots) == 2, deadline_s=WITHIN_S)
        assert loop.alive
    finally:
        loop.stop()


class RayLostTicker(FakeTicker):
    """Ticks normally, then finds the Ray connection lost (as RayApplier raises it)."""

    def tick(self, snapshot: Snapshot) -> TickResult:
        if len(self.snapshots) >= 1:
            self.snapshots.append(snapshot)
            raise RayConnectionLost("Ray connection lost: the Ray GCS went away")
        return super().tick(snapshot)


def test_a_lost_ray_connection_stops_the_pings_and_exits_3(
    tmp_path: Path, notify: NotifyListener, running: Running
) -> None:
    """Only a new process reconnects: exit 3 (systemd restarts on it), STOPPING=1,
    the ticker closed, and no WATCHDOG=1 after the tick that found it."""
    ticker = RayLostTicker()
    ticker.requeues.append(0.6)  # the first tick asks for a second one, which finds it lost
    notifier = Notifier(notify.path, watchdog_usec=200_000)
    _, rc = running(_config(tmp_path), ticker, notifier)
    assert notify.wait_for("READY=1")
    since = notify.count()
    assert notify.wait_for("WATCHDOG=1", since=since)  # still moving
    wait_for("run_daemon returns 3", lambda: rc == [EXIT_RAY_LOST], deadline_s=WITHIN_S)
    texts = notify.texts(since)
    assert "STATUS=exiting: Ray connection lost: the Ray GCS went away" in texts, texts
    stopping = texts.index("STOPPING=1")
    time.sleep(0.5)  # five watchdog intervals
    assert "WATCHDOG=1" not in notify.texts(since)[stopping:]
    assert ticker.closed and len(ticker.snapshots) == 2


def test_watchdog_pings_only_while_the_loop_moves(tmp_path: Path, notify: NotifyListener) -> None:
    ticker = FakeTicker(block_tick=2)
    notifier = Notifier(notify.path, watchdog_usec=200_000)  # ping every 0.1 s
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker, notifier=notifier)
    loop.start()
    try:
        assert notify.wait_for("READY=1")
        assert notify.wait_for("WATCHDOG=1")
        loop.triggers.fire("interval")
        assert ticker.entered.wait(WITHIN_S)
        notify.drain()  # every ping sent before the stuck tick began
        time.sleep(0.6)  # six watchdog intervals while the tick is stuck
        assert "WATCHDOG=1" not in notify.drain()
        since = notify.count()
        ticker.release.set()
        assert notify.wait_for("WATCHDOG=1", since=since)
    finally:
        loop.stop()


def test_each_tick_starts_with_a_fresh_watchdog_ping(
    tmp_path: Path, notify: NotifyListener
) -> None:
    ticker = FakeTicker(block_tick=2)
    notifier = Notifier(notify.path, watchdog_usec=60_000_000)  # a ping due every 27-30 s
    loop = DaemonLoop(_config(tmp_path), ticker_factory=lambda c: ticker, notifier=notifier)
    loop.start()
    try:
        assert notify.wait_for("READY=1")
        notify.drain()
        loop.triggers.fire("interval")
        assert ticker.entered.wait(WITHIN_S)
        assert "WATCHDOG=1" in notify.drain()  # sent just before the tick, seconds after the last
        ticker.release.set()
    finally:
        loop.stop()


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    tmp_path: Path,
    notify: NotifyListener,
    running: Running,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _config(tmp_path)
    running(config, FakeTicker(), Notifier(notify.path))
    assert notify.wait_for("READY=1")
    second = FakeTicker()
    rc = run_daemon(config, ticker_factory=lambda c: second, notifier=Notifier(None),
                    stop_event=threading.Event())  # fmt: skip
    assert rc == EXIT_CONFIG
    assert second.snapshots == []
    assert any("another servesync" in r.getMessage() for r in caplog.records)


def test_an_unreadable_state_file_ends_the_start_with_exit_2(
    tmp_path: Path, notify: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path)
    Path(config.state_dir).mkdir(parents=True)
    (Path(config.state_dir) / "state.json").write_text("{not json")
    stop = threading.Event()
    timer = threading.Timer(2.0, stop.set)  # without the check, it would run until stopped
    timer.start()
    try:
        rc = run_daemon(config, ticker_factory=lambda c: Store(Path(c.state_dir)),
                        notifier=Notifier(notify.path), stop_event=stop)  # fmt: skip
    finally:
        timer.cancel()
    assert rc == EXIT_CONFIG
    assert "READY=1" not in notify.drain()
    assert any("recorded state is unreadable" in r.getMessage() for r in caplog.records)


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from contextlib import nullcontext
    from servesync import config
    from servesync.converge.reconciling import TickResult
    from servesync.daemon.loop import run_daemon
    from servesync.daemon.logs import setup_logging
    from servesync.daemon.sdnotify import Notifier

    marks = Path(sys.argv[2])

    class Ticker:
        n = 0

        def tick(self, snapshot):
            Ticker.n += 1
            (marks / f"start-{Ticker.n}").touch()
            if (snapshot.root / "slow").exists():
                time.sleep(2)
            (marks / f"end-{Ticker.n}").touch()
            return TickResult(Ticker.n, None, (), settled=True, converged=True,
                              requeue_after_s=None)

    setup_logging(fmt="json", level="INFO")
    cfg = config.from_mapping(
        {"source": {"path": sys.argv[3]}, "state_dir": sys.argv[4], "tick_interval_s": 3600},
        base_dir=Path("."),
        path=sys.argv[1],
    )
    sys.exit(run_daemon(cfg, ticker_factory=lambda c: nullcontext(Ticker()),
                        notifier=Notifier.from_env()))
    """
)


@pytest.fixture
def child(tmp_path: Path, notify: NotifyListener) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    script, marks = tmp_path / "child.py", tmp_path / "marks"
    script.write_text(CHILD)
    marks.mkdir()
    config = _config(tmp_path)
    cfg_file = tmp_path / "servesync.yaml"
    cfg_file.write_text("tick_interval_s: 3600\n")
    env = {**os.environ, "NOTIFY_SOCKET": notify.path}
    args = [str(cfg_file), str(marks), str(config.source.path), config.state_dir]
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], env=env, stderr=subprocess.PIPE, text=True
    )
    yield proc, marks
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=WITHIN_S)


def test_sigterm_finishes_the_tick_and_exits_0(
    tmp_path: Path, notify: NotifyListener, child: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, marks = child
    assert notify.wait_for("READY=1", timeout=30)
    (tmp_path / "tree" / "slow").write_text("")  # the next tick takes 2 s
    wait_for("tick 2 starts", lambda: (marks / "start-2").exists(), deadline_s=WITHIN_S)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert (marks / "end-2").exists()  # the current tick was finished, not cut
    assert notify.wait_for("STOPPING=1")


def test_sighup_forces_a_tick_and_keeps_the_config_when_invalid(
    tmp_path: Path, notify: NotifyListener, child: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, marks = child
    assert notify.wait_for("READY=1", timeout=30)
    (tmp_path / "servesync.yaml").write_text("tick_interval_s: [not, a, number\n")
    proc.send_signal(signal.SIGHUP)
    wait_for("tick 2 ends", lambda: (marks / "end-2").exists(), deadline_s=WITHIN_S)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    _, err = proc.communicate(timeout=WITHIN_S)
    assert "config reload failed, keeping the running config" in err
