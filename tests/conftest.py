"""Fixtures every test may use: a storage root, a desired tree, a CPU config,
a fake clock and an sd_notify listener, all in the test's own temp dir.

The helpers behind them (and the fake Ray, the git helper, ``wait_for``) are
in tests/support/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servesync.config import Config, ServingConfig
from tests.support.clock import FakeClock
from tests.support.sdnotify import NotifyListener


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    """``<tmp>/private``, the storage root, with an (empty) ``hf/tiny`` model folder:
    ``model_source: $HOME/common/hf/tiny`` resolves into it."""
    root = tmp_path / "private"
    (root / "hf" / "tiny").mkdir(parents=True)
    return root


@pytest.fixture
def desired_tree(tmp_path: Path) -> Path:
    """``<tmp>/desired``, a desired-state tree with an empty ``users/alice/`` folder."""
    root = tmp_path / "desired"
    (root / "users" / "alice").mkdir(parents=True)
    return root


@pytest.fixture
def cpu_config(tmp_path: Path, storage_root: Path) -> Config:
    """A Config for CPU serving with ``<tmp>/state`` (not created: the Store
    makes it), ``<tmp>/status`` and the ``storage_root`` fixture."""
    return Config(state_dir=str(tmp_path / "state"), status_dir=str(tmp_path / "status"),
                  storage_root=str(storage_root), serving=ServingConfig(accelerator_type="cpu"))


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock at ``T0`` that moves only when the test moves it (tests/support/clock.py)."""
    return FakeClock()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    """An sd_notify listener; ``notify.path`` is the ``NOTIFY_SOCKET`` value."""
    with NotifyListener() as listener:
        yield listener
