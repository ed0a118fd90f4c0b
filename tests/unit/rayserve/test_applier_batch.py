"""``RayApplier.deploy_models``: each application built on its own (a config
Ray Serve LLM refuses fails only its model), the rest in one ``serve.run_many``
per chunk; a submission Ray refuses for good is made again one application at
a time (a transient failure is not). Ray Serve LLM's builders and the
submission are stood in for; nothing starts (tests/e2e deploy for real)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

pytest.importorskip("ray.serve")

from servesync.config import Config, ServingConfig
from servesync.converge.ports import ModelDeploy
from servesync.desired.specs import ModelSpec
from servesync.errors import PermanentError, TransientError
from servesync.rayserve import applier as applier_module
from servesync.rayserve.applier import RayApplier


def deploy(suffix: str) -> ModelDeploy:
    spec = ModelSpec(user_id="alice", suffix=suffix, model_source="/private/hf/m",
                     resolved_source="/private/hf/m", num_replicas=1, autoscaling=None,
                     gpus_per_replica=0, cpus_per_replica=1)
    return ModelDeploy(spec, f"svc-alice-{suffix}", f"alice-202601010000-{suffix}")


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The app names of each run_many call; LLMConfig refuses models named *bad*."""
    runs: list[list[str]] = []

    def llm_config(**kwargs: Any) -> dict[str, Any]:
        if "bad" in repr(kwargs):
            raise ValueError("1 validation error for LLMConfig: max_model_len")
        return kwargs

    fake = types.ModuleType("ray.serve.llm")
    fake.LLMConfig = llm_config  # type: ignore[attr-defined]
    fake.build_llm_deployment = lambda config, **kw: ("app", config)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray.serve.llm", fake)
    monkeypatch.setattr(applier_module, "_with_version", lambda app, version: app)
    monkeypatch.setattr(applier_module, "_submit_many",
                        lambda apps: runs.append([name for name, _ in apps]))
    monkeypatch.setattr(RayApplier, "_ensure_reachable", lambda self: None)
    return runs


def applier() -> RayApplier:
    return RayApplier(Config(serving=ServingConfig(accelerator_type="cpu")))


def test_one_refused_config_fails_only_its_model(submitted: list[list[str]]) -> None:
    failed = applier().deploy_models([deploy("a"), deploy("bad"), deploy("c")])
    assert list(failed) == ["svc-alice-bad"]
    assert isinstance(failed["svc-alice-bad"], PermanentError)
    assert "max_model_len" in str(failed["svc-alice-bad"])
    assert submitted == [["svc-alice-a", "svc-alice-c"]]  # one run_many for the rest


def test_a_failed_submission_fails_the_models_it_carried(
        submitted: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    def down(apps: Any) -> None:
        raise ConnectionError("GCS went away")

    monkeypatch.setattr(applier_module, "_submit_many", down)
    failed = applier().deploy_models([deploy("a"), deploy("bad")])
    assert isinstance(failed["svc-alice-a"], TransientError)
    assert isinstance(failed["svc-alice-bad"], PermanentError)  # its own error, kept


def test_deploy_model_raises_its_own_error(submitted: list[list[str]]) -> None:
    with pytest.raises(PermanentError, match="max_model_len"):
        applier().deploy_model(deploy("bad").spec, app_name="svc-alice-bad",
                               public_id="alice-202601010000-bad")
    assert submitted == []


def test_a_submission_refused_for_good_is_retried_one_by_one(
        submitted: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """One tenant's application that Serve refuses at submit (after building
    fine) must not fail the others of its batch: FAILED waits for a new spec."""

    def refuse_poisoned(apps: Any) -> None:
        names = [name for name, _ in apps]
        if "svc-alice-poison" in names:
            raise ValueError("Serve refused svc-alice-poison")
        submitted.append(names)

    monkeypatch.setattr(applier_module, "_submit_many", refuse_poisoned)
    failed = applier().deploy_models([deploy("a"), deploy("poison"), deploy("c")])
    assert list(failed) == ["svc-alice-poison"]
    assert isinstance(failed["svc-alice-poison"], PermanentError)
    assert submitted == [["svc-alice-a"], ["svc-alice-c"]]  # each alone after the refusal


def test_a_transient_batch_failure_is_not_retried_one_by_one(
        submitted: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def down(apps: Any) -> None:
        calls.append(len(apps))
        raise ConnectionError("GCS went away")

    monkeypatch.setattr(applier_module, "_submit_many", down)
    failed = applier().deploy_models([deploy(s) for s in "abc"])
    assert calls == [3]  # one call: Ray is down for every model alike, each backs off
    assert all(isinstance(e, TransientError) for e in failed.values()) and len(failed) == 3


def test_a_big_batch_goes_in_chunks(submitted: list[list[str]]) -> None:
    batch = [deploy(f"m{i}") for i in range(applier_module.BATCH_MAX * 2 + 5)]
    assert applier().deploy_models(batch) == {}
    assert [len(run) for run in submitted] == [applier_module.BATCH_MAX,
                                              applier_module.BATCH_MAX, 5]
    assert [n for run in submitted for n in run] == [d.app_name for d in batch]


def test_a_config_that_cannot_even_be_built_fails_only_its_model(
        submitted: list[list[str]]) -> None:
    """Any exception building one model's config (here an OverflowError from
    a memory no float multiplication survives) fails that model, never the
    batch (which would stall every tenant's deploys tick after tick)."""
    from dataclasses import replace
    huge = replace(deploy("huge"), spec=replace(deploy("huge").spec,
                                                memory_gb_per_replica=1.0e308))
    failed = applier().deploy_models([deploy("a"), huge])
    assert list(failed) == ["svc-alice-huge"]
    assert "OverflowError" in str(failed["svc-alice-huge"])
    assert submitted == [["svc-alice-a"]]
