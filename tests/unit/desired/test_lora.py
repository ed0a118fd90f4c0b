"""Issue 11's ``lora`` in model files (servesync.desired.lora through
validate_tree) and ``serving.lora`` in the config: every error class with its
file, line and field, the traversal and look-alike tricks refused with 403,
and what a valid document becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesync.config import Config, ConfigError, LoraOffer, ServingConfig, load
from servesync.desired import lora
from servesync.desired.specs import DesiredState, Lora
from servesync.desired.validating import recheck_held, validate_tree
from servesync.errors import IssueCode

HEAD = "model_id: m\nmodel_source: $HOME/common/hf/org/m\nnum_replicas: 1\n"
E400, E403, E422 = IssueCode.INVALID, IssueCode.FORBIDDEN, IssueCode.UNPROCESSABLE
OFFER = LoraOffer(prefix="s3://adapters/{user_id}/", users={"team": "gs://team-bucket/ft"},
                  max_adapters_per_replica=8)
WITH_LORA = ServingConfig(accelerator_type="cpu", lora=OFFER)
WITHOUT = ServingConfig(accelerator_type="cpu")


def _validate(tmp_path: Path, text: str, serving: ServingConfig = WITH_LORA,
              user: str = "alice") -> DesiredState:
    root = tmp_path / "tree"
    rel = root / "users" / user / "m.yaml"
    rel.parent.mkdir(parents=True, exist_ok=True)
    rel.write_text(text, encoding="utf-8")
    return validate_tree(root, Config(storage_root=str(tmp_path / "private"), serving=serving))


def _lora(path: str, extra: str = "") -> str:
    return f"lora:\n  path: {path!r}\n{extra}"


# (id, lora lines, cluster, class, pointer, words the message must hold)
REFUSED = [
    ("no LoRA on this cluster", _lora("s3://adapters/alice/x"), WITHOUT, E422, "/lora",
     "serving.lora"),
    ("another user's prefix", _lora("s3://adapters/bob/x"), WITH_LORA, E403, "/lora/path",
     "outside your adapters' prefix s3://adapters/alice/"),
    ("a look-alike user folder", _lora("s3://adapters/alice-evil/x"), WITH_LORA, E403,
     "/lora/path", "outside"),
    ("the prefix's parent", _lora("s3://adapters/"), WITH_LORA, E403, "/lora/path", "outside"),
    ("another bucket", _lora("s3://other/alice/x"), WITH_LORA, E403, "/lora/path", "outside"),
    ("another scheme", _lora("gs://adapters/alice/x"), WITH_LORA, E403, "/lora/path",
     "outside"),
    ("anonymous access to the same bucket", _lora("s3://anonymous@adapters/alice/x"),
     WITH_LORA, E403, "/lora/path", "outside"),
    ("'..' out of the prefix", _lora("s3://adapters/alice/../bob/x"), WITH_LORA, E403,
     "/lora/path", "'..'"),
    ("'..' staying inside still refused", _lora("s3://adapters/alice/x/../y"), WITH_LORA, E403,
     "/lora/path", "'..'"),
    ("'.' part", _lora("s3://adapters/alice/./x"), WITH_LORA, E403, "/lora/path", "'.'"),
    ("empty part", _lora("s3://adapters//alice/x"), WITH_LORA, E403, "/lora/path", "empty"),
    ("a local path", _lora("/private/users/alice/loras"), WITH_LORA, E400, "/lora/path",
     "does not match"),
    ("file://", _lora("file:///etc"), WITH_LORA, E400, "/lora/path", "does not match"),
    ("upper-case scheme", _lora("S3://adapters/alice/x"), WITH_LORA, E400, "/lora/path",
     "does not match"),
    ("percent-encoded dots", _lora("s3://adapters/alice/%2e%2e/bob"), WITH_LORA, E400,
     "/lora/path", "does not match"),
    ("a backslash", _lora("s3://adapters/alice\\..\\bob"), WITH_LORA, E400, "/lora/path",
     "does not match"),
    ("a newline at the end", 'lora:\n  path: "s3://adapters/alice/x\\n"\n', WITH_LORA, E400,
     "/lora/path", "does not match"),
    ("path missing", "lora:\n  max_adapters_per_replica: 2\n", WITH_LORA, E400, "/lora/path",
     "missing required field 'path'"),
    ("unknown field", _lora("s3://adapters/alice/x", "  rank: 8\n"), WITH_LORA, E400,
     "/lora/rank", "unknown field"),
    ("too many adapters for the cluster",
     _lora("s3://adapters/alice/x", "  max_adapters_per_replica: 9\n"), WITH_LORA, E422,
     "/lora/max_adapters_per_replica", "serving.lora.max_adapters_per_replica"),
    ("zero adapters", _lora("s3://adapters/alice/x", "  max_adapters_per_replica: 0\n"),
     WITH_LORA, E422, "/lora/max_adapters_per_replica", "minimum"),
    ("not a mapping", "lora: s3://adapters/alice/x\n", WITH_LORA, E400, "/lora", "object"),
]


@pytest.mark.parametrize(("extra", "serving", "code", "pointer", "words"),
                         [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_lora_is_refused_with_its_class_file_line_and_field(
        tmp_path: Path, extra: str, serving: ServingConfig, code: IssueCode, pointer: str,
        words: str) -> None:
    text = HEAD + extra
    state = _validate(tmp_path, text, serving)
    assert state.specs == ()
    [issue] = state.issues()
    assert (issue.code, issue.pointer) == (code, pointer)
    rows = list(enumerate(text.splitlines(), 1))
    line = next((n for n, row in rows if row.strip().startswith(f"{pointer.split('/')[-1]}:")),
                next(n for n, row in rows if row.startswith("lora:")))  # a missing field
    assert issue.render().startswith(f"users/alice/m.yaml:{line}: {int(code)} {pointer}: ")
    assert words in issue.message


@pytest.mark.parametrize(("path", "user", "expected"), [
    ("s3://adapters/alice/tiny/", "alice", Lora("s3://adapters/alice/tiny", 8)),
    ("s3://adapters/alice", "alice", Lora("s3://adapters/alice", 8)),  # the prefix itself
    ("gs://team-bucket/ft/llama", "team", Lora("gs://team-bucket/ft/llama", 8)),
])
def test_a_path_under_the_users_prefix_becomes_the_spec(
        tmp_path: Path, path: str, user: str, expected: Lora) -> None:
    state = _validate(tmp_path, HEAD + _lora(path), user=user)
    assert state.issues() == ()
    [spec] = state.specs
    assert spec.lora == expected
    assert spec.serving_json()["lora"] == expected.to_json()


def test_a_users_own_prefix_replaces_the_template(tmp_path: Path) -> None:
    state = _validate(tmp_path, HEAD + _lora("s3://adapters/team/x"), user="team")
    [issue] = state.issues()
    assert issue.code is E403 and "gs://team-bucket/ft/" in issue.message


def test_the_count_is_the_files_and_without_lora_the_spec_hashes_as_before(
        tmp_path: Path) -> None:
    state = _validate(tmp_path, HEAD + _lora("s3://adapters/alice/x",
                                             "  max_adapters_per_replica: 2\n"))
    assert state.specs[0].lora == Lora("s3://adapters/alice/x", 2)
    plain = _validate(tmp_path / "b", HEAD).specs[0]
    other = _validate(tmp_path / "c", HEAD, WITHOUT).specs[0]
    assert plain.lora is None and "lora" not in plain.serving_json()
    # a LoRA offer changes no model without lora (the storage roots differ here)
    assert {**plain.serving_json(), "model_source": ""} == \
        {**other.serving_json(), "model_source": ""}


def test_prefix_rules_compare_whole_parts() -> None:
    assert lora.under("s3://a/alice/x", "s3://a/alice/")
    assert lora.under("s3://a/alice", "s3://a/alice/")
    assert not lora.under("s3://a/alicex", "s3://a/alice/")
    assert not lora.well_formed("s3://a/b/../c")
    assert lora.well_formed("s3://a/b/c/")


def test_the_config_offers_lora_per_user(tmp_path: Path) -> None:
    path = tmp_path / "servesync.yaml"
    path.write_text("serving:\n  lora:\n    prefix: s3://adapters/{user_id}\n"
                    "    users: {team: 'gs://team-bucket/ft/'}\n"
                    "    max_adapters_per_replica: 3\n")
    offer = load(path).serving.lora
    assert offer == LoraOffer(prefix="s3://adapters/{user_id}",
                              users={"team": "gs://team-bucket/ft/"}, max_adapters_per_replica=3)
    assert offer.prefix_for("alice") == "s3://adapters/alice/"
    assert offer.prefix_for("team") == "gs://team-bucket/ft/"
    assert ServingConfig().lora is None  # no offer by default


@pytest.mark.parametrize(("body", "words"), [
    ("lora: {prefix: 's3://adapters/shared/'}", "/serving/lora/prefix"),  # no {user_id}
    ("lora: {prefix: '/srv/adapters/{user_id}'}", "/serving/lora/prefix"),
    ("lora: {max_adapters_per_replica: 2}", "'prefix' is a required property"),
    ("lora: {prefix: 's3://a/{user_id}', users: {Bob: 's3://b/'}}", "/serving/lora/users"),
])
def test_a_bad_lora_offer_is_a_config_error(tmp_path: Path, body: str, words: str) -> None:
    path = tmp_path / "servesync.yaml"
    path.write_text(f"serving:\n  {body}\n")
    with pytest.raises(ConfigError, match=r"servesync\.yaml") as refused:
        load(path)
    assert words in str(refused.value)


def test_an_offer_built_in_code_needs_user_id_too() -> None:
    with pytest.raises(ConfigError, match="user_id"):
        LoraOffer(prefix="s3://adapters/")


# --- recheck_held: the recorded lora of a held model ---------------------------------

RECORDED = {"path": "s3://adapters/alice/x", "max_adapters_per_replica": 8}
NARROWED = LoraOffer(prefix="s3://adapters/{user_id}/ft/", max_adapters_per_replica=8)
OWN_ENTRY = LoraOffer(prefix="s3://adapters/{user_id}/", users={"alice": "s3://alice-only/"},
                      max_adapters_per_replica=8)
FEWER = LoraOffer(prefix="s3://adapters/{user_id}/", max_adapters_per_replica=4)


@pytest.mark.parametrize(("serving", "text", "recorded", "revoked"), [
    # the operator narrows the prefix: the file turns 403, the recorded path too
    (ServingConfig(accelerator_type="cpu", lora=NARROWED), HEAD + _lora("s3://adapters/alice/x"),
     RECORDED, "lora.path 's3://adapters/alice/x' is outside your adapters' prefix "
               "s3://adapters/alice/ft/ (serving.lora)"),
    # ... gives alice a prefix of her own elsewhere
    (ServingConfig(accelerator_type="cpu", lora=OWN_ENTRY), HEAD + _lora("s3://adapters/alice/x"),
     RECORDED, "lora.path 's3://adapters/alice/x' is outside your adapters' prefix "
               "s3://alice-only/"),
    # ... removes serving.lora (422)
    (WITHOUT, HEAD + _lora("s3://adapters/alice/x"), RECORDED,
     "this cluster offers no LoRA adapters (serving.lora is not set"),
    # ... lowers the adapter limit below the recorded count (422)
    (ServingConfig(accelerator_type="cpu", lora=FEWER),
     HEAD + _lora("s3://adapters/alice/x", "  max_adapters_per_replica: 8\n"), RECORDED,
     "lora.max_adapters_per_replica 8 is above this cluster's limit of 4"),
    # held for another reason while the recorded lora is still allowed: held, not revoked
    (WITH_LORA, HEAD + "typo: 1\n" + _lora("s3://adapters/alice/x"), RECORDED, None),
    # the file now asks a forbidden path, the recorded one is fine: held at it
    (WITH_LORA, HEAD + _lora("s3://adapters/bob/x"), RECORDED, None),
    # no lora recorded: nothing to revoke
    (WITHOUT, HEAD + "typo: 1\n", None, None),
])
def test_a_held_models_recorded_lora_is_revoked_when_the_config_no_longer_allows_it(
        tmp_path: Path, serving: ServingConfig, text: str, recorded: dict[str, object] | None,
        revoked: str | None) -> None:
    """The held spec keeps its lora.path in the model's LLMConfig and in the
    gateway's routes: a path the config no longer allows stops the model, as a
    forbidden recorded model_source does (review finding 6)."""
    state = _validate(tmp_path, text, serving)
    assert state.holds(("alice", "m"), "users/alice/m.yaml") and not state.revoked
    source = str(tmp_path / "private/hf/org/m")
    config = Config(storage_root=str(tmp_path / "private"), serving=serving)
    rechecked = recheck_held(state, [(("alice", "m"), "users/alice/m.yaml", source, recorded)],
                             config)
    if revoked is None:
        assert rechecked is state
    else:
        assert rechecked.revoked[("alice", "m")].startswith(
            "lora (as last deployed; users/alice/m.yaml has errors): " + revoked)


def test_a_valid_spec_is_the_planners_even_with_a_recorded_lora_now_refused(
        tmp_path: Path) -> None:
    """A model whose file is valid is not held: its new spec (here without
    lora) replaces the recorded one, nothing is revoked."""
    state = _validate(tmp_path, HEAD, WITHOUT)
    config = Config(storage_root=str(tmp_path / "private"), serving=WITHOUT)
    recorded = (("alice", "m"), "users/alice/m.yaml", str(tmp_path / "private/hf/org/m"),
                RECORDED)
    assert recheck_held(state, [recorded], config) is state
