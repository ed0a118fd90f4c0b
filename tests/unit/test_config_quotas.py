"""``serving.quotas`` in the daemon config: loading, merging, and refusing bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import config
from servesync.config import Quota, Quotas
from servesync.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "servesync.yaml"
    path.write_text(text)
    return config.load(path)


def test_no_quotas_by_default(tmp_path: Path) -> None:
    quotas = _load(tmp_path, "serving: {accelerator_type: cpu}\n").serving.quotas
    assert quotas == Quotas() and not quotas.active
    assert quotas.for_user("alice") == Quota()


def test_a_user_entry_replaces_the_default_keys_it_names_and_keeps_the_others(
        tmp_path: Path) -> None:
    quotas = _load(tmp_path, """\
serving:
  quotas:
    default: {gpus: 8, replicas: 4, models: 2}
    users:
      alice: {gpus: 16}
      bob: {models: null}
      carol: {}
""").serving.quotas
    assert quotas.active
    assert quotas.for_user("alice") == Quota(gpus=16, replicas=4, models=2)
    assert quotas.for_user("bob") == Quota(gpus=8, replicas=4, models=None)  # null: no limit
    assert quotas.for_user("carol") == quotas.for_user("dave") == Quota(8, 4, 2)


def test_only_some_users_limited_is_active(tmp_path: Path) -> None:
    quotas = _load(tmp_path, "serving: {quotas: {users: {alice: {models: 1}}}}\n").serving.quotas
    assert quotas.active and quotas.for_user("bob") == Quota()
    assert quotas.for_user("alice") == Quota(models=1)


def test_quotas_are_part_of_the_config_a_reload_compares(tmp_path: Path) -> None:
    one = _load(tmp_path, "serving: {quotas: {default: {gpus: 1}}}\n")
    two = _load(tmp_path, "serving: {quotas: {default: {gpus: 2}}}\n")
    assert one != two and one == _load(tmp_path, "serving: {quotas: {default: {gpus: 1}}}\n")


@pytest.mark.parametrize(("text", "where"), [
    ("default: {gpus: -1}", "/serving/quotas/default/gpus"),
    ("default: {replicas: 1.5}", "/serving/quotas/default/replicas"),
    ("default: {models: '3'}", "/serving/quotas/default/models"),
    ("default: {cpus: 3}", "/serving/quotas/default"),  # unknown key
    ("default: 4", "/serving/quotas/default"),
    ("users: {Alice: {gpus: 1}}", "/serving/quotas/users"),  # not a user_id
    ("users: {'alice\\n': {gpus: 1}}", "/serving/quotas/users"),
    ("users: {alice: {gpus: -2}}", "/serving/quotas/users/alice/gpus"),
    ("users: {alice: {replicas: 10000000}}", "/serving/quotas/users/alice/replicas"),
    ("users: [alice]", "/serving/quotas/users"),
    ("max_gpus: 1", "/serving/quotas"),
])
def test_a_bad_quota_is_a_config_error_naming_the_field(
        tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"serving:\n  quotas: {{{text}}}\n")
    assert f"servesync.yaml: {where}: " in str(err.value)
