"""Estimator figures against hand computation (see docs/presets.md for the model)."""

from __future__ import annotations

import pytest

from kaito.presets import GPUSku, estimate, get_preset, get_sku, list_presets, list_skus, rank_skus
from kaito.presets.estimator import tuning_fits

GIB = 1 << 30


def sku(name: str) -> GPUSku:
    s = get_sku(name)
    assert s is not None
    return s


def test_phi3_mini_4k_on_one_v100_is_fp16() -> None:
    e = estimate(get_preset("phi-3-mini-4k-instruct"), sku("Standard_NC6s_v3"))
    # Budget: 0.9 x 16 GiB - 1 GiB reserve = 14_388_140_441 bytes; weights 7.64 GB.
    budget = int(16 * GIB * 0.9) - GIB
    assert budget == 14_388_140_441
    kv = budget - 7_640_000_000
    assert e.kv_cache_bytes == kv == 6_748_140_441
    # 393_216 bytes per token -> 17_161 tokens -> 17_152 in 16-token blocks.
    assert e.kv_cache_tokens == 17_152
    assert e.dtype == "float16"  # V100 has no bf16
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel) == (1, 1, 1)
    assert e.max_model_len == 4096
    assert e.max_concurrent_seqs == 4  # 17_152 // 4096
    assert e.fits and e.hourly_cost == 3.06


def test_phi3_mini_128k_on_v100_caps_the_context() -> None:
    e = estimate(get_preset("phi-3-mini-128k-instruct"), sku("Standard_NC6s_v3"))
    assert e.fits and e.max_model_len == 17_152 and e.max_concurrent_seqs == 1


def test_llama_70b_on_single_a100_nodes_needs_two_nodes() -> None:
    e = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_NC24ads_A100_v4"))
    # per GPU: 0.9 x 80 GiB - 1 GiB = 71 GiB; need 141.1 GB + 4096 x 327_680 B = 142.44 GB.
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel) == (2, 1, 2)
    assert e.dtype == "bfloat16"
    assert e.kv_cache_bytes == 2 * 71 * GIB - 141_100_000_000 == 11_371_339_008
    assert e.kv_cache_tokens == 34_688  # 34_702 tokens -> whole blocks
    assert e.max_model_len == 34_688 and e.max_concurrent_seqs == 1
    assert e.hourly_cost == pytest.approx(2 * 3.673)


def test_llama_70b_on_eight_a100_80gb() -> None:
    e = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_ND96amsr_A100_v4"))
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel) == (1, 8, 1)
    assert e.kv_cache_bytes == 8 * 71 * GIB - 141_100_000_000
    assert e.kv_cache_tokens == 1_430_608
    assert e.max_model_len == 131_072 and e.max_concurrent_seqs == 10
    assert e.vllm_args()["tensor_parallel_size"] == 8


def test_too_few_nodes_is_reported_with_the_minimum() -> None:
    e = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_NC24ads_A100_v4"), node_count=1)
    assert not e.fits and e.required_nodes == 2
    assert "use at least 2 nodes" in e.reason


def test_compute_capability_gate() -> None:
    e = estimate(get_preset("gpt-oss-20b"), sku("Standard_NC6s_v3"))
    assert not e.fits and "compute capability >= 8.0" in e.reason
    assert estimate(get_preset("gpt-oss-20b"), sku("Standard_NC24ads_A100_v4")).fits


def test_heads_limit_tensor_parallel() -> None:
    # falcon-7b has 71 attention heads: no TP > 1; the four V100s become pipeline stages.
    e = estimate(get_preset("falcon-7b"), sku("Standard_NC24s_v3"))
    assert e.fits and e.tensor_parallel == 1 and e.pipeline_parallel == 4 and e.node_count == 1


def test_ranking_is_cheapest_first_and_only_fitting() -> None:
    plans = rank_skus(get_preset("phi-3-mini-4k-instruct"), cloud="azure")
    costs = [p.hourly_cost for p in plans if p.hourly_cost is not None]
    assert costs == sorted(costs) and all(p.fits for p in plans)
    assert plans[0].instance_type == "Standard_NC4as_T4_v3"


def test_every_preset_fits_somewhere_and_estimates_are_consistent() -> None:
    for preset in list_presets():
        assert rank_skus(preset), preset.name
        for s in list_skus():
            e = estimate(preset, s)
            if e.fits:
                assert 0 < e.max_model_len <= preset.context_length
                assert e.kv_cache_tokens >= e.max_model_len
                assert e.tensor_parallel * (e.pipeline_parallel // e.node_count) <= s.gpu_count


def test_tuning_memory() -> None:
    ok, _ = tuning_fits(get_preset("phi-3-mini-4k-instruct"), sku("Standard_NC6s_v3"), "qlora")
    assert ok
    ok, reason = tuning_fits(get_preset("phi-4"), sku("Standard_NC6s_v3"), "lora")
    assert not ok and "per GPU" in reason
