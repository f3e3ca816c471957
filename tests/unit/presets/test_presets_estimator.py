"""Estimator figures against hand computation (see docs/presets.md for the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito.presets import GPUSku, compare, estimate, get_preset, get_sku, list_presets, list_skus, rank_skus
from kaito.presets.estimator import (
    ACTIVATION_FACTOR,
    CUDA_CONTEXT_BYTES,
    CUDA_GRAPH_BYTES,
    NCCL_BYTES,
    stage_layers,
    tuning_fits,
)

GIB = 1 << 30
ROOT = Path(__file__).resolve().parents[3]


def sku(name: str) -> GPUSku:
    s = get_sku(name)
    assert s is not None
    return s


def test_phi3_mini_4k_on_one_v100_by_hand() -> None:
    e = estimate(get_preset("phi-3-mini-4k-instruct"), sku("Standard_NC6s_v3"))
    budget = int(16 * GIB * 0.84)
    runtime = CUDA_CONTEXT_BYTES + CUDA_GRAPH_BYTES  # one GPU: no NCCL
    # profiling pass: 2048 batched tokens x hidden 3072 x 2 bytes x factor; logits 256 seqs x 32064 x fp32
    activations = 2048 * 3072 * 2 * ACTIVATION_FACTOR + 256 * 32064 * 4
    free = budget - 7_640_000_000 - runtime - activations
    assert e.per_gpu is not None
    assert (e.per_gpu.budget, e.per_gpu.runtime, e.per_gpu.activations) == (budget, runtime, activations)
    assert e.per_gpu.kv_cache == free
    # 393_216 bytes per token over 32 layers -> whole 16-token blocks
    assert e.kv_cache_tokens == free // 393_216 // 16 * 16 == 13_376
    assert e.dtype == "float16"  # V100 has no bf16
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel, e.data_parallel) == (1, 1, 1, 1)
    assert e.max_model_len == 4096 and e.max_concurrent_seqs == 3
    assert e.fits and e.hourly_cost == 3.06 and e.gpu_memory_utilization == 0.84
    assert "upstream Kaito v0.12 no longer supports Standard_NC6s_v3" in e.upstream_note


def test_first_and_last_stage_carry_embeddings_and_lm_head() -> None:
    p = get_preset("llama-3.3-70b-instruct")
    e = estimate(p, sku("Standard_NC48ads_A100_v4"))  # 2 x A100 80 GB per node
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel) == (2, 2, 2)
    assert e.distributed_backend == "mp"
    assert e.vllm_args()["nnodes"] == 2 and e.vllm_args()["distributed_executor_backend"] == "mp"
    embed = 128256 * 8192 * 2
    layer = (141_100_000_000 - 2 * embed) / 80
    assert e.per_gpu is not None
    # both stages hold 40 layers and one vocab matrix, halved by tensor parallel
    assert e.per_gpu.weights == int((40 * layer + embed) / 2)
    assert e.per_gpu.runtime == CUDA_CONTEXT_BYTES + CUDA_GRAPH_BYTES + NCCL_BYTES
    # the last stage also holds the sampler's fp32 logits: it is the tightest
    assert e.per_gpu.activations == 2048 * 8192 * 2 * ACTIVATION_FACTOR // 2 + 256 * 128256 * 4


def test_70b_never_ranks_a_many_node_plan_first() -> None:
    # the seed's complaint: 10 x T4 with pipeline parallel 10 in one pod came first
    plans = rank_skus(get_preset("llama-3.3-70b-instruct"))
    assert plans[0].node_count == 1
    t4 = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_NC4as_T4_v3"))
    assert t4.fits and t4.node_count > 10 and t4.distributed_backend == "mp"
    assert t4.tensor_parallel * t4.pipeline_parallel == t4.node_count  # one stage per node
    single = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_NC4as_T4_v3"), multi_node=False)
    assert not single.fits and "cannot hold it on one node" in single.reason
    assert "weights" in single.reason and "KV cache" in single.reason  # the per-GPU arithmetic


def test_llama_70b_on_single_a100_nodes_needs_three_like_upstream() -> None:
    p, s = get_preset("llama-3.3-70b-instruct"), sku("Standard_NC24ads_A100_v4")
    e = estimate(p, s)
    assert (e.node_count, e.tensor_parallel, e.pipeline_parallel) == (3, 1, 3)
    assert compare.upstream_node_count(p, s).nodes == 3
    short = estimate(p, s, node_count=2)
    assert not short.fits and short.required_nodes == 3 and "use at least 3 nodes" in short.reason
    assert "stage" in short.reason  # names the stage that overflows


def test_small_model_gets_data_parallel() -> None:
    e = estimate(get_preset("phi-4"), sku("Standard_ND96isr_H100_v5"))
    assert (e.tensor_parallel, e.pipeline_parallel, e.data_parallel) == (1, 1, 8)
    assert e.gpus_per_node == 8 and e.vllm_args()["data_parallel_size"] == 8
    assert e.max_model_len == 16384 and e.max_num_seqs == 1024 and e.max_num_batched_tokens == 8192


def test_tensor_parallel_grows_until_a_full_context_fits() -> None:
    e = estimate(get_preset("llama-3.3-70b-instruct"), sku("Standard_ND96amsr_A100_v4"))
    assert (e.tensor_parallel, e.data_parallel) == (4, 2) and e.max_model_len == 131_072


def test_mla_kv_cache_is_one_latent_per_layer() -> None:
    p = get_preset("deepseek-r1-0528")
    assert p.kv_bytes_per_token() == 61 * (512 + 64) * 2
    assert p.kv_bytes_per_token_per_layer_rank(8) == (512 + 64) * 2  # replicated, not split
    e = estimate(p, sku("Standard_ND96isr_H200_v5"))
    assert e.fits and (e.node_count, e.tensor_parallel) == (1, 8)
    assert estimate(p, sku("Standard_ND96isr_H100_v5")).node_count == 2


def test_compute_capability_and_vendor_gates() -> None:
    e = estimate(get_preset("gpt-oss-20b"), sku("Standard_NC6s_v3"))
    assert not e.fits and "compute capability >= 8.0" in e.reason
    assert estimate(get_preset("gpt-oss-20b"), sku("Standard_NC24ads_A100_v4")).fits
    for name in ("trn1.2xlarge", "inf2.xlarge", "g4ad.xlarge", "Standard_NG32ads_V620_v1"):
        e = estimate(get_preset("phi-3-mini-4k-instruct"), sku(name))
        assert not e.fits and "not supported by the vLLM runtime" in e.reason, name


def test_heads_limit_tensor_parallel() -> None:
    # falcon-7b has 71 attention heads: no TP > 1; it does not fit one 16 GiB V100 at 0.84, so two
    # pipeline stages per engine, two engines on the four V100s.
    e = estimate(get_preset("falcon-7b"), sku("Standard_NC24s_v3"))
    assert e.fits and e.tensor_parallel == 1
    assert (e.pipeline_parallel, e.data_parallel, e.node_count) == (2, 2, 1)


def test_stage_layers_keep_the_remainder_off_the_ends() -> None:
    assert stage_layers(80, 4) == [20, 20, 20, 20]
    assert stage_layers(10, 3) == [3, 4, 3]
    assert stage_layers(62, 4) == [15, 16, 16, 15]
    assert sum(stage_layers(61, 7)) == 61


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
                assert e.kv_cache_tokens >= min(e.max_model_len, 4096)
                per_node = e.tensor_parallel * e.pipeline_parallel * e.data_parallel // e.node_count
                assert per_node == s.gpu_count == e.gpus_per_node, (preset.name, s.name)
                assert e.pipeline_parallel <= preset.num_layers
            else:
                assert e.reason, (preset.name, s.name)


def test_upstream_formula_by_hand() -> None:
    # phi-4 on one A100 80 GB: 27.31 GiB x 1.02 over (0.84 x 80 - 2.3 - 2048 x 204800 B) / 1.05 per GPU
    up = compare.upstream_node_count(get_preset("phi-4"), sku("Standard_NC24ads_A100_v4"))
    assert up.nodes == 1
    # gemma-3-27b on one A10 (24 GiB): 51.1 x 1.02 / ((0.84 x 24 - 2.3 - 2048 x 507904 B) / 1.05)
    per_gpu = (0.84 * 24 - 2.3 - 2048 * 2 * 62 * 16 * 128 * 2 / GIB) / 1.05
    gpus = int(51.10 * 1.02 / per_gpu) + 1
    up = compare.upstream_node_count(get_preset("gemma-3-27b-instruct"), sku("Standard_NV36ads_A10_v5"))
    assert gpus > 1 and up.nodes == gpus  # every v0.12 preset may span nodes (one A10 per node)
    v100 = compare.upstream_node_count(get_preset("phi-4"), sku("Standard_NC24s_v3"))
    assert v100.nodes is None and "dropped" in v100.reason
    # v0.12's webhook knows no falcon preset name (not in its LegacyBuiltinToCatalog map)
    falcon = compare.upstream_node_count(get_preset("falcon-7b"), sku("Standard_NC24ads_A100_v4"))
    assert falcon.nodes is None and falcon.reason == "not a v0.12 preset name"


def test_estimator_doc_is_fresh() -> None:
    stale = compare.stale_files(ROOT / "docs")
    assert not stale, f"run `python -m kaito.presets.compare`: {stale} out of date"
    text = (ROOT / "docs" / compare.DOC_NAME).read_text()
    for preset in list_presets():
        assert f"## {preset.name}\n" in text
    assert "Standard_NC6s_v3" in text and "p5en.48xlarge" in text


def test_tuning_memory() -> None:
    ok, _ = tuning_fits(get_preset("phi-3-mini-4k-instruct"), sku("Standard_NC6s_v3"), "qlora")
    assert ok
    ok, reason = tuning_fits(get_preset("phi-4"), sku("Standard_NC6s_v3"), "lora")
    assert not ok and "per GPU" in reason


@pytest.mark.parametrize("preset", ["phi-3-mini-4k-instruct", "llama-3.3-70b-instruct", "deepseek-v3-0324"])
def test_explicit_node_count_above_the_minimum_still_fits(preset: str) -> None:
    p = get_preset(preset)
    plans = rank_skus(p)
    best = plans[0]
    more = estimate(p, sku(best.instance_type), node_count=best.node_count + 1)
    assert more.fits and more.node_count == best.node_count + 1 and more.pipeline_parallel >= 2
