"""A model changing shape (plain -> versions, or back) whose new shape is not
to run (``enabled: false``, or stopped by its schedule): the old record is
not kept serving against the user's stop; it takes the undeclared road
(out of the gateway, application deleted, record forgotten)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync.config import Config
from servesync.converge.records import State
from tests.unit.versions.test_versions_tick import settle, ticking, write

PLAIN = "model_id: m\nmodel_source: $HOME/common/hf/tiny\ncpus_per_replica: 1\n"
CLOSED = ("schedule:\n  active_hours: {days: [sat], start: '08:00', end: '09:00', "
          "timezone: UTC}\n")  # T0 is a Tuesday


@pytest.mark.parametrize("extra", ["enabled: false\n", CLOSED], ids=["disabled", "schedule"])
def test_plain_turned_into_versions_that_do_not_run_stops_the_plain_app(
        cpu_config: Config, desired_tree: Path, storage_root: Path, extra: str) -> None:
    (storage_root / "hf" / "tiny2").mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    (desired_tree / "users" / "alice" / "m.yaml").write_text(PLAIN)
    settle(rec, ray, snap)
    (plain,) = rec.store.models().values()
    write(desired_tree, extra=extra)
    settle(rec, ray, snap)
    records = rec.store.models()
    assert plain.model_key not in records  # forgotten, as any undeclared model
    assert {r.version: r.state for r in records.values()} == {
        "stable": State.STOPPED, "canary": State.STOPPED}
    assert {r.public_id for r in records.values()} == {plain.public_id}
    assert plain.app_name not in ray.apps
    assert rec.store.gateway().members == ()


def test_versions_turned_into_a_disabled_plain_model_stop_the_versions(
        cpu_config: Config, desired_tree: Path, storage_root: Path) -> None:
    (storage_root / "hf" / "tiny2").mkdir()
    rec, ray, snap = ticking(cpu_config, desired_tree)
    write(desired_tree)
    settle(rec, ray, snap)
    apps = {r.app_name for r in rec.store.models().values()}
    (desired_tree / "users" / "alice" / "m.yaml").write_text(PLAIN + "enabled: false\n")
    settle(rec, ray, snap)
    (back,) = rec.store.models().values()
    assert back.version is None and back.state is State.STOPPED
    assert not apps & set(ray.apps)
    assert rec.store.gateway().members == ()
