"""The generated tiny model: the shape vLLM CPU accepts, a chat template, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from servesync import tinymodel

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinymodel.generate(tmp_path_factory.mktemp("m") / "tiny")


def test_config_has_the_shape_vllm_cpu_accepts(model: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 128)
    assert (config["num_attention_heads"], config["head_dim"]) == (2, 64)
    assert config["vocab_size"] == 512
    assert tinymodel.is_complete(model)


def test_tokenizer_has_512_tokens_and_a_chat_template(model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    assert len(tok) == 512
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<s><|user|>Hello!</s><|assistant|>"
    assert tok.decode(tok("Hello there")["input_ids"]) == "Hello there"


def test_a_complete_model_is_left_as_it_is(model: Path) -> None:
    weights = model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert tinymodel.generate(model) == model
    assert weights.stat().st_mtime_ns == before


def test_an_incomplete_folder_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    tinymodel.generate(dest)
    assert tinymodel.is_complete(dest)
    assert json.loads((dest / "config.json").read_text())["hidden_size"] == 128


def test_cli_usage_error_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "servesync.tinymodel"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_a_lora_adapter_has_peft_layout_and_the_models_shapes(tmp_path: Path) -> None:
    from safetensors import safe_open

    adapter = tinymodel.generate_lora(tmp_path / "greet", rank=4)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("LORA", 4)
    assert config["target_modules"] == list(tinymodel.LORA_TARGETS)
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        assert len(keys) == 2 * 2 * len(tinymodel.LORA_TARGETS)  # layers x targets x A/B
        a = f.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        b = f.get_tensor("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
        assert tuple(a.shape) == (4, 128) and tuple(b.shape) == (128, 4)
        assert b.abs().sum() > 0  # not PEFT's zero start: the adapter changes answers
