"""Fixtures of the e2e tests: a real in-process Ray with Serve, the tiny model.

Ray is started by :class:`servesync.applying.RayApplier` with address
``"local"`` (a temp dir, 16 logical CPUs, a free HTTP port instead of 8000)
once per session and shut down at the end, so a left-over run can never
break the next one. Side effects: a Ray cluster for the session's duration,
the tiny model in pytest's temp dir. Timings measured by the tests are
printed in the terminal summary.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from servesync.config import Config, RayConfig, ServingConfig

if TYPE_CHECKING:
    from servesync.rayserve.applier import RayApplier

REPLICA_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
TIMINGS: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("servesync e2e timings")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


S3_PORT = free_port()
"""Where tests/e2e/test_lora_e2e.py starts its S3 server (moto), fixed before Ray starts."""
S3_ENV = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}", "AWS_ACCESS_KEY_ID": "testing",
          "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
"""The object storage's endpoint and (moto's dummy) credentials, in the environment
Ray starts with, as an operator puts them in the Ray nodes' environment
(/etc/servesync/ray-head.env): every replica and the gateway inherit them."""


@pytest.fixture(scope="session")
def timings() -> dict[str, str]:
    """Durations the tests measured, printed in the terminal summary."""
    return TIMINGS


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from servesync import tinymodel

    start = time.monotonic()
    path = tinymodel.generate(tmp_path_factory.mktemp("models") / "tiny-llama")
    TIMINGS["tiny model generated"] = f"{time.monotonic() - start:.1f} s"
    return path


@pytest.fixture(scope="session")
def e2e_config() -> Config:
    return Config(
        ray=RayConfig(address="local", num_cpus=16, namespace="servesync-e2e"),
        serving=ServingConfig(
            accelerator_type="cpu",
            http_host="127.0.0.1",
            http_port=free_port(),
            replica_env=dict(REPLICA_ENV),
        ),
    )


@pytest.fixture(scope="session")
def applier(e2e_config: Config) -> Iterator[RayApplier]:
    pytest.importorskip("vllm")
    from servesync.rayserve.applier import RayApplier

    ray_applier = RayApplier(e2e_config)
    start = time.monotonic()
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)  # Ray's processes inherit it; this process needs it no more
    try:
        ray_applier.connect()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    TIMINGS["ray.init + serve.start"] = f"{time.monotonic() - start:.1f} s"
    try:
        yield ray_applier
    finally:
        start = time.monotonic()
        ray_applier.shutdown()
        TIMINGS["shutdown"] = f"{time.monotonic() - start:.1f} s"

