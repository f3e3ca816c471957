"""The packaged catalog and SKU tables: required entries and the numbers the estimator uses."""

from __future__ import annotations

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
]


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_required_presets_are_complete(name: str) -> None:
    p = get_preset(name)
    assert "/" in p.hf_repo and p.revision
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
    with pytest.raises(PresetError, match="deprecated"):
        get_preset("falcon-40b")
    assert find_preset("falcon-40b") is not None
    assert "falcon-40b" not in {p.name for p in list_presets()}


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
    assert {s.cloud for s in list_skus()} == {"azure", "aws"}
    assert all(s.cloud == "aws" for s in list_skus("aws"))
