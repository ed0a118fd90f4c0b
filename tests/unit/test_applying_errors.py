"""Ray's exceptions map to Transient or Permanent by type, never by message text."""

from __future__ import annotations

import pytest

from servesync.errors import PermanentError, TransientError

rex = pytest.importorskip("ray.exceptions")
serve_exceptions = pytest.importorskip("ray.serve.exceptions")
applying = pytest.importorskip("servesync.applying")


def wrapped(cause: BaseException) -> BaseException:
    """What ``ray.get`` raises when a remote call (e.g. the controller) failed."""
    return rex.RayTaskError("deploy_applications", "traceback", cause)


CASES = [
    pytest.param(ConnectionError("refused"), TransientError, id="connection"),
    pytest.param(rex.GetTimeoutError("slow"), TransientError, id="ray.get timeout"),
    pytest.param(rex.RaySystemError("gcs"), TransientError, id="RaySystemError"),
    pytest.param(rex.RayActorError(), TransientError, id="controller actor died"),
    pytest.param(ValueError("Invalid deployment config"), PermanentError, id="pydantic-like"),
    pytest.param(TypeError("bad arg"), PermanentError, id="type error"),
    pytest.param(serve_exceptions.RayServeException("prefix in use"), PermanentError,
                 id="RayServeException"),
    pytest.param(wrapped(serve_exceptions.RayServeException("x")), PermanentError,
                 id="remote RayServeException"),
    pytest.param(wrapped(rex.RaySystemError("x")), TransientError, id="remote system error"),
    pytest.param(RuntimeError("timeout: permanent?"), TransientError,
                 id="unknown type: retry, whatever the text"),
]


@pytest.mark.parametrize(("error", "kind"), CASES)
def test_classify_by_type(error: BaseException, kind: type[Exception]) -> None:
    out = applying.classify(error, what="deploy x")
    assert type(out) is kind
    assert str(out).startswith("cannot deploy x: ")
