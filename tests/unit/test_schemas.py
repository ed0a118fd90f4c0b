"""The JSON Schemas: valid draft 2020-12, documented, in step with the code and examples."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from servesync import config, schemas
from servesync.config import Config, ServingConfig
from servesync.desired.validating import validate_tree

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILES = sorted((REPO / "schemas").glob("*.schema.json"))
OURS = ("serving-model", "servesync-config")
EXAMPLE = REPO / "desired_state"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_every_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:servesync:schema:" + path.name.removesuffix(".schema.json")
    assert schema["title"]


def _objects(schema: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield where, schema
    for key in ("properties", "patternProperties"):
        for name, sub in schema.get(key, {}).items():
            yield from _objects(sub, f"{where}/{name}")
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{where}/items")


@pytest.mark.parametrize("name", OURS)
def test_every_field_is_described_and_closed(name: str) -> None:
    for where, sub in _objects(schemas.load(name)):
        assert sub.get("description"), f"{name}{where} has no description"
        if sub.get("type") == "object" and ("properties" in sub or "patternProperties" in sub):
            assert sub.get("additionalProperties") is False, f"{name}{where} is open"


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_config_schema_matches_what_from_mapping_consumes() -> None:
    props = schemas.load("servesync-config")["properties"]
    assert set(props) == _fields(Config) - {"path"}
    for key, cls in (("source", config.SourceConfig), ("ray", config.RayConfig),
                     ("serving", config.ServingConfig)):
        assert set(props[key]["properties"]) == _fields(cls), key


def test_a_full_config_validates_and_loads(tmp_path: Path) -> None:
    text = """\
source: {path: desired, git_url: null, branch: main, subpath: sub, poll_interval_s: 5,
         verify_signatures: true, trusted_keys_file: keys.asc}
state_dir: state
status_dir: status
storage_root: /private
ray: {address: local, num_cpus: 16, namespace: serve}
serving: {accelerator_type: H20, http_host: 127.0.0.1, http_port: 8001,
          openai_base_url: 'http://x/v1', engine_kwargs_allowed: [max_model_len, dtype],
          env_allowed: [NCCL_DEBUG, 'MYAPP_*'], engine_kwargs_deny: [model], env_deny: [X],
          allow_hub_ids: false, deploy_timeout_s: 60, replica_env: {HF_HUB_OFFLINE: "1"}}
tick_interval_s: 10
"""
    (tmp_path / "servesync.yaml").write_text(text)
    cfg = config.load(tmp_path / "servesync.yaml")
    assert cfg.source_root == tmp_path / "desired" / "sub"
    assert (cfg.serving.accelerator_type, cfg.serving.allow_hub_ids) == ("H20", False)
    assert cfg.serving.replica_env == {"HF_HUB_OFFLINE": "1"}
    assert cfg.serving.engine_kwargs_allowed == ("max_model_len", "dtype")
    assert cfg.serving.env_allowed == ("NCCL_DEBUG", "MYAPP_*")


@pytest.mark.parametrize("bad", [
    "tick_interval_s: 0\n", "serving: {http_port: 70000}\n", "ray: {num_cpus: 0}\n",
    "serving: {replica_env: {lower: x}}\n", "source: {branch: ''}\n", "extra: 1\n",
    "serving: {engine_kwargs_allowed: [tokenizer]}\n", "serving: {engine_kwargs_allowed: [A]}\n",
    "serving: {engine_kwargs_allowed: [dtype, dtype]}\n", "serving: {env_allowed: ['*']}\n",
    "serving: {env_allowed: [lower]}\n",
])
def test_the_config_schema_refuses_nonsense(bad: str) -> None:
    import yaml

    assert list(schemas.validator("servesync-config").iter_errors(yaml.safe_load(bad)))


def test_the_demo_config_is_accepted() -> None:
    demo = REPO / "demo" / "servesync.yaml"
    if not demo.exists():
        pytest.skip("no demo config in this checkout")
    assert config.load(demo).serving.cpu_platform


def test_the_example_repository_validates_clean(tmp_path: Path) -> None:
    cfg = Config(storage_root=str(tmp_path), serving=ServingConfig(accelerator_type="H20"))
    state = validate_tree(EXAMPLE, cfg)
    assert state.issues() == ()
    names = {(s.user_id, s.suffix, s.enabled) for s in state.specs}
    assert {("alice", "qwen-0.5b", True), ("bob", "mistral-7b", False)} <= names
    assert any(s.autoscaling is not None for s in state.specs)


def test_example_files_point_editors_at_the_schema() -> None:
    files = sorted(EXAMPLE.glob("users/**/*.y*ml"))
    assert files
    for path in files:
        first = path.read_text("utf-8").splitlines()[0]
        prefix = "# yaml-language-server: $schema="
        assert first.startswith(prefix), path
        target = (path.parent / first.removeprefix(prefix)).resolve()
        assert target == REPO / "schemas" / "serving-model.schema.json", path
