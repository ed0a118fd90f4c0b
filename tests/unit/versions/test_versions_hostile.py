"""Hostile model files against validation: a wrong value in a version (or a
plain model) is a clean issue on its field, never an exception out of
``validate_tree`` (which would fail every tick for every tenant); the safety
net for a bug that still raises; the path-parts cap on each version's
``model_source``; ``lora`` refused on a model with versions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from servesync.config import LoraOffer, ServingConfig
from servesync.desired import model_paths, validating
from servesync.desired.specs import DesiredState, ModelSpec
from servesync.desired.validating import MAX_SOURCE_PARTS
from servesync.errors import IssueCode

from .test_versions_validation import CPU, TWO, validate_files

E400, E422 = IssueCode.INVALID, IssueCode.UNPROCESSABLE
FILE = "users/alice/m.yaml"
OTHER = "users/alice/other.yaml"
PLAIN = "model_id: m\nmodel_source: $HOME/common/hf/org/a\nnum_replicas: 1\n"
NEIGHBOUR = "model_id: fine\nmodel_source: $HOME/common/hf/org/b\n"
SECRET = "hun" + "ter2"  # a value an exception's message may quote (not in any source line)


def _validate(tmp_path: Path, text: str, serving: ServingConfig = CPU) -> DesiredState:
    """``text`` as alice's m.yaml, next to a valid file of hers."""
    return validate_files(tmp_path, {FILE: text, OTHER: NEIGHBOUR}, serving=serving)


def _found(state: DesiredState) -> list[tuple[IssueCode, str, int]]:
    return sorted((i.code, i.pointer, i.line) for i in state.issues())


def _neighbour_is_valid(state: DesiredState) -> None:
    assert [s.suffix for s in state.specs] == ["fine"]
    assert all(i.file == FILE for i in state.issues())


# (id, document, the one issue: class, pointer, line). Each of these used to
# raise out of validate_tree (TypeError, ValueError, KeyError) when the version
# was built although the schema had flagged it.
VERSIONED = [
    ("engine_kwargs null", TWO + "    engine_kwargs: null\n",
     (E400, "/versions/1/engine_kwargs", 12)),
    ("engine_kwargs a list", TWO + "    engine_kwargs: [1, 2]\n",
     (E400, "/versions/1/engine_kwargs", 12)),
    ("env a string", TWO + "    env: 'x'\n", (E400, "/versions/1/env", 12)),
    ("env a list", TWO + "    env: [1]\n", (E400, "/versions/1/env", 12)),
    ("model-level env a list", TWO.replace("num_replicas: 2\n", "env: [1]\n", 1),
     (E400, "/env", 2)),
    ("num_replicas a string", TWO.replace("    num_replicas: 1", "    num_replicas: 'x'"),
     (E400, "/versions/1/num_replicas", 11)),
    ("gpus_per_replica a string", TWO + "    gpus_per_replica: 'x'\n",
     (E400, "/versions/1/gpus_per_replica", 12)),
    ("cpus_per_replica a string", TWO + "    cpus_per_replica: 'x'\n",
     (E400, "/versions/1/cpus_per_replica", 12)),
    ("memory_gb_per_replica a string", TWO + "    memory_gb_per_replica: 'x'\n",
     (E400, "/versions/1/memory_gb_per_replica", 12)),
    ("no weight", TWO.replace("    weight: 80\n", ""), (E400, "/versions/0/weight", 5)),
]
PLAIN_CASES = [
    ("engine_kwargs null", PLAIN + "engine_kwargs: null\n", (E400, "/engine_kwargs", 4)),
    ("engine_kwargs a list", PLAIN + "engine_kwargs: [1, 2]\n", (E400, "/engine_kwargs", 4)),
    ("env a string", PLAIN + "env: 'x'\n", (E400, "/env", 4)),
    ("env a list", PLAIN + "env: [1]\n", (E400, "/env", 4)),
    ("num_replicas a string", PLAIN.replace("num_replicas: 1", "num_replicas: 'x'"),
     (E400, "/num_replicas", 3)),
    ("gpus_per_replica a string", PLAIN + "gpus_per_replica: 'x'\n",
     (E400, "/gpus_per_replica", 4)),
    ("cpus_per_replica a string", PLAIN + "cpus_per_replica: 'x'\n",
     (E400, "/cpus_per_replica", 4)),
    ("memory_gb_per_replica a string", PLAIN + "memory_gb_per_replica: 'x'\n",
     (E400, "/memory_gb_per_replica", 4)),
]


