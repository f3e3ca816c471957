"""A tiny random-weight Phi-3 model, its tokenizer and a LoRA adapter, made on the spot.

Tests and the benchmark need a real model that real vLLM can load, but nothing here can reach a
model hub. So the model is built at test time: a Phi-3 architecture (the seed's preset family)
small enough to load in seconds on two CPU cores. ``head_dim`` is 64 because vLLM's CPU attention
rejects small head sizes such as 16. The tokenizer is a byte-level BPE trained on a generated
corpus and carries a Phi-3 style chat template, so the chat endpoints exercise template rendering.

The adapter is a peft LoRA whose B matrices are random (peft's ``init_lora_weights=False``), so
applying it really changes the model's output - an all-zero B would make an adapter test vacuous.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
_WORDS = [
    "kaito",
    "kubernetes",
    "workspace",
    "preset",
    "inference",
    "tuning",
    "adapter",
    "model",
    "gpu",
    "node",
    "cluster",
    "pod",
    "service",
    "request",
    "token",
    "prompt",
    "answer",
    "question",
    "hello",
    "world",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "are",
    "this",
    "be",
    "at",
    "by",
    "from",
    "or",
    "an",
    "not",
    "have",
    "you",
    "what",
    "how",
    "why",
    "when",
    "which",
    "can",
    "will",
    "phi",
    "mistral",
    "llama",
    "falcon",
    "vllm",
    "server",
    "chat",
    "completion",
    "stream",
    "metric",
    "health",
    "ready",
    "load",
]


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 24))) for _ in range(n_lines)]


def build_tiny_model(
    out_dir: Path,
    *,
    hidden_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a loadable Phi-3 checkpoint (config, safetensors, tokenizer, chat template)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(2000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = max_position_embeddings
    fast.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = Phi3Config(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        original_max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = Phi3ForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init give more varied greedy output
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out_dir, safe_serialization=True)
    model.generation_config.save_pretrained(out_dir)
    return out_dir


def build_tiny_adapter(model_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 1) -> Path:
    """Write a peft LoRA adapter for ``model_dir`` whose weights visibly change the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=rank * 4,
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    # peft records the base model path; keep it relative-free so the adapter can be moved.
    cfg_path = out_dir / "adapter_config.json"
    data: dict[str, Any] = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = str(model_dir)
    cfg_path.write_text(json.dumps(data, indent=2))
    return out_dir


def cpu_env(**extra: str) -> dict[str, str]:
    """Environment for vLLM on a small CPU machine with no hub access (tests and benchmarks)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        OMP_NUM_THREADS="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env
