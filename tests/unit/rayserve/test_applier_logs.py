"""Ray Serve LLM's own INFO lines (a model's deployment options, env values
included) never reach servesync's log."""

from __future__ import annotations

import logging

import pytest

applier = pytest.importorskip("servesync.rayserve.applier")
builder = pytest.importorskip("ray.llm._internal.serve.core.server.builder")


def test_deployment_options_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    applier.quiet_ray_serve_logs()
    assert not builder.logger.isEnabledFor(logging.INFO)
    assert builder.logger.isEnabledFor(logging.WARNING)  # Ray's warnings still show
    with caplog.at_level(logging.INFO):
        builder.logger.info("{'runtime_env': {'env_vars': {'WANDB_API_KEY': 'opSecret1'}}}")
    assert "opSecret1" not in caplog.text
