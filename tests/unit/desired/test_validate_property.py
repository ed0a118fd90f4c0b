"""Property tests: whatever text or structure is committed, validation only returns typed
issues or specs; it never raises."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servesync.config import Config, ServingConfig
from servesync.desired.loading import LoadedFile, parse_text
from servesync.desired.specs import DesiredState, ModelSpec
from servesync.desired.validating import validate_loaded
from servesync.errors import Issue, IssueCode

REL = "users/alice/m.yaml"
CONFIGS = [Config(storage_root="/nonexistent-root", serving=ServingConfig(accelerator_type=a))
           for a in ("H20", "cpu")]
FIELDS = ["apiVersion", "kind", "model_id", "model_source", "num_replicas", "autoscaling",
          "gpus_per_replica", "cpus_per_replica", "engine_kwargs", "env", "enabled"]
PROFILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["$HOME/x", "$HOME/common/hf/o/m", "org/m", "/etc", "..", "qwen", "H20"]),
)
keys = st.one_of(st.sampled_from([*FIELDS, "min_replicas", "max_replicas", "LD_PRELOAD",
                                  "VLLM_X", "model"]), st.text(max_size=10))
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=25,
)
documents = st.fixed_dictionaries(
    {}, optional={k: json_like for k in FIELDS}
) | st.dictionaries(keys, json_like, max_size=8)


def _validate(text: str, cfg: Config) -> DesiredState:
    loaded = LoadedFile(path=REL, user_id="alice", documents=parse_text(text, rel=REL))
    return validate_loaded([loaded], cfg)


def _assert_typed(state: DesiredState) -> None:
    for issue in state.issues():
        assert isinstance(issue, Issue)
        assert isinstance(issue.code, IssueCode)
        assert issue.file == REL
        assert issue.line >= 1
        assert issue.pointer == "" or issue.pointer.startswith("/")
        assert issue.message
        issue.render()
    for spec in state.specs:
        assert isinstance(spec, ModelSpec)
        assert spec.spec_hash()
    for f in state.files:
        for d in f.documents:
            assert d.ok == (d.spec is not None)


@PROFILE
@given(text=st.text(max_size=300), cfg=st.sampled_from(CONFIGS))
def test_random_text_yields_only_typed_issues(text: str, cfg: Config) -> None:
    _assert_typed(_validate(text, cfg))


yaml_ish = st.lists(
    st.sampled_from(["model_id: m", "model_source: org/m", "---", "  - a", "env:",
                     "  A: b", "&x", "*x", "[", "]", "{", "}", ": ", "- ", "'", '"', "#",
                     "!!str", "!!python/name:os.system", "<<: ", "? ", "...", "\t", "%YAML 1.1"]),
    max_size=30,
).map(lambda parts: "\n".join(parts))


@PROFILE
@given(text=yaml_ish, cfg=st.sampled_from(CONFIGS))
def test_yaml_shaped_noise_yields_only_typed_issues(text: str, cfg: Config) -> None:
    _assert_typed(_validate(text, cfg))


@PROFILE
@given(docs=st.lists(documents, min_size=1, max_size=3), cfg=st.sampled_from(CONFIGS))
def test_random_structures_yield_only_typed_issues(docs: list[Any], cfg: Config) -> None:
    text = yaml.safe_dump_all(docs, allow_unicode=True)
    state = _validate(text, cfg)
    _assert_typed(state)
    assert sum(len(f.documents) for f in state.files) <= len(docs)


digit_runs = st.integers(1, 5000).map(lambda n: "1" + "0" * (n - 1))
numbers = st.one_of(
    st.tuples(st.sampled_from(["", "-", "+"]), digit_runs).map("".join),
    st.integers(-(2**80), 2**80).map(str),
    st.integers(1, 2500).map(lambda n: "1" + ":00" * n),  # sexagesimal ints
    st.integers(1, 300).map(lambda n: "-1" + ":30" * n + ".5"),  # sexagesimal floats
    st.integers(1, 200).map(lambda n: "0x" + "f" * n),
    st.integers(1, 200).map(lambda n: "0b" + "1" * n),
    st.integers(1, 200).map(lambda n: "0" + "7" * n),
    st.integers(1, 200).map(lambda n: "1_" + "000_" * n + "0"),
    st.tuples(digit_runs, st.sampled_from(["", "5"]), st.integers(-999, 999)).map(
        lambda t: f"{t[0]}.{t[1]}e{t[2]:+d}"),
    st.sampled_from([".inf", "-.inf", ".nan", "1.0e+400", "9223372036854775808",
                     "-9223372036854775809", "9223372036854775807", '!!int ""', '!!float ""',
                     '!!bool "x"', "!!int 1.5", "!!float 0x10", "!!int '1:'"]),
)
number_fields = st.sampled_from(["num_replicas", "gpus_per_replica", "cpus_per_replica",
                                 "autoscaling: {max_replicas", "engine_kwargs: {seed",
                                 "engine_kwargs: {max_model_len"])


@PROFILE
@given(field=number_fields, number=numbers, cfg=st.sampled_from(CONFIGS))
def test_numbers_of_any_size_are_values_or_issues(field: str, number: str, cfg: Config) -> None:
    """Integers beyond 64 bits and numbers beyond the float range are 422 on their
    field; whatever passes can be hashed and stored (a tick never raises on it)."""
    line = f"{field}: {number}}}" if "{" in field else f"{field}: {number}"
    state = _validate(f"model_id: m\nmodel_source: org/m\n{line}\n", cfg)
    _assert_typed(state)
    for spec in state.specs:
        json.dumps(spec.to_json())
        for value in (spec.num_replicas, spec.gpus_per_replica, *spec.engine_kwargs.values()):
            assert not isinstance(value, int) or -(2**63) <= value < 2**63
    for issue in state.issues():
        assert len(issue.message) < 300
