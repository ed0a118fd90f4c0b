"""How every Ray call of the applier is made: one thread, a deadline, a GCS probe,
errors mapped to servesync's own by type, and a lost connection detected.

Used only by :mod:`servesync.rayserve.applier`. A call against a dead GCS
can hang for Ray's 60 s reconnect timeout, so each call runs on the one Ray
thread under a deadline, after a TCP probe of the GCS port; Ray's exceptions
become :class:`~servesync.errors.TransientError` (connection, timeouts, dead
actors: retry) or :class:`~servesync.errors.PermanentError` (config Ray or
pydantic rejects), never by message text.

A driver whose head went away cannot be mended in-process (Ray 2.60: calls
on the old connection hang for good once the head is back, and Ray's client
ends the process ~60 s after the GCS died), so a lost connection is
:class:`RayConnectionLost`, which the daemon turns into exit code 3 for
systemd to restart it: the GCS port refusing connections after this process
had connected (the GCS is gone), or the Ray thread busy with one call for
longer than ``stuck_after_s``. docs/ARCHITECTURE.md, "The Ray seam".
"""

from __future__ import annotations

import errno
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from servesync.errors import PermanentError, RayConnectionLost, ServesyncError, TransientError

T = TypeVar("T")

CALL_TIMEOUT_S = 30.0  # one Ray call (deploy submission, status, delete)
GCS_PROBE_TIMEOUT_S = 2.0
UNKNOWN_ERROR_DELAY_S = 30.0  # an exception type we do not know: retry, but not soon
# One call busy this long: the connection is wedged. Above the ~60 s a first
# import of Ray Serve LLM can take on a loaded head (a deploy waits for it):
# a restart would only import again.
STUCK_AFTER_S = 4 * CALL_TIMEOUT_S


class RayCalls:
    """The applier's Ray calls: on one thread, bounded, with the GCS probed first."""

    def __init__(self, *, call_timeout_s: float = CALL_TIMEOUT_S,
                 stuck_after_s: float = STUCK_AFTER_S) -> None:
        self.call_timeout_s = call_timeout_s
        self.gcs: tuple[str, int] | None = None  # set once connected
        self.lost: str | None = None  # why the connection is gone, once it is
        self._thread = RayThread(stuck_after_s=stuck_after_s)

    def probe_gcs(self, gcs: tuple[str, int] | None = None) -> None:
        """A TCP connect to the GCS port: a dead head fails in seconds, not in 60.

        ``gcs``: a port to probe before connecting; by default the connected
        one, and then a refused connection means the GCS this process talks
        to has died: :attr:`lost` is set (this call still raises a
        TransientError, so the tick publishes "Ray unreachable"; the next
        call raises :class:`RayConnectionLost`)."""
        self.check_lost()
        target = gcs or self.gcs
        if target is None:
            return
        try:
            with socket.create_connection(target, timeout=GCS_PROBE_TIMEOUT_S):
                pass
        except OSError as e:
            host, port = target
            if gcs is None and e.errno == errno.ECONNREFUSED:
                self.lost = f"the Ray GCS at {host}:{port} went away (connection refused)"
            raise TransientError(f"Ray GCS at {host}:{port} unreachable: {e}") from e

    def check_lost(self) -> None:
        """Raise :class:`RayConnectionLost` once the connection is known gone."""
        if self.lost is not None:
            raise RayConnectionLost(f"Ray connection lost: {self.lost}")

    def bounded(self, fn: Callable[[], T], *, what: str, timeout_s: float | None = None) -> T:
        """Run one Ray call on the Ray thread under a deadline; map its errors."""
        deadline = timeout_s if timeout_s is not None else self.call_timeout_s
        self.check_lost()
        try:
            return self._thread.call(fn, what=what, timeout_s=deadline)
        except RayConnectionLost as e:
            self.lost = str(e)
            raise
        except ServesyncError:
            raise
        except Exception as e:
            raise classify(e, what=what) from e


class RayThread:
    """One long-lived thread that makes every Ray call of the applier.

    Long-lived because Ray starts a local cluster's GCS and raylet with
    ``PR_SET_PDEATHSIG``, which fires when the *thread* that spawned them ends
    (measured: a ``ray.init`` on a short-lived thread lost its GCS at once).
    A daemon thread because a call stuck on a dead GCS must not hold the
    process at exit; while one is stuck, further calls fail fast, and once it
    has been stuck for ``stuck_after_s`` they raise :class:`RayConnectionLost`.
    """

    def __init__(self, *, stuck_after_s: float = STUCK_AFTER_S) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self.stuck_after_s = stuck_after_s
        self._busy: str | None = None  # what the thread is doing now
        self._busy_since = 0.0  # time.monotonic() when it started
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="servesync-ray", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T], *, what: str, timeout_s: float) -> T:
        with self._lock:
            busy = self._busy
            if busy is not None:
                stuck_s = time.monotonic() - self._busy_since
                if stuck_s > self.stuck_after_s:
                    raise RayConnectionLost(
                        f"cannot {what}: Ray has not returned from {busy!r} in "
                        f"{stuck_s:.0f} s: the connection is wedged")
                raise TransientError(f"cannot {what}: Ray is still busy with: {busy}")
            self._busy, self._busy_since = what, time.monotonic()
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as e:
            raise TransientError(f"cannot {what}: no answer from Ray in {timeout_s:.0f} s") from e

    def _loop(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                result = fn()
            except BaseException as e:  # handed to the caller
                self._busy = None
                future.set_exception(e)
            else:
                self._busy = None
                future.set_result(result)


def parse_host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return (host.strip("[]") or "127.0.0.1", int(port))


def classify(error: BaseException, *, what: str) -> ServesyncError:
    """Map an exception from Ray to Transient or Permanent, by its type."""
    from ray import exceptions as rex
    from ray.serve.exceptions import RayServeException

    cause: BaseException = error
    while isinstance(cause, rex.RayTaskError) and cause.cause is not None:
        cause = cause.cause
    message = f"cannot {what}: {type(cause).__name__}: {cause}"
    transient = (
        ConnectionError, TimeoutError, rex.RaySystemError, rex.RayActorError,
        rex.LocalRayletDiedError, rex.WorkerCrashedError, rex.NodeDiedError,
        rex.ObjectLostError, rex.RpcError, rex.ObjectStoreFullError, rex.OutOfMemoryError,
    )
    permanent = (
        ValueError, TypeError, RayServeException, rex.RuntimeEnvSetupError,
        rex.AuthenticationError,
    )
    if isinstance(cause, transient):
        return TransientError(message)
    if isinstance(cause, permanent):
        return PermanentError(message)
    return TransientError(message, delay_s=UNKNOWN_ERROR_DELAY_S)
