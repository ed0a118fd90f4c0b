"""The one redactor: what scrub() blanks, what it leaves readable, and quote()."""

from __future__ import annotations

import logging

import pytest

from servesync.daemon.logs import RedactingFilter
from servesync.errors import ConfigError, Issue, IssueCode, TransientError
from servesync.redaction import (
    MIN_TOKEN_BODY,
    REDACTED,
    clip,
    describe,
    known_secrets,
    quote,
    redact_url,
    scrub,
    scrub_pointer,
)

HF = "hf_QmZx81LkPqRtYvWs0NbHcJdEfGaU"
SK = "sk-proj-Q3xT9vLm2KpZr8WbNc4Y"


@pytest.mark.parametrize(("text", "expected"), [
    (f"token {HF} here", f"token {REDACTED} here"),
    (f"'{SK}'", f"'{REDACTED}'"),
    ("https://bot:Zr8WbNc4Y@git.example/x", "https://***@git.example/x"),
    ("ssh://git@host/x", "ssh://***@host/x"),
    ("see https://user@host/x.", "see https://***@host/x."),
    ("ghp_" + "a1" * 18, REDACTED),
    ("github_pat_" + "B2" * 20, REDACTED),
    ("glpat-" + "x9" * 10, REDACTED),
    ("xoxb-123456789012-abcdefghij", REDACTED),
    ("AKIAIOSFODNN7EXAMPLE", REDACTED),
    # as allowlists.normalise() spells a key: lower case, '-' -> '_'
    ("'sk_proj_q3xt9vlm2kpzr8wbnc4y'", f"'{REDACTED}'"),
    ("akiaiosfodnn7example", REDACTED),
    (f"Bearer {SK}, again {SK}", f"Bearer {REDACTED}, again {REDACTED}"),
], ids=["hf", "sk-quoted", "url-user-password", "url-user", "url-in-text", "ghp",
        "github_pat", "glpat", "slack", "aws", "normalised-sk", "normalised-aws", "twice"])
def test_scrub_blanks(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "engine_kwargs key 'hf_token' is never allowed",
    "hf_config_path", "hf_overrides",
    "env name 'HF_HUB_ENABLE_HF_TRANSFER' is not allowed",
    "max_num_batched_tokens", "task-1234567890123456789",
    "/srv/repo", "$HOME/common/hf/Qwen/Qwen2.5-0.5B-Instruct",
    "git@git.example.internal:ml/desired-state.git",
    "sk-" + "a" * (MIN_TOKEN_BODY - 1),
])
def test_scrub_leaves_names_and_paths_readable(text: str) -> None:
    assert scrub(text) == text


def test_known_values_are_blanked_longest_first_and_short_ones_left() -> None:
    known = known_secrets(["correct-horse", "correct-horse-battery", "INFO", 4, None])
    assert known == ("correct-horse-battery", "correct-horse")
    assert scrub("a correct-horse-battery b correct-horse INFO", known) == \
        f"a {REDACTED} b {REDACTED} INFO"


@pytest.mark.parametrize(("value", "expected"), [
    ("qwen", "'qwen'"),
    (SK, f"'{REDACTED}'"),
    ("x" * 200, "'" + "x" * 77 + "...'"),
    (5, "5"), (True, "True"), (None, "None"), (0.5, "0.5"),
    ({"env": {"A": SK}}, "a mapping (1 key)"),
    ({"a": 1, "b": 2}, "a mapping (2 keys)"),
    ([SK, "x"], "a list (2 items)"),
])
def test_quote_shows_scalars_scrubbed_and_clipped_and_only_sizes_of_collections(
        value: object, expected: str) -> None:
    assert quote(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("two", "string 'two'"), (3, "integer 3"), ([1], "a list (1 item)"),
    (None, "null None"),
])
def test_describe(value: object, expected: str) -> None:
    assert describe(value) == expected


def test_scrub_pointer_unescapes_each_key() -> None:
    assert scrub_pointer("/engine_kwargs/https:~1~1u:pw123456@h~1x/0") == \
        "/engine_kwargs/https:~1~1***@h~1x/0"
    assert scrub_pointer(f"/{SK}/a~0b") == f"/{REDACTED}/a~0b"
    assert scrub_pointer("") == ""


def test_clip_and_redact_url() -> None:
    assert clip("abcdef", 5) == "ab..."
    assert clip("abc", 5) == "abc"
    assert redact_url("/srv/repo") == "/srv/repo"


def test_issues_and_errors_are_scrubbed_when_built() -> None:
    issue = Issue(IssueCode.FORBIDDEN, "users/a/m.yaml", 3, f"/engine_kwargs/{SK}",
                  f"key {SK!r} at https://u:pw123456@h/x")
    assert SK not in issue.render() and "pw123456" not in issue.render()
    assert issue.pointer == f"/engine_kwargs/{REDACTED}"
    assert len(Issue(IssueCode.INVALID, "f", 1, "", "x" * 1000).message) == 240
    for error in (ConfigError(f"bad {HF}"), TransientError(f"cannot deploy: {SK}", delay_s=9)):
        assert HF not in str(error) and SK not in str(error)


def test_the_log_filter_blanks_tokens_urls_and_known_values() -> None:
    record = logging.makeLogRecord({"msg": "deploy failed: %s %s %s",
                                    "args": (SK, "https://u:pw123456@h/x", "mysecretvalue")})
    RedactingFilter(["mysecretvalue"]).filter(record)
    text = record.getMessage()
    assert all(s not in text for s in (SK, "pw123456", "mysecretvalue")), text
