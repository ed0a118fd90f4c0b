"""sd_notify against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
from pathlib import Path

from servesync.daemon.sdnotify import Notifier
from tests.support.sdnotify import NotifyListener


def test_messages_reach_the_socket(notify: NotifyListener) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": notify.path})
    assert n.enabled
    assert n.ready() and n.watchdog() and n.status("tick 3\nrev abc") and n.stopping()
    assert notify.wait_for("STOPPING=1", timeout=2.0)
    got = notify.texts()
    assert got == ["READY=1", "WATCHDOG=1", "STATUS=tick 3 rev abc", "STOPPING=1"]


def test_abstract_socket_address() -> None:
    with NotifyListener(abstract=True) as listener:
        assert listener.path.startswith("@servesync-test-")
        assert Notifier.from_env({"NOTIFY_SOCKET": listener.path}).ready()
        assert listener.wait_for("READY=1", timeout=2.0)
        assert listener.texts() == ["READY=1"]


def test_no_socket_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval_s() is None


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready()


def test_watchdog_interval_is_half_the_timeout() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "60000000"}
    assert Notifier.from_env(env).watchdog_interval_s() == 30.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_interval_s() == 30.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_interval_s() is None
