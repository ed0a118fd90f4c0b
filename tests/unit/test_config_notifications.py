"""Notification sinks: the config's ``notifications`` and a model file's ``notify``.

The config errors name the field (and never show a URL, which may hold a
token); a model file naming a sink the cluster lacks is a 422 naming the
field, the file, the line and the known sinks; a valid ``notify`` is
metadata (changing it restarts nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync import config
from servesync.config import Config, NotificationSink, ServingConfig
from servesync.desired.validating import validate_tree
from servesync.errors import ConfigError, IssueCode
from tests.unit.converge.plancases import spec


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "servesync.yaml"
    path.write_text(text)
    return config.load(path)


def test_a_complete_sink(tmp_path: Path) -> None:
    (tmp_path / "hook.secret").write_text("k3y\n")
    cfg = _load(tmp_path, """
notifications:
  - name: team-alerts
    url: https://hooks.example.com/servesync?token=abc
    events: [FAILED, RUNNING]
    secret_file: hook.secret
    timeout_s: 3
    max_backoff_s: 30
  - name: pager
    url: http://127.0.0.1:9000/hook
""")
    first, second = cfg.notifications
    assert first == NotificationSink(
        name="team-alerts", url="https://hooks.example.com/servesync?token=abc",
        events=("FAILED", "RUNNING"), secret_file=str(tmp_path / "hook.secret"),
        timeout_s=3.0, max_backoff_s=30.0)
    assert second.events == ("FAILED", "DEGRADED", "RUNNING") and second.secret_file is None
    assert "token=abc" not in repr(cfg)  # the URL is left out of every repr
    assert cfg.sink("pager") is second and cfg.sink("nope") is None


@pytest.mark.parametrize(("text", "words"), [
    ("- {name: a, url: 'ftp://h/x?token=abc'}", "/notifications/0/url: must be an http"),
    ("- {name: a, url: 'https://h/x', events: [BOOM]}", "/notifications/0/events/0"),
    ("- {name: 'bad name', url: 'https://h/x'}", "/notifications/0/name"),
    ("- {url: 'https://h/x'}", "/notifications/0: "),
    ("- {name: a, url: 'https://h/x', extra: 1}", "/notifications/0: "),
    ("- {name: a, url: 'https://h/1'}\n  - {name: a, url: 'https://h/2'}",
     "/notifications/1/name: sink name 'a' is used twice"),
])
def test_config_errors_name_the_field_and_never_the_url(tmp_path: Path, text: str,
                                                        words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "notifications:\n  " + text + "\n")
    assert words in str(err.value)
    assert "token=abc" not in str(err.value)


def _validate(tmp_path: Path, text: str, sinks: tuple[str, ...]) -> object:
    root = tmp_path / "tree"
    (root / "users" / "alice").mkdir(parents=True, exist_ok=True)
    (root / "users" / "alice" / "m.yaml").write_text(text)
    (tmp_path / "private" / "hf" / "m").mkdir(parents=True, exist_ok=True)
    cfg = Config(storage_root=str(tmp_path / "private"),
                 serving=ServingConfig(accelerator_type="cpu"),
                 notifications=tuple(NotificationSink(name=n, url="https://h/x", users=("*",))
                                     for n in sinks))
    return validate_tree(root, cfg)


MODEL = "model_id: m\nmodel_source: $HOME/common/hf/m\nnotify:\n  - team-alerts\n  - {other}\n"


def test_an_unknown_sink_is_a_422_naming_the_field_and_the_known_sinks(tmp_path: Path) -> None:
    state = _validate(tmp_path, MODEL.format(other="pager"), ("team-alerts", "ops"))
    [issue] = state.issues()  # type: ignore[attr-defined]
    assert (issue.code, issue.pointer, issue.line) == (IssueCode.UNPROCESSABLE, "/notify/1", 5)
    assert issue.render().startswith("users/alice/m.yaml:5: 422 /notify/1: ")
    assert "'pager' is not a notification sink" in issue.message
    assert "sinks open to this user: team-alerts, ops" in issue.message


def test_no_sinks_configured_says_so(tmp_path: Path) -> None:
    state = _validate(tmp_path, MODEL.format(other="ops"), ())
    assert "sinks open to this user: none" in state.issues()[0].message  # type: ignore[attr-defined]


def test_a_sink_closed_to_the_user_is_refused_like_an_unknown_one_and_never_listed(
        tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "users" / "alice").mkdir(parents=True)
    (root / "users" / "alice" / "m.yaml").write_text(MODEL.format(other="team-b-pager"))
    (tmp_path / "private" / "hf" / "m").mkdir(parents=True)
    cfg = Config(storage_root=str(tmp_path / "private"),
                 serving=ServingConfig(accelerator_type="cpu"), notifications=(
                     NotificationSink(name="team-alerts", url="https://h/a", users=("alice",)),
                     NotificationSink(name="team-b-pager", url="https://h/b", users=("bob",)),
                     NotificationSink(name="unopened", url="https://h/c")))
    [issue] = validate_tree(root, cfg).issues()
    assert (issue.code, issue.pointer) == (IssueCode.UNPROCESSABLE, "/notify/1")
    assert "sinks open to this user: team-alerts;" in issue.message
    assert "unopened" not in issue.message  # no users: open to nobody


def test_users_star_opens_a_sink_to_everyone_and_absent_to_nobody(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
notifications:
  - {name: all, url: 'https://h/a', users: ['*']}
  - {name: some, url: 'https://h/b', users: [alice]}
  - {name: none, url: 'https://h/c'}
""")
    assert cfg.sinks_of("alice") == ("all", "some") and cfg.sinks_of("bob") == ("all",)
    assert cfg.notifications[2].users == ()


