"""Sizing a preset onto a GPU SKU: nodes, parallelism, context length and KV-cache capacity.

The model follows how vLLM spends each GPU's memory, stage by pipeline stage, because a plan that
only divides the weights evenly over all GPUs ranks ten T4s above one A100 for a 70B model and then
fails to start: the first stage also holds the input embeddings, the last the lm_head and the
sampler's logits, and every GPU pays a fixed runtime cost. Per GPU, vLLM may use
``gpu_memory_utilization`` of the memory; from that it takes:

* the stage's share of the weights: its layers (split over tensor parallel), plus the embedding
  matrix on the first stage and the lm_head on the last (a tied lm_head is a second copy as soon as
  the two sit on different stages);
* the runtime: CUDA context and library workspaces, CUDA graphs, NCCL buffers when the engine spans
  more than one GPU;
* the peak activations of vLLM's profiling forward pass (``max_num_batched_tokens`` tokens), and on
  the last stage the float32 logits of ``max_num_seqs`` sequences;
* whatever is left is KV cache, for the stage's layers only. The engine's token capacity is that of
  its tightest stage.

A plan fits when that capacity holds one sequence of ``min(context_length, MIN_CONTEXT)`` tokens;
``max_model_len`` is then the longest single sequence it holds (up to the model's context).

Placement: one node if at all possible. A model that is small for a GPU gets data parallel (one
engine per tensor-parallel group) when a smaller group still holds a full-length sequence. A plan
spans nodes only with vLLM's multi-node backend (``MULTI_NODE_BACKEND``: the multiprocessing
executor over torch.distributed, ``--nnodes/--node-rank/--master-addr/--master-port``), which kaito's
inference server starts from the pod's ``POD_INDEX``; each node then holds whole pipeline stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from kaito.presets.catalog import Dtype, ModelPreset
from kaito.presets.skus import GIB, GPUSku, list_skus

#: The memory share upstream Kaito's operator passes to vLLM, and what kaito plans and passes too.
GPU_MEMORY_UTILIZATION = 0.84
#: Upstream passes less on the 24 GiB A10/A10G, where the fixed costs weigh more.
A10_GPU_MEMORY_UTILIZATION = 0.82
#: Per-process memory outside PyTorch's allocator: CUDA context, cuBLAS/cuDNN workspaces.
CUDA_CONTEXT_BYTES = 768 << 20
#: CUDA graphs vLLM captures for decode batch sizes.
CUDA_GRAPH_BYTES = 512 << 20
#: NCCL communicators and buffers, paid when one engine spans more than one GPU.
NCCL_BYTES = 512 << 20
#: Hidden-size activation tensors alive at the peak of one forward pass (attention projections
#: and the MLP's gate/up outputs, about 3.5 x hidden each, dominate).
ACTIVATION_FACTOR = 12
#: The smallest context a deployment is worth running with.
MIN_CONTEXT = 4096
#: vLLM's KV-cache block size; capacities are whole blocks.
BLOCK_SIZE = 16
#: vLLM's default ``max_num_seqs`` for the API server on GPUs below 70 GiB (and on A100).
MAX_NUM_SEQS = 256
#: Largest node count kaito will plan for one Workspace.
MAX_NODES = 16
#: The cross-node backend kaito's inference server starts for plans that span nodes.
MULTI_NODE_BACKEND = "mp"


class MemoryBreakdown(BaseModel):
    """One GPU of the tightest pipeline stage: where its memory goes (bytes)."""

    model_config = ConfigDict(frozen=True)

    budget: int
    weights: int
    runtime: int
    activations: int
    kv_cache: int


class Estimate(BaseModel):
    """The plan for one preset on one SKU; ``fits`` False comes with ``reason``.

    ``node_count`` x ``gpus_per_node`` GPUs serve one model replica: ``tensor_parallel`` x
    ``pipeline_parallel`` per engine, ``data_parallel`` engines.
    """

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
    data_parallel: int = 1
    distributed_backend: str | None = None
    dtype: Dtype
    gpu_memory_utilization: float
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    max_model_len: int
    max_concurrent_seqs: int
    max_num_seqs: int = MAX_NUM_SEQS
    max_num_batched_tokens: int = 2048
    per_gpu: MemoryBreakdown | None = None
    hourly_cost: float | None
    upstream_note: str = ""
    rejections: tuple[str, ...] = Field(default=(), description="why other layouts were not chosen")

    def vllm_args(self) -> dict[str, object]:
        """The vLLM engine arguments this plan implies (EngineArgs field names)."""
        args: dict[str, object] = {
            "tensor_parallel_size": self.tensor_parallel,
            "pipeline_parallel_size": self.pipeline_parallel,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.data_parallel > 1:
            args["data_parallel_size"] = self.data_parallel
        if self.node_count > 1:
            args["nnodes"] = self.node_count
            args["distributed_executor_backend"] = MULTI_NODE_BACKEND
        return args


def choose_dtype(preset: ModelPreset, sku: GPUSku) -> Dtype:
    """bf16 only where the hardware has it (Ampere and later); V100 and T4 run fp16."""
    return "bfloat16" if preset.dtype == "bfloat16" and sku.bf16 else "float16"


def _tp_ok(preset: ModelPreset, tp: int) -> bool:
    heads_ok = preset.num_attention_heads % tp == 0
    kv_ok = preset.num_kv_heads % tp == 0 or tp % preset.num_kv_heads == 0
    return heads_ok and kv_ok


def tensor_parallel_size(preset: ModelPreset, gpus: int) -> int:
    """The most GPUs of a node the model's attention heads can be split across."""
    for tp in range(gpus, 0, -1):
        if _tp_ok(preset, tp):
            return tp
    return 1


