"""Generate a tiny, real Llama model that vLLM (CPU build) can serve.

There is no model hub here (``HF_HUB_OFFLINE=1``), so tests and the demo
build their own model: a randomly initialised 2-layer ``LlamaForCausalLM``
(hidden 128, 2 heads of 64 — the CPU attention kernel rejects head_dim 16),
a 512-token byte-level BPE tokenizer trained in about a second on a fixed
text, and a chat template. Deterministic (fixed seed, fixed corpus).

Called by the e2e tests and ``python -m servesync.tinymodel DEST``.
Side effects: writes the model folder ``DEST`` (atomically: built in a
sibling temp folder, then renamed). Idempotent: a folder holding the
completion marker is left as it is. torch/transformers/tokenizers are
imported inside :func:`generate`, so the package imports without them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

MARKER = ".servesync-tinymodel"
"""Written last; its presence means the folder holds a complete model."""

VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS_LINE = (
    "The quick brown fox jumps over the lazy dog. Servesync keeps Ray Serve in step "
    "with git: people commit YAML, a daemon converges the cluster and writes status. "
    "Hello! How are you today? I am a tiny model, 0123456789, and I answer briefly. "
    "user assistant system model serve replica gateway deploy running failed.\n"
)


def _corpus() -> list[str]:
    """A fixed text varied enough to learn the full vocabulary's merges."""
    words = _CORPUS_LINE.split()
    return [
        f"{words[i % len(words)]} {words[(i * 7) % len(words)]} {i} {words[(i * 13) % len(words)]}"
        for i in range(2000)
    ] + [_CORPUS_LINE] * 50


def is_complete(dest: Path) -> bool:
    """True when ``dest`` holds a model written to the end by :func:`generate`."""
    return (dest / MARKER).is_file()


def generate(dest: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to ``dest`` (unless already complete) and return it."""
    dest = Path(dest).resolve()
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # readable by Ray workers running as another user
    try:
        _write_tokenizer(tmp)
        _write_model(tmp, seed=seed)
        (tmp / MARKER).write_text("complete\n", encoding="utf-8")
        if dest.exists():  # a partial folder from an interrupted run
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def _write_model(out: Path, *, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
        pad_token_id=SPECIAL_TOKENS.index("</s>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model = model.bfloat16()
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out))


LORA_TARGETS = ("q_proj", "v_proj")
"""The tiny model's modules a generated adapter changes (each layer's)."""


def generate_lora(dest: Path, *, rank: int = 8, seed: int = 1) -> Path:
    """Write a random LoRA adapter for the tiny model to ``dest``, in PEFT's
    layout (``adapter_config.json`` and ``adapter_model.safetensors``) without
    needing peft: ``lora_A`` [rank, in] and ``lora_B`` [out, rank] for each
    layer's :data:`LORA_TARGETS`. ``lora_B`` is small but not zero (zero is
    PEFT's initial value), so the adapter changes the answers. Returns ``dest``."""
    import json

    import torch
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    hidden, layers = 128, 2  # those of _write_model: q and v both map 128 -> 128
    tensors = {}
    for layer in range(layers):
        for target in LORA_TARGETS:
            key = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator)
            tensors[f"{key}.lora_B.weight"] = 0.05 * torch.randn(hidden, rank,
                                                                 generator=generator)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
              str(dest / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
              "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none",
              "target_modules": list(LORA_TARGETS), "fan_in_fan_out": False,
              "modules_to_save": None, "use_rslora": False, "use_dora": False,
              "base_model_name_or_path": "tiny-llama"}
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m servesync.tinymodel DEST``: write the model, print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m servesync.tinymodel DEST", file=sys.stderr)
        return 2
    print(generate(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