@pytest.mark.parametrize("url", [  # YAML escapes: the file holds \x07, a tab, NEL
    r"https://h/x?token=abc\x07", r"https://h/x?token=abc\t", r"https://h/x?token=abc\x85",
    r"https://h/x?token=abc\x7f", "https://h:99999/x?token=abc"])
def test_urls_with_control_characters_or_a_bad_port_are_refused_at_load(
        tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f'notifications:\n  - {{name: a, url: "{url}"}}\n')
    assert "/notifications/0/url" in str(err.value)
    assert "token=abc" not in str(err.value)


@pytest.mark.parametrize("text", ["['https://h/x?token=abc']", "'https://h/x?token=abc'",
                                  "[{name: a, url: 'https://h/x?token=abc'}, 'token=abc']"])
def test_a_sink_written_as_a_string_is_refused_without_its_text(tmp_path: Path,
                                                               text: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"notifications: {text}\n")
    assert "/notifications" in str(err.value) and "value not shown" in str(err.value)
    assert "token=abc" not in str(err.value)


def test_bounds_of_a_sink(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
notifications:
  - {name: a, url: 'https://h/a', users: ['*'], max_age_s: 600, max_attempts: 5,
     max_pending: 10}
""")
    (s,) = cfg.notifications
    assert (s.max_age_s, s.max_attempts, s.max_pending) == (600.0, 5, 10)
    assert NotificationSink(name="d", url="https://h").max_pending == 1000


def test_a_url_in_notify_is_just_an_unknown_name(tmp_path: Path) -> None:
    state = _validate(tmp_path, MODEL.format(other="'http://10.0.0.1/x'"), ("team-alerts",))
    assert state.issues()[0].code is IssueCode.UNPROCESSABLE  # type: ignore[attr-defined]


def test_known_sinks_become_metadata_outside_the_spec_hash(tmp_path: Path) -> None:
    state = _validate(tmp_path, MODEL.format(other="ops"), ("team-alerts", "ops"))
    (got,) = state.specs  # type: ignore[attr-defined]
    assert got.notify == ("team-alerts", "ops")
    assert got.to_json()["notify"] == ["team-alerts", "ops"]
    assert spec("a", notify=("x",)).spec_hash() == spec("a").spec_hash()
