"""The one ``wait_for`` of the tests: poll a condition until it holds or fail the test.

Used by the unit tests (threads, subprocesses, the daemon loop: polled every
10 ms by default) and by the e2e tests (real Ray, real HTTP: they poll less
often and record the seconds it took as timings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    deadline_s: float,
    poll_s: float = 0.01,
    started: float | None = None,
    detail: Callable[[], object] | None = None,
) -> float:
    """Poll ``check`` until true; return the seconds it took, fail at the deadline.

    ``started`` is the ``time.monotonic()`` both the deadline and the result
    count from (default: now); ``detail`` adds what it returns to the failure
    message. An exception raised by ``check`` ends the wait at once.
    """
    start = time.monotonic() if started is None else started
    while not check():
        if time.monotonic() - start > deadline_s:
            extra = "" if detail is None else f": {detail()}"
            pytest.fail(f"{what}: not reached within {deadline_s:g} s{extra}")
        time.sleep(poll_s)
    return time.monotonic() - start
