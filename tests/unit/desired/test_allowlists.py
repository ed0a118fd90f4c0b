"""The engine_kwargs / env allow-lists (servesync.desired.allowlists): hostile keys
and names are refused (403) naming them, the defaults pass, spellings are
normalised, the operator decides, values are never quoted. Tables, through
validate_tree as the daemon runs it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from servesync.config import (
    DEFAULT_ENGINE_KWARGS_ALLOWED,
    DEFAULT_ENV_ALLOWED,
    NEVER_ALLOWED_ENGINE_KWARGS,
    Config,
    ServingConfig,
)
from servesync.desired import allowlists
from servesync.desired.specs import DesiredState
from servesync.desired.validating import validate_tree
from servesync.errors import Issue, IssueCode

HEAD = "model_id: m\nmodel_source: $HOME/common/hf/org/m\n"
E403 = IssueCode.FORBIDDEN
SECRET = "s3cr3t-hunter2"
NOT_ALLOWED_ENGINE = "is not allowed on this cluster (the operator can allow it in " \
    "serving.engine_kwargs_allowed)"
NOT_ALLOWED_ENV = "is not allowed on this cluster (the operator can allow it in " \
    "serving.env_allowed)"


def _validate(tmp_path: Path, doc: str, **serving: object) -> DesiredState:
    path = tmp_path / "tree" / "users" / "alice" / "m.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(doc, encoding="utf-8")
    cfg = Config(storage_root=str(tmp_path / "private"),
                 serving=ServingConfig(accelerator_type="H20", **serving))  # type: ignore[arg-type]
    return validate_tree(tmp_path / "tree", cfg)


def _engine(*lines: str) -> str:
    """A model file with a default-allowed key and then ``lines`` in engine_kwargs."""
    return HEAD + "engine_kwargs:\n  max_model_len: 4096\n" + "".join(f"  {x}\n" for x in lines)


def _one_issue(state: DesiredState) -> Issue:
    [issue] = state.issues()
    assert state.specs == ()
    return issue


# --- hostile engine_kwargs -----------------------------------------------------------

# (id, the line under engine_kwargs, the key as written, words its message must hold)
ATTACK_KEYS = [
    ("worker_cls", "worker_cls: evil.Worker", "worker_cls", "names code"),
    ("worker_extension_cls", "worker_extension_cls: evil.Ext", "worker_extension_cls",
     "names code"),
    ("scheduler_cls", "scheduler_cls: evil.Scheduler", "scheduler_cls", "names code"),
    ("logits_processors", "logits_processors: [evil.Processor]", "logits_processors",
     "names code"),
    ("kv_transfer_config", "kv_transfer_config: {kv_connector: X, kv_connector_module_path: "
     "evil}", "kv_transfer_config", "nested config"),
    ("speculative_config", "speculative_config: {model: /private/users/bob/draft, "
     "num_speculative_tokens: 4}", "speculative_config", "nested config"),
    ("hf_config_path", "hf_config_path: /private/users/bob/m", "hf_config_path", "a path"),
    ("model_loader_extra_config", "model_loader_extra_config: {tensorizer_uri: "
     "/private/users/bob/m.tensors}", "model_loader_extra_config", "nested config"),
    ("allowed_local_media_path", "allowed_local_media_path: /", "allowed_local_media_path",
     "a path"),
    ("hf_overrides", "hf_overrides: {architectures: [Evil]}", "hf_overrides", "nested config"),
    ("chat_template", "chat_template: /private/users/bob/template.jinja", "chat_template",
     "a path"),
    ("served_model_name", "served_model_name: bob-202601010000-m", "served_model_name",
     "set by servesync"),
    ("Model", "Model: /private/users/bob/m", "Model", "(read as 'model') is never allowed"),
    ("model with a space", "'model ': /private/users/bob/m", "model ",
     "(read as 'model') is never allowed"),
    ("trust-remote-code", "trust-remote-code: true", "trust-remote-code",
     "(read as 'trust_remote_code') is never allowed"),
    ("tokenizer", "tokenizer: /private/users/bob/tok", "tokenizer", "a path"),
    ("download_dir", "download_dir: /private/users/bob", "download_dir", "a path"),
    ("spec_model", "spec_model: /private/users/bob/draft", "spec_model", "a path"),
    ("hf_token", "hf_token: true", "hf_token", "a credential"),
    ("tool_parser_plugin", "tool_parser_plugin: /private/users/bob/p.py",
     "tool_parser_plugin", "names code"),
    ("compilation_config", "compilation_config: {cache_dir: /private/users/bob}",
     "compilation_config", "nested config"),
    ("generation_config", "generation_config: /private/users/bob", "generation_config",
     "a path"),
]


@pytest.mark.parametrize(("line", "key", "words"), [c[1:] for c in ATTACK_KEYS],
                         ids=[c[0] for c in ATTACK_KEYS])
def test_hostile_engine_keys_are_refused_naming_them(tmp_path: Path, line: str, key: str,
                                                     words: str) -> None:
    issue = _one_issue(_validate(tmp_path, _engine(line)))
    assert (issue.code, issue.pointer, issue.line) == (E403, f"/engine_kwargs/{key}", 5)
    assert issue.message.startswith(f"engine_kwargs key {key!r}")
    assert words in issue.message
    assert "/private/users/bob" not in issue.message  # the value is never quoted


# --- hostile env ---------------------------------------------------------------------

ATTACK_ENV = ["LD_AUDIT", "PYTHONHOME", "PATH", "BASH_ENV", "GCONV_PATH", "CC", "HF_HOME",
              "HF_HUB_CACHE", "TORCH_EXTENSIONS_DIR", "VLLM_ALLOW_INSECURE_SERIALIZATION"]


@pytest.mark.parametrize("name", ATTACK_ENV)
def test_hostile_env_names_are_refused_naming_them(tmp_path: Path, name: str) -> None:
    doc = HEAD + f"env:\n  VLLM_LOGGING_LEVEL: INFO\n  {name}: '{SECRET}'\n"
    issue = _one_issue(_validate(tmp_path, doc))
    assert (issue.code, issue.pointer, issue.line) == (E403, f"/env/{name}", 5)
    assert issue.message == f"env name {name!r} {NOT_ALLOWED_ENV}"
    assert SECRET not in issue.render()


def test_env_values_never_appear_in_refusals(tmp_path: Path) -> None:
    env = {name: f"{SECRET}-{name}" for name in [*ATTACK_ENV, "LD_PRELOAD", "PYTHONPATH"]}
    state = _validate(tmp_path, HEAD + yaml.safe_dump({"env": env}))
    rendered = [i.render() for i in state.issues()]
    assert len(rendered) == len(env)
    assert not any(SECRET in r for r in rendered), rendered


# --- the defaults --------------------------------------------------------------------

# A plausible value for every default-allowed engine key (kept complete by the test below).
DEFAULT_VALUES: dict[str, object] = {
    "max_model_len": 4096, "gpu_memory_utilization": 0.85, "kv_cache_memory_bytes": 2 << 30,
    "max_num_seqs": 64, "max_num_batched_tokens": 8192, "enable_chunked_prefill": True,
    "scheduling_policy": "priority", "async_scheduling": True, "enable_prefix_caching": True,
    "block_size": 16, "dtype": "bfloat16", "kv_cache_dtype": "fp8", "quantization": "fp8",
    "seed": 42, "enforce_eager": True, "max_logprobs": 20, "disable_log_stats": False,
    "enable_auto_tool_choice": True, "tool_call_parser": "hermes",
    "reasoning_parser": "deepseek_r1",
}


def test_every_default_engine_key_and_env_name_passes_and_reaches_the_spec(
        tmp_path: Path) -> None:
    assert set(DEFAULT_VALUES) == set(DEFAULT_ENGINE_KWARGS_ALLOWED)
    env = {name: "1" for name in DEFAULT_ENV_ALLOWED}
    state = _validate(tmp_path, HEAD + yaml.safe_dump({"engine_kwargs": DEFAULT_VALUES,
                                                       "env": env}))
    assert state.issues() == ()
    [spec] = state.specs
    assert dict(spec.engine_kwargs) == DEFAULT_VALUES
    assert dict(spec.env) == env


def test_the_defaults_are_what_the_issue_asks_for() -> None:
    assert {"max_model_len", "gpu_memory_utilization", "max_num_seqs", "dtype", "seed",
            "enable_prefix_caching", "tool_call_parser", "reasoning_parser"} \
        <= set(DEFAULT_ENGINE_KWARGS_ALLOWED)
    assert set(DEFAULT_ENV_ALLOWED) == {"VLLM_LOGGING_LEVEL", "OMP_NUM_THREADS",
                                        "TOKENIZERS_PARALLELISM", "NCCL_DEBUG"}
    assert not any(e.endswith("*") for e in DEFAULT_ENV_ALLOWED)  # no broad prefix
    assert not set(DEFAULT_ENGINE_KWARGS_ALLOWED) & set(NEVER_ALLOWED_ENGINE_KWARGS)


def test_every_default_engine_key_is_an_argument_of_the_installed_vllm() -> None:
    """Ray Serve LLM passes each engine_kwargs key to vLLM's AsyncEngineArgs or,
    for the OpenAI server's own options (the tool parser), FrontendArgs, and
    refuses any other. A vLLM upgrade that renames a default key fails here."""
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args")
    known = {f.name for f in dataclasses.fields(arg_utils.AsyncEngineArgs)} \
        | {f.name for f in dataclasses.fields(cli_args.FrontendArgs)}
    assert sorted(set(DEFAULT_ENGINE_KWARGS_ALLOWED) - known) == []
    engine_only = {f.name for f in dataclasses.fields(arg_utils.EngineArgs)}
    frontend = set(DEFAULT_ENGINE_KWARGS_ALLOWED) - engine_only
    assert frontend == {"enable_auto_tool_choice", "tool_call_parser"}


# --- spelling ------------------------------------------------------------------------

# (id, the key as written, how the message goes on after "engine_kwargs key <key>")
SPELLINGS = [
    ("dashes and case", "Max-Model-Len", "must be spelled 'max_model_len'"),
    ("trailing space", "max_model_len ", "must be spelled 'max_model_len'"),
    ("spaces", " MAX MODEL LEN", "must be spelled 'max_model_len'"),
    ("doubled separators", "max__model--len", "must be spelled 'max_model_len'"),
    ("never, in another case", "Trust_Remote_Code",
     "(read as 'trust_remote_code') is never allowed"),
    ("zero-width space", "mo\u200bdel", "(read as 'model') is never allowed"),
    ("full-width letters", "\uff4d\uff4f\uff44\uff45\uff4c", "(read as 'model') is never allowed"),
    ("tab", "tokenizer\t", "(read as 'tokenizer') is never allowed"),
    ("never, with dashes", "Worker-Cls", "(read as 'worker_cls') is never allowed"),
    ("denied, in another case", "DEVICE",
     "(read as 'device') is denied on this cluster (serving.engine_kwargs_deny)"),
    ("unknown, with dashes", "Load-Format", f"(read as 'load_format') {NOT_ALLOWED_ENGINE}"),
    ("unknown", "load_format", NOT_ALLOWED_ENGINE),
]


@pytest.mark.parametrize(("key", "message"), [c[1:] for c in SPELLINGS],
                         ids=[c[0] for c in SPELLINGS])
def test_keys_are_compared_normalised(tmp_path: Path, key: str, message: str) -> None:
    doc = HEAD + yaml.safe_dump({"engine_kwargs": {key: 1}}, allow_unicode=True)
    issue = _one_issue(_validate(tmp_path, doc))
    assert (issue.code, issue.pointer) == (E403, f"/engine_kwargs/{key}")
    assert issue.message.startswith(f"engine_kwargs key {key!r} {message}")


@pytest.mark.parametrize(("key", "normal"), [
    ("max_model_len", "max_model_len"), ("Max-Model-Len", "max_model_len"),
    ("  model  ", "model"), ("mo\u200bdel", "model"), ("\uff2d\uff4f\uff44\uff45\uff4c", "model"),
    ("_api_process_count", "api_process_count"), ("a - b _ c", "a_b_c"), ("", ""),
])
def test_normalise(key: str, normal: str) -> None:
    assert allowlists.normalise(key) == normal


# --- the operator decides ------------------------------------------------------------

ENGINE, ENV = DEFAULT_ENGINE_KWARGS_ALLOWED, DEFAULT_ENV_ALLOWED

# (id, serving config, the model file, expected (pointer, words) of 403s)
OPERATOR = [
    ("an extra engine key", {"engine_kwargs_allowed": (*ENGINE, "limit_mm_per_prompt")},
     _engine("limit_mm_per_prompt: {image: 2}"), []),
    ("the list replaces the defaults", {"engine_kwargs_allowed": ("max_model_len",)},
     _engine("dtype: half"), [("/engine_kwargs/dtype", NOT_ALLOWED_ENGINE)]),
    ("deny wins over allow", {"engine_kwargs_allowed": (*ENGINE, "load_format"),
                              "engine_kwargs_deny": ("load_format",)},
     _engine("load_format: dummy"), [("/engine_kwargs/load_format", "denied")]),
    ("deny is normalised too", {"engine_kwargs_deny": ("dtype",)}, _engine("DType: half"),
     [("/engine_kwargs/DType", "(read as 'dtype') is denied")]),
    ("a never key stays refused", {"engine_kwargs_deny": ()},
     _engine("trust_remote_code: true"), [("/engine_kwargs/trust_remote_code", "never")]),
    ("an extra env name", {"env_allowed": (*ENV, "HF_HUB_OFFLINE")},
     HEAD + "env: {HF_HUB_OFFLINE: '1', NCCL_DEBUG: INFO}\n", []),
    ("a prefix", {"env_allowed": ("MYAPP_*",)},
     HEAD + "env: {MYAPP_MODE: a, MYAPP_: b, MYAPPX: c}\n",
     [("/env/MYAPPX", NOT_ALLOWED_ENV)]),
    ("a denied prefix", {"env_allowed": ("NCCL_*",), "env_deny": ("NCCL_NET_*",)},
     HEAD + "env: {NCCL_DEBUG: INFO, NCCL_NET_PLUGIN: evil}\n",
     [("/env/NCCL_NET_PLUGIN", "is denied on this cluster (serving.env_deny)")]),
    ("the default deny list under a prefix", {"env_allowed": ("LD_*",)},
     HEAD + "env: {LD_BIND_NOW: '1', LD_PRELOAD: /evil.so}\n",
     [("/env/LD_PRELOAD", "denied")]),
    ("nothing allowed", {"env_allowed": (), "engine_kwargs_allowed": ()},
     _engine() + "env: {NCCL_DEBUG: INFO}\n",
     [("/engine_kwargs/max_model_len", NOT_ALLOWED_ENGINE), ("/env/NCCL_DEBUG", NOT_ALLOWED_ENV)]),
]


@pytest.mark.parametrize(("serving", "doc", "expected"), [c[1:] for c in OPERATOR],
                         ids=[c[0] for c in OPERATOR])
def test_the_operator_decides(tmp_path: Path, serving: dict[str, object], doc: str,
                              expected: list[tuple[str, str]]) -> None:
    state = _validate(tmp_path, doc, **serving)
    found = sorted(state.issues(), key=lambda i: i.pointer)
    assert [i.pointer for i in found] == [p for p, _ in expected]
    assert all(i.code == E403 and words in i.message
               for i, (_, words) in zip(found, expected, strict=True))
    assert bool(state.specs) == (not expected)


def test_an_allowed_key_reaches_the_spec_unchanged(tmp_path: Path) -> None:
    state = _validate(tmp_path, _engine("limit_mm_per_prompt: {image: 2}"),
                      engine_kwargs_allowed=(*ENGINE, "limit_mm_per_prompt"))
    [spec] = state.specs
    assert dict(spec.engine_kwargs) == {"max_model_len": 4096, "limit_mm_per_prompt": {"image": 2}}


@pytest.mark.parametrize(("name", "entries", "expected"), [
    ("NCCL_DEBUG", ("NCCL_DEBUG",), True), ("NCCL_DEBUG_FILE", ("NCCL_DEBUG",), False),
    ("NCCL_DEBUG_FILE", ("NCCL_*",), True), ("NCCL", ("NCCL_*",), False),
    ("ANYTHING", ("A*",), True), ("X", (), False),
])
def test_env_entries_are_names_or_prefixes(name: str, entries: tuple[str, ...],
                                           expected: bool) -> None:
    assert allowlists.matches(name, entries) is expected


def test_the_readme_security_model_names_every_default_and_never_allowed_key() -> None:
    readme = Path(__file__).resolve().parents[3] / "README.md"
    section = readme.read_text("utf-8").split("## Security model", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))
    keys = {*DEFAULT_ENGINE_KWARGS_ALLOWED, *DEFAULT_ENV_ALLOWED, *NEVER_ALLOWED_ENGINE_KWARGS}
    assert sorted(keys - named) == []