def utilization_for(sku: GPUSku) -> float:
    model = sku.gpu_model.upper()
    return (
        A10_GPU_MEMORY_UTILIZATION
        if model.startswith("A10") and not model.startswith("A100")
        else (GPU_MEMORY_UTILIZATION)
    )


def per_gpu_budget(sku: GPUSku, utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    return int(sku.gpu_memory_bytes * utilization)


def engine_defaults(sku: GPUSku) -> tuple[int, int]:
    """vLLM's API-server defaults (max_num_batched_tokens, max_num_seqs) for this GPU."""
    big = sku.gpu_memory_gib >= 70 and "A100" not in sku.gpu_model.upper()
    return (8192, 1024) if big else (2048, MAX_NUM_SEQS)


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage: even split, the remainder kept off the first and last stages
    where possible because those also hold the embeddings and the lm_head."""
    base, extra = divmod(num_layers, pp)
    layers = [base] * pp
    order = [*range(pp - 2, 0, -1), 0, pp - 1] if pp > 1 else [0]
    for i in order[:extra]:
        layers[i] += 1
    return layers


@dataclass(frozen=True)
class _Layout:
    nodes: int
    tp: int
    pp: int
    dp: int


@dataclass(frozen=True)
class _Sizing:
    tokens: int  # KV capacity in tokens (whole blocks), tightest stage
    breakdown: MemoryBreakdown  # the tightest stage's GPU
    stage: int  # index of the tightest stage


def _size(preset: ModelPreset, sku: GPUSku, layout: _Layout, util: float) -> _Sizing:
    tp, pp = layout.tp, layout.pp
    embed = preset.embedding_bytes(2)
    lm_head_in_ckpt = 0 if preset.tie_word_embeddings else embed
    layer_bytes = max(preset.weights_bytes - embed - lm_head_in_ckpt, 0) / preset.num_layers
    batched, seqs = engine_defaults(sku)
    hidden = preset.hidden_size or preset.num_attention_heads * preset.head_dim
    budget = per_gpu_budget(sku, util)
    runtime = CUDA_CONTEXT_BYTES + CUDA_GRAPH_BYTES + (NCCL_BYTES if tp * pp > 1 else 0)
    activations_base = batched * hidden * 2 * ACTIVATION_FACTOR // tp
    best: _Sizing | None = None
    for i, layers in enumerate(stage_layers(preset.num_layers, pp)):
        first, last = i == 0, i == pp - 1
        weights = layers * layer_bytes + (embed if first else 0)
        if last and (not preset.tie_word_embeddings or pp > 1):
            weights += embed
        weights_gpu = int(weights / tp)
        activations = activations_base + (seqs * preset.vocab_size * 4 if last else 0)
        free = budget - weights_gpu - runtime - activations
        per_token = layers * preset.kv_bytes_per_token_per_layer_rank(tp)
        tokens = max(free, 0) // per_token // BLOCK_SIZE * BLOCK_SIZE if per_token else 0
        sizing = _Sizing(
            tokens,
            MemoryBreakdown(
                budget=budget, weights=weights_gpu, runtime=runtime, activations=activations, kv_cache=free
            ),
            i,
        )
        if best is None or sizing.tokens < best.tokens:
            best = sizing
    assert best is not None
    return best


def _valid_tps(preset: ModelPreset, gpus: int) -> list[int]:
    return [tp for tp in range(1, gpus + 1) if gpus % tp == 0 and _tp_ok(preset, tp)]


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _why_not(preset: ModelPreset, sizing: _Sizing, layout: _Layout, need: int) -> str:
    b = sizing.breakdown
    where = f"stage {sizing.stage + 1} of {layout.pp}, " if layout.pp > 1 else ""
    return (
        f"TP {layout.tp} x PP {layout.pp} on {layout.nodes} node(s): per GPU "
        f"({where}{_gib(b.budget)} usable) "
        f"weights {_gib(b.weights)} + runtime {_gib(b.runtime)} + activations {_gib(b.activations)} leave "
        f"{_gib(max(b.kv_cache, 0))} for KV cache, room for {sizing.tokens} tokens; needs {need}"
    )


def _single_node(
    preset: ModelPreset, sku: GPUSku, util: float, need: int
) -> tuple[tuple[_Layout, _Sizing] | None, list[str]]:
    """The best one-node layout: data parallel over the smallest TP group that holds a full-context
    sequence, else the layout with the most KV capacity."""
    gpus = sku.gpu_count
    fitting: list[tuple[_Layout, _Sizing]] = []
    rejected: list[str] = []
    for tp in _valid_tps(preset, gpus):
        for pp in range(1, gpus // tp + 1):
            if (gpus // tp) % pp or pp > preset.num_layers:
                continue
            layout = _Layout(1, tp, pp, gpus // (tp * pp))
            sizing = _size(preset, sku, layout, util)
            if sizing.tokens >= need:
                fitting.append((layout, sizing))
            else:
                rejected.append(_why_not(preset, sizing, layout, need))
    if not fitting:
        return None, rejected
    full = [f for f in fitting if f[1].tokens >= preset.context_length]
    if full:
        # most data-parallel engines, then tensor over pipeline parallel
        return min(full, key=lambda f: (f[0].tp * f[0].pp, f[0].pp)), rejected
    return max(fitting, key=lambda f: (f[1].tokens, -f[0].pp)), rejected


def _multi_node(preset: ModelPreset, sku: GPUSku, nodes: int, util: float) -> tuple[_Layout, _Sizing] | None:
    tp = max(_valid_tps(preset, sku.gpu_count))  # divides the node's GPUs: whole stages per node
    pp = nodes * (sku.gpu_count // tp)
    if pp > preset.num_layers:
        return None
    layout = _Layout(nodes, tp, pp, 1)
    return layout, _size(preset, sku, layout, util)


def estimate(
    preset: ModelPreset,
    sku: GPUSku,
    node_count: int | None = None,
    *,
    gpu_memory_utilization: float | None = None,
    max_nodes: int = MAX_NODES,
    multi_node: bool = True,
) -> Estimate:
    """Plan ``preset`` on ``sku``: the fewest nodes that fit, or exactly ``node_count`` nodes."""
    util = gpu_memory_utilization if gpu_memory_utilization is not None else utilization_for(sku)
    dtype = choose_dtype(preset, sku)
    need = min(preset.context_length, MIN_CONTEXT)
    kv_per_token = preset.kv_bytes_per_token(2)
    batched, seqs = engine_defaults(sku)
    rejections: list[str] = []

    chosen: tuple[_Layout, _Sizing] | None = None
    required: int | None = None
    reason = ""
    if not sku.supported:
        reason = sku.unsupported_reason
    elif sku.compute_capability < preset.min_compute_capability:
        reason = (
            f"{preset.name} needs CUDA compute capability >= {preset.min_compute_capability}, "
            f"{sku.name} has {sku.gpu_model} ({sku.compute_capability})"
        )
    else:
        single, rejections = _single_node(preset, sku, util, need)
        if single is not None:
            required = 1
        elif multi_node:
            for n in range(2, max_nodes + 1):
                plan = _multi_node(preset, sku, n, util)
                if plan is not None and plan[1].tokens >= need:
                    required = n
                    break
        wanted = node_count if node_count is not None else (required or 1)
        if wanted == 1:
            chosen = single
        elif multi_node:
            chosen = _multi_node(preset, sku, wanted, util)
        if required is None:
            limit = f"{min(max_nodes, preset.num_layers)} nodes or fewer" if multi_node else "one node"
            reason = (
                f"{preset.name} does not fit: {sku.name} cannot hold it on {limit} ("
                + (rejections[-1] if rejections else "more pipeline stages than layers")
                + ")"
            )
        elif wanted > 1 and not multi_node:
            reason = f"{wanted} nodes need a cross-node backend; this plan is limited to one node"
        elif chosen is None or chosen[1].tokens < need:
            if wanted < required:
                reason = f"{preset.name} needs {required} x {sku.name}; {wanted} give too little GPU memory"
                if chosen is not None:
                    reason += f" ({_why_not(preset, chosen[1], chosen[0], need)})"
                elif rejections:
                    reason += f" ({rejections[-1]})"
                reason += f"; use at least {required} nodes"
            else:
                reason = f"{wanted} nodes: more pipeline stages than {preset.name} has layers"
                chosen = None
    nodes = max(node_count if node_count is not None else (required or 1), 1)
    fits = not reason and chosen is not None
    layout = (
        chosen[0] if chosen is not None else _Layout(nodes, tensor_parallel_size(preset, sku.gpu_count), 1, 1)
    )
    sizing = chosen[1] if chosen is not None else None
    tokens = sizing.tokens if (fits and sizing is not None) else 0
    max_len = min(preset.context_length, tokens)
    price = sku.price_per_hour
    return Estimate(
        preset=preset.name,
        instance_type=sku.name,
        fits=fits,
        reason=reason,
        node_count=nodes,
        required_nodes=required,
        gpus_per_node=sku.gpu_count if fits else layout.tp * max(layout.pp // max(layout.nodes, 1), 1),
        tensor_parallel=layout.tp,
        pipeline_parallel=layout.pp,
        data_parallel=layout.dp,
        distributed_backend=MULTI_NODE_BACKEND if nodes > 1 else None,
        dtype=dtype,
        gpu_memory_utilization=util,
        weights_bytes=preset.weights_bytes,
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=tokens * kv_per_token,
        kv_cache_tokens=tokens,
        max_model_len=max_len,
        max_concurrent_seqs=min(seqs, tokens // max_len) if max_len > 0 else 0,
        max_num_seqs=seqs,
        max_num_batched_tokens=batched,
        per_gpu=sizing.breakdown if sizing is not None else None,
        hourly_cost=round(price * nodes, 4) if price is not None else None,
        upstream_note=sku.upstream_note,
        rejections=tuple(rejections),
    )


def rank_skus(preset: ModelPreset, cloud: str | None = None) -> list[Estimate]:
    """Every SKU the preset fits on: one-node plans first, each group cheapest per hour first
    (unpriced SKUs last). A plan over many small nodes may cost less per hour but pays for every
    pipeline hop over the network, so it never outranks a plan that fits one node."""
    plans = [e for e in (estimate(preset, s) for s in list_skus(cloud)) if e.fits]
    return sorted(
        plans,
        key=lambda e: (
            e.node_count > 1,
            e.hourly_cost is None,
            e.hourly_cost or 0.0,
            e.node_count,
            e.instance_type,
        ),
    )


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
