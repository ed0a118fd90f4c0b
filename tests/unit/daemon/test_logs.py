"""Log lines: one per event, JSON or text, and secrets blanked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from servesync.daemon.logs import setup_logging
from servesync.redaction import redact_url


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_is_one_object_per_line_with_extras(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(fmt="json", level="DEBUG", stream=out, env={})
    logging.getLogger("servesync.x").info("tick %d done", 3, extra={"revision": "abc"})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("servesync.x").exception("tick failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "tick 3 done" and first["revision"] == "abc"
    assert (first["level"], first["logger"]) == ("INFO", "servesync.x")
    assert first["ts"].endswith("Z")
    assert "ValueError: boom" in second["exc"]


def test_text_format(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(fmt="text", stream=out, env={})
    logging.getLogger("servesync.y").warning("hello", extra={"n": 2})
    line = out.getvalue().strip()
    assert line.endswith("WARNING servesync.y: hello n=2")


def test_secrets_are_blanked(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(fmt="json", stream=out, env={"HF_TOKEN": "hf_supersecret123", "HOME": "/root"})
    log = logging.getLogger("servesync.z")
    log.warning("fetch https://bot:ghp_abcdef@github.com/o/r.git failed")
    log.warning("env has %s", "hf_supersecret123", extra={"detail": "x hf_supersecret123"})
    text = out.getvalue()
    assert "ghp_abcdef" not in text and "hf_supersecret123" not in text
    assert "https://***@github.com/o/r.git" in text


def test_redact_url() -> None:
    assert redact_url("ssh://git@host/x") == "ssh://***@host/x"
    assert redact_url("/srv/repo") == "/srv/repo"
