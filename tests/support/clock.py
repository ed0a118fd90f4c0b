"""The one fake clock of the tests: datetimes that move only when the test moves them.

``T0`` is the fixed instant the tests start from and ``at(s)`` the instant
``s`` seconds later (the planner tests pass these as ``now``). A
:class:`FakeClock` is what a :class:`servesync.converge.reconciling.Reconciler`
takes as ``clock``: set ``now``, ``advance()`` it, or give it a ``step_s`` to
move by on every reading. The ``fake_clock`` fixture (tests/conftest.py) is one
at ``T0`` that stands still.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 6, 12, 30, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``seconds`` after ``T0``."""
    return T0 + timedelta(seconds=seconds)


class FakeClock:
    """A settable clock: ``clock()`` is ``now``, first moved on by ``step_s``."""

    def __init__(self, now: datetime = T0, *, step_s: float = 0.0) -> None:
        self.now = now
        self.step_s = step_s  # e.g. 5: every reading is 5 s later (settle windows pass)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=self.step_s)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
