"""The weights in effect of a model's versions (issue 11). Pure.

The gateway splits a model's requests among its versions whose application
serves (:func:`servesync.converge.planning._serves`); a version that does not
gets nothing, and its share goes to the others in proportion to their asked
weights (all of them asked 0: alike). Whole numbers summing to 100, by the
largest remainder, ties to the version listed first (docs/ARCHITECTURE.md,
"Weighted versions").
"""

from __future__ import annotations

from collections.abc import Sequence

TOTAL = 100


def in_effect(asked: Sequence[tuple[str, str, int]]) -> tuple[tuple[str, str, int], ...]:
    """``(app, version, asked weight)`` of the versions that serve -> ``(app,
    version, weight in effect)``, in the same order; empty when none serves."""
    if not asked:
        return ()
    total = sum(w for _, _, w in asked)
    shares = [w / total * TOTAL if total > 0 else TOTAL / len(asked) for _, _, w in asked]
    whole = [int(s) for s in shares]
    left = TOTAL - sum(whole)
    order = sorted(range(len(asked)), key=lambda i: (-(shares[i] - whole[i]), i))
    for i in order[:left]:
        whole[i] += 1
    return tuple((app, version, whole[i]) for i, (app, version, _) in enumerate(asked))
