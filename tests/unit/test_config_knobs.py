"""The daemon config's issue-10 fields: the GPU types the cluster offers (with
their compute capability), the memory cap, the rolling update size and the
bounds of a model file's rollout; and the config errors when they disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import config
from servesync.config import Bounds, RolloutBounds, ServingConfig
from servesync.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "servesync.yaml"
    path.write_text(text)
    return config.load(path)


def test_the_defaults_leave_every_existing_config_as_it_was(tmp_path: Path) -> None:
    serving = _load(tmp_path, "serving:\n  accelerator_type: H20\n").serving
    assert serving.accelerator_types == {}
    assert serving.offered_accelerators() == ("H20",)
    assert (serving.max_memory_gb_per_replica, serving.max_unavailable_percent) == (None, None)
    assert serving.rollout_bounds == RolloutBounds(Bounds(60, 3600), Bounds(0, 100),
                                                   Bounds(1, 100))


def test_a_gpu_cluster_with_its_types(tmp_path: Path) -> None:
    serving = _load(tmp_path, """
serving:
  accelerator_type: H20
  accelerator_types: {H20: "9.0", A100-80G: 8.0, L40S: "8.9", B200: 10}
  max_memory_gb_per_replica: 512
  max_unavailable_percent: 25
  rollout_bounds:
    deploy_timeout_s: {max: 7200}
    max_surge_percent: {min: 0, max: 50}
""").serving
    assert serving.accelerator_types == {"H20": "9.0", "A100-80G": "8.0", "L40S": "8.9",
                                         "B200": "10.0"}
    assert serving.offered_accelerators() == ("H20", "A100-80G", "L40S", "B200")
    assert serving.max_memory_gb_per_replica == 512
    assert serving.max_unavailable_percent == 25
    assert serving.rollout_bounds.deploy_timeout_s == Bounds(60, 7200)
    assert serving.rollout_bounds.max_surge_percent == Bounds(0, 50)
    assert serving.rollout_bounds.max_unavailable_percent == Bounds(1, 100)


@pytest.mark.parametrize(("text", "words"), [
    ("serving:\n  accelerator_types: {H20: '9'}\n", "/serving/accelerator_types/H20"),
    ("serving:\n  accelerator_types: {'H 20': '9.0'}\n", "/serving/accelerator_types"),
    ("serving:\n  accelerator_type: cpu\n  accelerator_types: {H20: '9.0'}\n",
     "has no GPUs"),
    ("serving:\n  accelerator_type: H100\n  accelerator_types: {H20: '9.0'}\n",
     "'H100' is not in serving.accelerator_types"),
    ("serving:\n  max_memory_gb_per_replica: 0\n", "/serving/max_memory_gb_per_replica"),
    ("serving:\n  max_unavailable_percent: 0\n", "/serving/max_unavailable_percent"),
    ("serving:\n  rollout_bounds: {deploy_timeout_s: {min: 600, max: 60}}\n",
     "min 600 is greater than max 60"),
    ("serving:\n  rollout_bounds: {max_surge_percent: {max: 101}}\n",
     "/serving/rollout_bounds/max_surge_percent/max"),
    ("serving:\n  rollout_bounds: {deploy_timeout: {max: 60}}\n",
     "/serving/rollout_bounds"),
], ids=["capability without minor", "type name", "types on cpu", "default type unlisted",
        "memory cap zero", "unavailable zero", "bounds reversed", "surge beyond Ray",
        "unknown bound"])
def test_bad_knob_configs_are_refused_naming_the_field(tmp_path: Path, text: str,
                                                       words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert words in str(raised.value)
    assert "servesync.yaml" in str(raised.value)


def test_a_serving_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="compute capability"):
        ServingConfig(accelerator_types={"H20": "nine"})
    with pytest.raises(ConfigError, match="greater than max"):
        ServingConfig(rollout_bounds=RolloutBounds(max_surge_percent=Bounds(50, 10)))


@pytest.mark.parametrize(("value", "expected"), [
    ("8.0", (8, 0)), ("8.9", (8, 9)), ("10.3", (10, 3)), (9, (9, 0)), (8.6, (8, 6)),
    ("08.0", None), ("8", None), ("8.0.1", None), (True, None), ("8.0\n", None), (None, None),
])
def test_compute_capabilities(value: object, expected: tuple[int, int] | None) -> None:
    assert config.capability(value) == expected
