"""Ray's exceptions map to Transient or Permanent by type; Ray calls run under a deadline."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from servesync.errors import PermanentError, RayConnectionLost, TransientError
from tests.support.waiting import wait_for

rex = pytest.importorskip("ray.exceptions")
serve_exceptions = pytest.importorskip("ray.serve.exceptions")
calls = pytest.importorskip("servesync.rayserve.calls")


def wrapped(cause: BaseException) -> BaseException:
    """What ``ray.get`` raises when a remote call (e.g. the controller) failed."""
    return rex.RayTaskError("deploy_applications", "traceback", cause)


CASES = [
    pytest.param(ConnectionError("refused"), TransientError, id="connection"),
    pytest.param(rex.GetTimeoutError("slow"), TransientError, id="ray.get timeout"),
    pytest.param(rex.RaySystemError("gcs"), TransientError, id="RaySystemError"),
    pytest.param(rex.RayActorError(), TransientError, id="controller actor died"),
    pytest.param(ValueError("Invalid deployment config"), PermanentError, id="pydantic-like"),
    pytest.param(TypeError("bad arg"), PermanentError, id="type error"),
    pytest.param(serve_exceptions.RayServeException("prefix in use"), PermanentError,
                 id="RayServeException"),
    pytest.param(wrapped(serve_exceptions.RayServeException("x")), PermanentError,
                 id="remote RayServeException"),
    pytest.param(wrapped(rex.RaySystemError("x")), TransientError, id="remote system error"),
    pytest.param(RuntimeError("timeout: permanent?"), TransientError,
                 id="unknown type: retry, whatever the text"),
]


@pytest.mark.parametrize(("error", "kind"), CASES)
def test_classify_by_type(error: BaseException, kind: type[Exception]) -> None:
    out = calls.classify(error, what="deploy x")
    assert type(out) is kind
    assert str(out).startswith("cannot deploy x: ")


def test_a_hung_ray_call_times_out_and_blocks_no_later_tick() -> None:
    """A call stuck (e.g. on a dead GCS) fails at its deadline; while it is
    still stuck, other calls fail fast; once it returns, calls work again."""
    ray_thread = calls.RayThread()
    release = threading.Event()
    with pytest.raises(TransientError, match="no answer from Ray"):
        ray_thread.call(lambda: release.wait(10), what="hang", timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(TransientError, match="still busy"):
        ray_thread.call(lambda: 1, what="observe", timeout_s=5)
    assert time.monotonic() - started < 1.0
    release.set()

    def answers() -> bool:
        try:
            assert ray_thread.call(lambda: 42, what="observe", timeout_s=5) == 42
        except TransientError:
            return False
        return True

    wait_for("the Ray thread answers again", answers, deadline_s=5, poll_s=0.05)


def test_errors_raised_on_the_ray_thread_reach_the_caller() -> None:
    ray_thread = calls.RayThread()

    def boom() -> None:
        raise KeyError("LLMServer:x does not exist")

    with pytest.raises(KeyError):
        ray_thread.call(boom, what="boom", timeout_s=5)
    assert ray_thread.call(lambda: "next", what="next", timeout_s=5) == "next"


def test_a_call_stuck_past_the_bound_is_a_lost_connection() -> None:
    """Busy for longer than ``stuck_after_s``: not "busy" any more but
    RayConnectionLost (measured: a call on the old connection never returns
    once the head is back), and RayCalls keeps saying so."""
    ray_calls = calls.RayCalls(call_timeout_s=0.1, stuck_after_s=0.5)
    release = threading.Event()
    try:
        with pytest.raises(TransientError, match="no answer from Ray"):
            ray_calls.bounded(lambda: release.wait(10), what="read serve.status()")
        with pytest.raises(TransientError, match="still busy"):
            ray_calls.bounded(lambda: 1, what="observe")
        time.sleep(0.6)
        with pytest.raises(RayConnectionLost, match="has not returned from 'read serve"):
            ray_calls.bounded(lambda: 1, what="observe")
        release.set()
        time.sleep(0.1)  # the thread is free again, but this connection stays lost
        with pytest.raises(RayConnectionLost):
            ray_calls.bounded(lambda: 1, what="observe")
    finally:
        release.set()


def test_a_refused_gcs_port_after_connecting_is_a_lost_connection() -> None:
    """The GCS this process connected to refuses connections: this tick sees
    "unreachable" (a TransientError, so it publishes that), the next one
    RayConnectionLost. Before connecting, a refused port is only unreachable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    ray_calls = calls.RayCalls()
    with pytest.raises(TransientError, match="unreachable"):
        ray_calls.probe_gcs(("127.0.0.1", port))  # connecting: not lost
    assert ray_calls.lost is None
    ray_calls.gcs = ("127.0.0.1", port)  # as after a connect
    with pytest.raises(TransientError, match="unreachable"):
        ray_calls.probe_gcs()
    assert ray_calls.lost is not None
    with pytest.raises(RayConnectionLost, match="went away"):
        ray_calls.probe_gcs()
    with pytest.raises(RayConnectionLost):
        ray_calls.bounded(lambda: 1, what="observe")
