"""The weights in effect of a model's versions (issue 11). Pure.

The gateway splits a model's requests among its versions whose application
serves (:func:`servesync.converge.planning._serves`); a version that does not
gets nothing, and its share goes to the others in proportion to their asked
weights. A version asking 0 never gets a share (it is reachable only by the
pin header): when every version that serves asks 0, all are at 0 and the
model takes no unpinned request. Whole numbers summing to 100 (or all 0), by
the largest remainder, ties to the version listed first (docs/ARCHITECTURE.md,
"Weighted versions").
"""

from __future__ import annotations

from collections.abc import Sequence

from servesync.desired.versioning import TOTAL_WEIGHT as TOTAL


def in_effect(asked: Sequence[tuple[str, str, int]]) -> tuple[tuple[str, str, int], ...]:
    """``(app, version, asked weight)`` of the versions that serve -> ``(app,
    version, weight in effect)``, in the same order; empty when none serves.
    Exact (integers): a version asking 0 gets 0, every time."""
    total = sum(max(w, 0) for _, _, w in asked)
    if total <= 0:
        return tuple((app, version, 0) for app, version, _ in asked)
    whole = [max(w, 0) * TOTAL // total for _, _, w in asked]
    rest = [max(w, 0) * TOTAL % total for _, _, w in asked]
    left = TOTAL - sum(whole)
    order = sorted((i for i in range(len(asked)) if rest[i] > 0), key=lambda i: (-rest[i], i))
    for i in order[:left]:
        whole[i] += 1
    return tuple((app, version, whole[i]) for i, (app, version, _) in enumerate(asked))