@pytest.mark.parametrize(("text", "expected"),
                         [pytest.param(t, e, id=f"version: {i}") for i, t, e in VERSIONED]
                         + [pytest.param(t, e, id=f"plain: {i}") for i, t, e in PLAIN_CASES])
def test_a_wrong_value_is_a_400_on_its_field_not_a_crash(
        tmp_path: Path, text: str, expected: tuple[IssueCode, str, int]) -> None:
    state = _validate(tmp_path, text)
    assert _found(state) == [expected], state.issues()
    _neighbour_is_valid(state)


# --- the safety net ----------------------------------------------------------------


def _raising_build(monkeypatch: pytest.MonkeyPatch) -> None:
    real = validating._build

    def build(data: dict[str, Any], *args: Any, **kwargs: Any) -> ModelSpec:
        if str(data.get("model_id")).startswith("m"):  # "m", or a version's "m@stable"
            raise ValueError(f"could not convert string to float: {SECRET!r}")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(validating, "_build", build)


@pytest.mark.parametrize("text", [PLAIN, TWO], ids=["plain", "versions"])
def test_an_unexpected_exception_is_a_400_on_its_document_only(
        tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _raising_build(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="servesync"):
        state = _validate(tmp_path, text + "---\n" + NEIGHBOUR.replace("fine", "fine2"))
    (issue,) = state.issues()
    assert (issue.code, issue.file, issue.line, issue.pointer) == (E400, FILE, 1, "")
    assert "ValueError" in issue.message and SECRET not in issue.message
    assert sorted(s.suffix for s in state.specs) == ["fine", "fine2"]  # the rest as usual
    document = next(r for r in state.files if r.path == FILE).documents[0]
    assert document.model_id == "m" and document.spec is None  # held, as any invalid one
    logged = caplog.text
    assert "ValueError" in logged and FILE in logged and SECRET not in logged


# --- the path-parts cap, per version -------------------------------------------------


def test_a_version_source_of_too_many_parts_is_a_400_and_never_resolved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "$HOME/" + "/".join(["a"] * 2000)
    resolved: list[str] = []
    real = model_paths.resolve_model_source

    def resolve(source: str, **kwargs: Any) -> Any:
        resolved.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(model_paths, "resolve_model_source", resolve)
    state = _validate(tmp_path, TWO.replace("$HOME/common/hf/org/b", f"'{deep}'"))
    assert _found(state) == [(E400, "/versions/1/model_source", 9)]
    (issue,) = state.issues()
    assert f"more than {MAX_SOURCE_PARTS} path parts" in issue.message
    assert deep not in resolved and "$HOME/common/hf/org/a" in resolved
    _neighbour_is_valid(state)
    # the last part that still passes: 64 parts
    ok = "/".join(["$HOME"] + ["a"] * (MAX_SOURCE_PARTS - 1))
    assert ok.count("/") == MAX_SOURCE_PARTS - 1
    state = _validate(tmp_path, TWO.replace("$HOME/common/hf/org/b", f"'{ok}'"))
    assert (E400, "/versions/1/model_source", 9) not in _found(state)


# --- lora with versions --------------------------------------------------------------


def test_lora_on_a_model_with_versions_is_a_422(tmp_path: Path) -> None:
    serving = ServingConfig(accelerator_type="cpu", lora=LoraOffer(
        prefix="s3://adapters/{user_id}/", max_adapters_per_replica=4))
    text = TWO.replace("versions:\n", "lora:\n  path: s3://adapters/alice/x\nversions:\n")
    state = _validate(tmp_path, text, serving)
    assert _found(state) == [(E422, "/lora", 4)]
    (issue,) = state.issues()
    assert issue.message == "lora is not supported on a model with versions"
    _neighbour_is_valid(state)
    # the same lora on a plain model passes
    assert _validate(tmp_path, PLAIN + "lora:\n  path: s3://adapters/alice/x\n",
                     serving).issues() == ()
