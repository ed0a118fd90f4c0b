"""When the reconciler asks to run again (``TickResult.requeue_after_s``).

The daemon schedules exactly the delay a tick returns, so these tests drive
the Reconciler the way the daemon does, on a fake clock: each tick happens
when the previous one asked for it, and the ticks are counted.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from servesync.config import Config
from servesync.converge.planning import BACKOFF_MAX_S, SETTLE_S, requeue_after
from servesync.converge.reconciling import Reconciler, TickResult
from servesync.converge.records import State
from servesync.desired.sources import Snapshot
from servesync.errors import TransientError
from tests.support.clock import FakeClock, at
from tests.support.fakeray import FakeRay, make_reconciler
from tests.unit.converge.plancases import record, spec

FIVE_MINUTES_S = 300.0


class FailingRay(FakeRay):
    """Every model deploy fails with a transient error asking for ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.deploys = 0

    def deploy_model(self, *args: object, **kwargs: object) -> None:
        self.deploys += 1
        raise TransientError("GCS unavailable", delay_s=self.delay_s)


@pytest.fixture
def tree(cpu_config: Config, desired_tree: Path) -> tuple[Config, Snapshot]:
    (desired_tree / "users" / "alice" / "a.yaml").write_text(
        "model_id: a\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n")
    Path(cpu_config.state_dir).mkdir()
    return cpu_config, Snapshot(root=desired_tree, revision="r1", error=None, watch_paths=())


def ticks_within(rec: Reconciler, snap: Snapshot, clock: FakeClock,
                 span_s: float) -> list[TickResult]:
    """Tick, then tick again exactly when asked, until ``span_s`` has passed."""
    end = clock.now + timedelta(seconds=span_s)
    results = [rec.tick(snap)]
    while results[-1].requeue_after_s is not None:
        clock.advance(results[-1].requeue_after_s)
        if clock.now > end:
            break
        results.append(rec.tick(snap))
    return results


def test_a_model_in_a_five_minute_backoff_costs_a_handful_of_ticks(
        tree: tuple[Config, Snapshot], fake_clock: FakeClock) -> None:
    config, snap = tree
    clock, ray = fake_clock, FailingRay(delay_s=FIVE_MINUTES_S)
    rec = make_reconciler(config, ray, clock)
    results = ticks_within(rec, snap, clock, FIVE_MINUTES_S)
    (model,) = rec.store.models().values()
    assert model.state is State.QUEUED
    assert results[0].requeue_after_s == FIVE_MINUTES_S  # the error's delay_s is honoured
    assert len(results) <= 3, [r.requeue_after_s for r in results]
    assert ray.deploys == len(results)  # each of those ticks was the retry itself
    assert ray.observations == len(results)  # and nothing else asked Ray anything


def test_the_backoff_doubles_and_each_retry_is_one_tick(
        tree: tuple[Config, Snapshot], fake_clock: FakeClock) -> None:
    config, snap = tree
    clock, ray = fake_clock, FailingRay(delay_s=0.0)
    rec = make_reconciler(config, ray, clock)
    waits = [r.requeue_after_s for r in ticks_within(rec, snap, clock, 2 * BACKOFF_MAX_S)]
    assert waits[:7] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, BACKOFF_MAX_S]
    assert ray.deploys == len(waits)


def test_a_loading_model_is_followed_at_the_settle_delay_and_a_converged_one_not_at_all(
        tree: tuple[Config, Snapshot], fake_clock: FakeClock) -> None:
    config, snap = tree
    clock, ray = fake_clock, FakeRay()
    rec = make_reconciler(config, ray, clock)
    first = rec.tick(snap)  # submitted: Ray will say when it runs
    assert first.requeue_after_s == SETTLE_S and not first.settled
    for _ in range(5):
        clock.advance(SETTLE_S)
        ray.settle()
        result = rec.tick(snap)
        if result.converged:
            break
    assert result.converged and result.requeue_after_s is None


def test_ray_unreachable_is_looked_at_again_soon(
        tree: tuple[Config, Snapshot], fake_clock: FakeClock) -> None:
    config, snap = tree
    clock, ray = fake_clock, FakeRay()
    ray.reachable = False
    result = make_reconciler(config, ray, clock).tick(snap)
    assert result.actions == () and result.requeue_after_s == SETTLE_S


@pytest.mark.parametrize(("state", "retry_in", "in_flight", "expected"), [
    (State.RUNNING, None, False, None),
    (State.FAILED, None, False, None),  # waits for a new spec: only a commit helps
    (State.STOPPED, None, False, None),
    (State.RUNNING, None, True, SETTLE_S),
    (State.DEPLOYING, None, False, SETTLE_S),
    (State.DELETING, None, False, SETTLE_S),
    (State.QUEUED, 120.0, False, 120.0),
    (State.QUEUED, 120.0, True, SETTLE_S),
    (State.QUEUED, -1.0, False, None),  # due but not retried (its file is invalid): no spin
])
def test_requeue_after_table(state: State, retry_in: float | None, in_flight: bool,
                             expected: float | None) -> None:
    rec = replace(record(spec(), state), retry_at=None if retry_in is None
                  else at(retry_in).isoformat(timespec="seconds"))
    assert requeue_after({rec.model_key: rec}, now=at(0), in_flight=in_flight) == expected
