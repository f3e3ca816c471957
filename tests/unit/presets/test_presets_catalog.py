"""The packaged catalog and SKU tables: required entries and the numbers the estimator uses."""

from __future__ import annotations

import re

import pytest

from kaito.presets import (
    PresetError,
    custom_preset,
    find_preset,
    get_preset,
    get_sku,
    list_presets,
    list_skus,
    resolve_preset,
)

REQUIRED_PRESETS = [
    "phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct",
    "phi-4",
    "phi-4-mini-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct",
    "mistral-7b",
    "mistral-7b-instruct",
    "qwen2.5-coder-7b-instruct",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b",
    "falcon-7b",
    "falcon-7b-instruct",
    "gpt-oss-20b",
    # added for parity with upstream Kaito v0.12
    "qwen2.5-coder-32b-instruct",
    "gemma-3-4b-instruct",
    "gemma-3-27b-instruct",
    "gpt-oss-120b",
    "deepseek-r1-0528",
    "deepseek-v3-0324",
    "ministral-3-3b-instruct",
    "ministral-3-8b-instruct",
    "ministral-3-14b-instruct",
    "mistral-large-3-675b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
]


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_required_presets_are_complete(name: str) -> None:
    p = get_preset(name)
    assert "/" in p.hf_repo
    assert re.fullmatch(r"[0-9a-f]{40}", p.revision), f"{name}: pin a commit, not {p.revision!r}"
    assert p.upstream_file_size_gib and p.vocab_size > 0 and p.hidden_size > 0
    assert p.weights_gb > 0 and p.context_length >= 2048
    assert p.num_attention_heads % p.num_kv_heads == 0
    assert "vllm" in p.runtimes


def test_kv_bytes_per_token_from_architecture() -> None:
    # 2 (K and V) x 32 layers x 32 KV heads x 96 head dim x 2 bytes
    assert get_preset("phi-3-mini-4k-instruct").kv_bytes_per_token() == 393_216
    # grouped-query attention: 8 KV heads of 128 over 80 layers
    assert get_preset("llama-3.3-70b-instruct").kv_bytes_per_token() == 2 * 80 * 8 * 128 * 2
    # falcon-7b is multi-query: a single KV head
    assert get_preset("falcon-7b").kv_bytes_per_token() == 2 * 32 * 1 * 64 * 2


def test_gated_models_need_a_token_and_parsers_are_set() -> None:
    assert get_preset("llama-3.1-8b-instruct").requires_token
    assert not get_preset("phi-4").requires_token
    assert get_preset("deepseek-r1-distill-qwen-14b").reasoning_parser == "deepseek_r1"
    assert get_preset("llama-3.3-70b-instruct").tool_parser == "llama3_json"


def test_unknown_and_deprecated_presets_raise() -> None:
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        get_preset("nope")
    # upstream deprecates phi-2 and still supports falcon-40b
    with pytest.raises(PresetError, match="deprecated"):
        get_preset("phi-2")
    assert find_preset("phi-2") is not None
    assert "phi-2" not in {p.name for p in list_presets()}
    assert get_preset("falcon-40b").deprecated is None


def test_upstream_facts() -> None:
    # sizes as upstream's catalog gives them; gpt-oss counts its checkpoint twice there
    assert get_preset("gpt-oss-20b").upstream_file_size_gib == 25.63
    assert get_preset("gpt-oss-20b").weights_bytes / (1 << 30) == pytest.approx(25.63 / 2, rel=0.01)
    assert get_preset("gpt-oss-120b").weights_bytes / (1 << 30) == pytest.approx(121.54 / 2, rel=0.01)
    assert get_preset("deepseek-v3-0324").kv_lora_rank == 512
    assert (
        get_preset("gemma-3-27b-instruct").head_dim == 128
        and get_preset("gemma-3-4b-instruct").head_dim == 256
    )
    assert get_preset("llama-3.3-70b-instruct").revision == "6f6073b423013f6a7d4d9f39144961bfbfbc386b"
    assert get_preset("falcon-7b").upstream_disable_tp and not get_preset("phi-4").upstream_distributed
    # gated: what upstream marks (llama), plus Hugging Face licence gates kaito knows of
    gated = {p.name for p in list_presets() if p.gated}
    assert {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "gemma-3-4b-instruct"} <= gated
    assert "phi-4" not in gated and "deepseek-r1-0528" not in gated


def test_custom_hf_model_with_parameters() -> None:
    params = {
        "params_b": 0.6,
        "context_length": 40960,
        "num_layers": 28,
        "num_attention_heads": 16,
        "num_kv_heads": 8,
        "head_dim": 128,
    }
    p = resolve_preset("Qwen/Qwen3-0.6B", params)
    assert p.custom and p.hf_repo == "Qwen/Qwen3-0.6B"
    assert p.weights_bytes == 1_200_000_000  # two bytes per parameter by default
    with pytest.raises(PresetError, match="needs parameters: head_dim"):
        custom_preset("org/model", {k: v for k, v in params.items() if k != "head_dim"})
    with pytest.raises(PresetError, match="give its parameters"):
        resolve_preset("org/model")
    with pytest.raises(PresetError, match="invalid parameters"):
        custom_preset("org/model", {**params, "num_layers": -1})


def test_sku_tables() -> None:
    v100 = get_sku("Standard_NC6s_v3")
    assert v100 is not None
    assert (v100.gpu_model, v100.gpu_count, v100.gpu_memory_gib, v100.bf16) == ("V100", 1, 16, False)
    assert get_sku("standard_nc6s_v3") == v100  # case-insensitive
    assert get_sku("Standard_ND96asr_A100_v4") == get_sku("Standard_ND96asr_v4")  # alias
    a100 = get_sku("Standard_NC24ads_A100_v4")
    assert a100 is not None and a100.bf16 and a100.gpu_memory_gib == 80
    for name in (
        "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_NC40ads_H100_v5",
        "Standard_ND96isr_H100_v5",
        "Standard_NV36ads_A10_v5",
        "p4d.24xlarge",
        "p5.48xlarge",
        "g5.xlarge",
        "g6.xlarge",
    ):
        assert get_sku(name) is not None, name
    assert get_sku("Standard_D4s_v3") is None
    assert {s.cloud for s in list_skus()} == {"azure", "aws", "arc"}
    for name in (
        "Standard_NCC40ads_H100_v5",
        "Standard_ND96isr_H200_v5",
        "p5en.48xlarge",
        "g6.2xlarge",
        "gr6.4xlarge",
        "g5.8xlarge",
        "g5.16xlarge",
        "Standard_NC4_A2",
    ):
        s = get_sku(name)
        assert s is not None and s.supported and s.upstream == "listed", name
    for name in ("Standard_NG32ads_V620_v1", "trn1.32xlarge", "inf2.xlarge", "g4ad.xlarge"):
        s = get_sku(name)
        assert (
            s is not None and not s.supported and "not supported by the vLLM runtime" in s.unsupported_reason
        )
    assert v100.upstream == "dropped" and "compute capability >= 8.0" in v100.upstream_note
    g6e = get_sku("g6e.xlarge")
    assert g6e is not None and g6e.upstream == "absent"
    assert all(s.cloud == "aws" for s in list_skus("aws"))
