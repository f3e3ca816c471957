"""Sizing a preset onto a GPU SKU: nodes, parallelism, context length and KV-cache capacity.

The model mirrors how vLLM spends memory: every GPU gives ``gpu_memory_utilization`` of its
memory to the engine, minus a fixed reserve for the CUDA context and activation peaks; the
weights are split evenly over all GPUs (tensor parallel inside a node, pipeline parallel across
nodes and over GPUs tensor parallel cannot use); whatever is left holds the KV cache. A preset fits
when that cache holds at least one sequence of ``min(context_length, MIN_CONTEXT)`` tokens.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from kaito.presets.catalog import Dtype, ModelPreset
from kaito.presets.skus import GIB, GPUSku, list_skus

#: vLLM's default share of each GPU's memory.
GPU_MEMORY_UTILIZATION = 0.90
#: Per-GPU reserve inside that share for the CUDA context, activations and CUDA graphs.
OVERHEAD_BYTES_PER_GPU = 1 * GIB
#: The smallest context a deployment is worth running with.
MIN_CONTEXT = 4096
#: vLLM's KV-cache block size; capacities are whole blocks.
BLOCK_SIZE = 16
#: vLLM's default ``max_num_seqs``; concurrency is never reported above it.
MAX_NUM_SEQS = 256
#: Largest node count kaito will plan for one Workspace.
MAX_NODES = 16


class Estimate(BaseModel):
    """The plan for one preset on one SKU; ``fits`` False comes with ``reason``."""

    model_config = ConfigDict(frozen=True)

    preset: str
    instance_type: str
    fits: bool
    reason: str = ""
    node_count: int
    required_nodes: int | None
    gpus_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    dtype: Dtype
    gpu_memory_utilization: float
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    max_model_len: int
    max_concurrent_seqs: int
    hourly_cost: float | None

    def vllm_args(self) -> dict[str, object]:
        """The vLLM engine arguments this plan implies (EngineArgs field names)."""
        return {
            "tensor_parallel_size": self.tensor_parallel,
            "pipeline_parallel_size": self.pipeline_parallel,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }


def choose_dtype(preset: ModelPreset, sku: GPUSku) -> Dtype:
    """bf16 only where the hardware has it (Ampere and later); V100 and T4 run fp16."""
    return "bfloat16" if preset.dtype == "bfloat16" and sku.bf16 else "float16"


def tensor_parallel_size(preset: ModelPreset, gpus: int) -> int:
    """The most GPUs of a node the model's attention heads can be split across."""
    for tp in range(gpus, 0, -1):
        heads_ok = preset.num_attention_heads % tp == 0
        kv_ok = preset.num_kv_heads % tp == 0 or tp % preset.num_kv_heads == 0
        if heads_ok and kv_ok:
            return tp
    return 1


def per_gpu_budget(sku: GPUSku, utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    return int(sku.gpu_memory_bytes * utilization) - OVERHEAD_BYTES_PER_GPU


def estimate(
    preset: ModelPreset,
    sku: GPUSku,
    node_count: int | None = None,
    *,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    max_nodes: int = MAX_NODES,
) -> Estimate:
    """Plan ``preset`` on ``sku``: the fewest nodes that fit, or exactly ``node_count`` nodes."""
    dtype = choose_dtype(preset, sku)
    tp = tensor_parallel_size(preset, sku.gpu_count)
    kv_per_token = preset.kv_bytes_per_token(2)
    budget = per_gpu_budget(sku, gpu_memory_utilization)
    min_tokens = min(preset.context_length, MIN_CONTEXT)
    need = preset.weights_bytes + min_tokens * kv_per_token
    stages_per_node = max(sku.gpu_count // tp, 1)
    per_stage = budget * tp
    required: int | None = None
    if per_stage > 0:
        stages = math.ceil(need / per_stage)
        required = math.ceil(stages / stages_per_node)
        if required > max_nodes or stages > preset.num_layers:
            required = None

    nodes = max(node_count if node_count is not None else (required or 1), 1)
    # Every GPU of every node works: tensor parallel inside a stage, the rest pipeline stages.
    pp = min(nodes * stages_per_node, preset.num_layers)
    per_node = per_stage * stages_per_node
    kv_bytes = max(per_stage * pp - preset.weights_bytes, 0)
    kv_tokens = (kv_bytes // kv_per_token) // BLOCK_SIZE * BLOCK_SIZE
    max_len = min(preset.context_length, kv_tokens)
    concurrent = min(MAX_NUM_SEQS, kv_tokens // max_len) if max_len > 0 else 0

    reason = ""
    if sku.compute_capability < preset.min_compute_capability:
        reason = (
            f"{preset.name} needs CUDA compute capability >= {preset.min_compute_capability}, "
            f"{sku.name} has {sku.gpu_model} ({sku.compute_capability})"
        )
    elif required is None:
        reason = (
            f"{preset.name} needs {_gb(need)} of GPU memory; {sku.name} cannot hold it on "
            f"{min(max_nodes, preset.num_layers)} nodes or fewer"
        )
    elif nodes < required:
        reason = (
            f"{preset.name} needs {_gb(need)} of GPU memory (weights {_gb(preset.weights_bytes)} + "
            f"{min_tokens} tokens of KV cache); {nodes} x {sku.name} give {_gb(per_node * nodes)}; "
            f"use at least {required} nodes"
        )
    fits = not reason
    price = sku.price_per_hour
    return Estimate(
        preset=preset.name,
        instance_type=sku.name,
        fits=fits,
        reason=reason,
        node_count=nodes,
        required_nodes=required,
        gpus_per_node=tp * stages_per_node,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        dtype=dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_bytes=preset.weights_bytes,
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=kv_bytes if fits else 0,
        kv_cache_tokens=kv_tokens if fits else 0,
        max_model_len=max_len if fits else 0,
        max_concurrent_seqs=concurrent if fits else 0,
        hourly_cost=round(price * nodes, 4) if price is not None else None,
    )


def rank_skus(preset: ModelPreset, cloud: str | None = None) -> list[Estimate]:
    """Every SKU the preset fits on, cheapest per hour first (unpriced SKUs last)."""
    plans = [e for e in (estimate(preset, s) for s in list_skus(cloud)) if e.fits]
    return sorted(plans, key=lambda e: (e.hourly_cost is None, e.hourly_cost or 0.0, e.instance_type))


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


#: Fine-tuning keeps the base weights resident (4-bit for QLoRA) plus adapter weights, optimizer
#: state and activations, which this reserve stands in for at kaito's default batch settings.
TUNING_RESERVE_BYTES = 6 * GIB
_TUNING_WEIGHT_FACTOR = {"lora": 1.0, "qlora": 0.3}


def tuning_memory_bytes(preset: ModelPreset, method: str) -> int:
    """GPU memory one tuning job needs (single node, data parallel over its GPUs)."""
    return int(preset.weights_bytes * _TUNING_WEIGHT_FACTOR.get(method, 1.0)) + TUNING_RESERVE_BYTES


def tuning_fits(preset: ModelPreset, sku: GPUSku, method: str) -> tuple[bool, str]:
    """Whether one GPU of ``sku`` can run a ``method`` job for ``preset`` (weights are not sharded)."""
    need = tuning_memory_bytes(preset, method)
    have = sku.gpu_memory_bytes
    if need <= have:
        return True, ""
    return False, (
        f"{method} tuning of {preset.name} needs about {_gb(need)} per GPU; "
        f"{sku.name} has {_gb(have)} per GPU"
    )
