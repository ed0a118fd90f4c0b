"""converge: the decision, and the one tick that carries it out.

Owns the pure planner (``plan(desired, recorded, observed, now)`` →
typed actions), naming, the record and observation types, the ports
(protocols for Ray, the records and the status files) and the reconciler
that runs a tick through them. May import: ``desired``, ``config``,
``errors``. Never ``state``, ``rayserve``, ``status``, ``daemon``: those are
plugged in through :mod:`servesync.converge.ports` (docs/ARCHITECTURE.md).
"""
