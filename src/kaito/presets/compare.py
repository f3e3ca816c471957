"""kaito's node estimate next to upstream Kaito's, for every preset x SKU pair.

Upstream v0.12's node estimator (pkg/workspace/estimator/nodesestimator) is
re-expressed here from its arithmetic so that users moving over can see where the two
disagree and why. ``python -m kaito.presets.compare [DOCS_DIR]`` writes docs/estimator-vs-upstream.md
and its picture docs/pictures/estimator-vs-upstream.svg; a unit test fails when either committed
file is stale, as it does for the CRDs.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from kaito.presets.catalog import ModelPreset, catalog_version, list_presets
from kaito.presets.estimator import MIN_CONTEXT, Estimate, estimate
from kaito.presets.skus import GIB, GPUSku, list_skus, load_skus

#: Upstream's constants: vLLM memory share, weights overhead factor, fixed per-GPU overhead, the
#: runtime overhead that grows with each GPU's share of the weights (activations, CUDA graphs),
#: and the context length whose KV cache it reserves (its default when the ConfigMap sets none).
UPSTREAM_UTILIZATION = 0.84
UPSTREAM_WEIGHTS_FACTOR = 1.02
UPSTREAM_BASE_OVERHEAD_GIB = 2.3
UPSTREAM_WEIGHT_OVERHEAD = 0.05
UPSTREAM_MAX_MODEL_LEN = 2048
#: The preset names upstream v0.12 accepts (pkg/utils/plugin LegacyBuiltinToCatalog; any other
#: name without a "/" is refused as "Unsupported inference preset name", the falcon presets that
#: its supported_models.yaml still lists included).
UPSTREAM_PRESETS = frozenset(
    {
        "phi-4", "phi-4-mini-instruct", "llama-3.1-8b-instruct", "llama-3.3-70b-instruct",
        "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b", "deepseek-r1-0528",
        "deepseek-v3-0324",
        "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
        "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "qwen2.5-coder-7b-instruct",
        "qwen2.5-coder-32b-instruct", "gpt-oss-20b", "gpt-oss-120b", "gemma-3-4b-instruct",
        "gemma-3-27b-instruct", "mistral-7b", "mistral-7b-instruct", "ministral-3-3b-instruct",
        "ministral-3-8b-instruct", "ministral-3-14b-instruct", "mistral-large-3-675b-instruct",
    }
)  # fmt: skip
DOC_NAME = "estimator-vs-upstream.md"
PICTURE_NAME = "pictures/estimator-vs-upstream.svg"

#: Cell colours of the preset x SKU picture, one per note (a reader spots where the two disagree).
PALETTE: dict[str, str] = {
    "same": "#a9d18e",
    "fewer": "#9dc3e6",
    "more": "#f4b183",
    "size": "#d5a6bd",
    "cc": "#d9d9d9",
    "name": "#c9a0dc",
    "dropped": "#bfbfbf",
    "absent": "#e7e6e6",
    "vendor": "#f2f2f2",
}


@dataclass(frozen=True)
class UpstreamPlan:
    nodes: int | None
    reason: str = ""


def upstream_node_count(preset: ModelPreset, sku: GPUSku) -> UpstreamPlan:
    """Upstream's node count: weights (its file size) x 1.02 over GPUs of which each offers
    0.84 of its memory minus 2.3 GiB minus its share of 2048 tokens of KV cache, divided by 1.05
    for the overhead that grows with the weights. Every v0.12 preset may span nodes (its vLLM
    models all report SupportDistributedInference), so a plan of any size is upstream's answer."""
    if preset.name not in UPSTREAM_PRESETS:
        return UpstreamPlan(None, "not a v0.12 preset name")
    if sku.upstream != "listed":
        return UpstreamPlan(None, f"SKU {sku.upstream} upstream")
    file_gib = preset.upstream_file_size_gib or preset.weights_bytes / GIB
    required = file_gib * GIB * UPSTREAM_WEIGHTS_FACTOR
    available = sku.gpu_memory_gib * GIB * UPSTREAM_UTILIZATION
    kv = UPSTREAM_MAX_MODEL_LEN * preset.kv_bytes_per_token() / sku.gpu_count
    overhead = UPSTREAM_BASE_OVERHEAD_GIB * GIB + kv
    if available <= overhead:
        return UpstreamPlan(None, "GPU smaller than the fixed overhead")
    gpus = int(required / ((available - overhead) / (1 + UPSTREAM_WEIGHT_OVERHEAD))) + 1
    return UpstreamPlan(math.ceil(gpus / sku.gpu_count))


def _ours(e: Estimate) -> str:
    if not e.fits:
        return "—"
    shape = f"TP{e.tensor_parallel}"
    if e.pipeline_parallel > 1:
        shape += f" PP{e.pipeline_parallel}"
    if e.data_parallel > 1:
        shape += f" DP{e.data_parallel}"
    return f"{e.node_count} ({shape})"


def explain(preset: ModelPreset, sku: GPUSku, ours: Estimate, up: UpstreamPlan) -> str:
    """Why the two counts differ, as a note key (see NOTES)."""
    if not sku.supported:
        return "vendor"
    if ours.fits and up.nodes == ours.node_count:
        return ""
    if preset.name not in UPSTREAM_PRESETS:
        return "name"
    if sku.upstream == "dropped":
        return "dropped"
    if sku.upstream == "absent":
        return "absent"
    if not ours.fits and sku.compute_capability < preset.min_compute_capability:
        return "cc"
    file_gib = preset.upstream_file_size_gib or 0
    if file_gib and abs(file_gib * GIB - preset.weights_bytes) / preset.weights_bytes > 0.25:
        return "size"
    if ours.fits and up.nodes is not None and ours.node_count < up.nodes:
        return "fewer"
    return "more"


NOTES = {
    "vendor": "Not an NVIDIA GPU. kaito refuses it: the vLLM runtime is a CUDA build. Upstream's SKU table "
    "lists it and its estimator sizes it from memory alone.",
    "dropped": "Upstream v0.12 dropped this SKU (compute capability < 8.0); kaito keeps V100/T4 and "
    "runs them in float16.",
    "absent": "Upstream does not list this SKU; kaito sizes it with the same rules as any other.",
    "cc": "The preset needs compute capability >= 8.0 (bfloat16-only model, or fp8/MXFP4 kernels); "
    "kaito refuses the SKU, upstream only compares memory.",
    "name": "Upstream v0.12 refuses this preset name: its webhook accepts only the names in its "
    "LegacyBuiltinToCatalog map and `org/model` ids, and the falcon presets its supported_models.yaml still "
    "lists are not in that map. kaito keeps them.",
    "size": "Upstream sizes from the repository's file size, which counts the checkpoint twice "
    "(gpt-oss ships HF shards and original/); kaito sizes one copy.",
    "more": "kaito needs more nodes: it charges each GPU its runtime (CUDA context, graphs, NCCL), the "
    "activation peak of vLLM's profiling pass and the sampler's logits, puts the embeddings on the first "
    f"and the lm_head on the last pipeline stage, and wants KV cache for min(context, {MIN_CONTEXT}) "
    f"tokens on the tightest stage; upstream spreads weights x {UPSTREAM_WEIGHTS_FACTOR} evenly and "
    f"reserves {UPSTREAM_BASE_OVERHEAD_GIB} GiB plus {UPSTREAM_MAX_MODEL_LEN} tokens of KV cache per GPU, "
    f"plus {UPSTREAM_WEIGHT_OVERHEAD:.0%} of the GPU's share of the weights.",
    "fewer": "kaito needs fewer nodes: upstream always adds one GPU to its quotient (int(x) + 1) and "
    f"reserves {UPSTREAM_BASE_OVERHEAD_GIB} GiB plus {UPSTREAM_WEIGHT_OVERHEAD:.0%} of the weight share on "
    "every GPU, which is more than kaito's runtime costs on large GPUs.",
}


def render() -> str:
    """The whole comparison document (deterministic: catalog and SKU table order)."""
    skus = list_skus()
    nvidia = [s for s in skus if s.supported]
    others = [s for s in skus if not s.supported]
    presets = list_presets()
    lines = [
        "# kaito's node estimate vs upstream Kaito's",
        "",
        "<!-- generated by `python -m kaito.presets.compare`; do not edit (a unit test checks it) -->",
        "",
        f"Catalog {catalog_version()}, SKU table {load_skus().table_version}. For every preset and every",
        "GPU SKU: the nodes kaito plans (with its layout: tensor, pipeline and data parallel) and the",
        "nodes upstream Kaito v0.12's node estimator computes, with the reason for each",
        "difference. `—` means the side refuses the pair. How kaito sizes is in",
        "[presets.md](presets.md#the-estimator); upstream's arithmetic is re-expressed in",
        "`kaito.presets.compare.upstream_node_count`: weights (its file size) x 1.02 spread over GPUs",
        f"that each offer {UPSTREAM_UTILIZATION} of their memory minus {UPSTREAM_BASE_OVERHEAD_GIB} GiB",
        f"minus their share of {UPSTREAM_MAX_MODEL_LEN} tokens of KV cache, divided by",
        f"{1 + UPSTREAM_WEIGHT_OVERHEAD} for the overhead that grows with the weights;",
        "GPUs = int(weights / per-GPU) + 1. Every v0.12 preset may span nodes.",
        "",
        "Plans that span nodes use vLLM's multi-node multiprocessing backend, which kaito's inference",
        "server starts itself (node rank from the pod's `POD_INDEX`, leader address from the headless",
        "Service); upstream starts Ray for the same purpose.",
        "",
        "## Notes",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in NOTES.items()]
    lines += [
        "",
        f"Non-NVIDIA SKUs ({len(others)}) close each table: kaito refuses every preset on them "
        "(note **vendor**).",
        "",
    ]
    counts = {"same": 0, **{k: 0 for k in NOTES}}
    body: list[str] = []
    for p in presets:
        body += [
            f"## {p.name}",
            "",
            "| SKU | GPUs | kaito | upstream | note |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s in nvidia + others:
            ours = estimate(p, s)
            up = upstream_node_count(p, s)
            key = explain(p, s, ours, up)
            counts[key or "same"] += 1
            upstream = str(up.nodes) if up.nodes is not None else f"— ({up.reason})"
            body.append(f"| {s.name} | {s.gpu_count}x {s.gpu_model} | {_ours(ours)} | {upstream} | {key} |")
        body.append("")
    total = sum(counts.values())
    lines += [
        "## Summary",
        "",
        f"{total} pairs: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ".",
        "",
    ]
    return "\n".join(lines + body).rstrip("\n") + "\n"


def render_svg() -> str:
    """The same comparison as a preset x SKU picture: one cell per pair, coloured by its note,
    with kaito's node count written in it (upstream's in brackets where it differs). The table
    runs to thousands of lines; the picture shows at a glance where the estimators disagree."""
    skus = [s for s in list_skus() if s.supported]
    presets = list_presets()
    cell_w, cell_h, left, top = 34, 16, 230, 175
    width = left + cell_w * len(skus) + 20
    legend_y = top + cell_h * len(presets) + 24
    height = legend_y + 22 * ((len(PALETTE) + 4) // 5) + 10

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="9">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" font-size="13">kaito\'s node count vs upstream Kaito v0.12 '
        f"({len(presets)} presets x {len(skus)} NVIDIA SKUs; catalog {catalog_version()})</text>",
        '<text x="10" y="34" font-size="10">each cell: kaito\'s nodes (upstream\'s in brackets when '
        "different); — refused; colour: the note in docs/estimator-vs-upstream.md</text>",
    ]
    for j, s in enumerate(skus):
        x = left + j * cell_w + cell_w / 2
        out.append(
            f'<text x="{x:.0f}" y="{top - 6}" transform="rotate(-60 {x:.0f} {top - 6})">{esc(s.name)}</text>'
        )
    for i, p in enumerate(presets):
        y = top + i * cell_h
        out.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{esc(p.name)}</text>')
        for j, s in enumerate(skus):
            ours = estimate(p, s)
            up = upstream_node_count(p, s)
            key = explain(p, s, ours, up) or "same"
            mine = str(ours.node_count) if ours.fits else "—"
            theirs = str(up.nodes) if up.nodes is not None else "—"
            label = mine if key == "same" else f"{mine}({theirs})"
            x = left + j * cell_w
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 1}" height="{cell_h - 1}" fill="{PALETTE[key]}">'
                f"<title>{esc(p.name)} on {esc(s.name)}: kaito {esc(_ours(ours))}, upstream "
                f"{esc(theirs)} ({key})</title></rect>"
            )
            mid = x + cell_w / 2 - 0.5
            out.append(f'<text x="{mid:.1f}" y="{y + 11}" text-anchor="middle">{label}</text>')
    for k, (key, colour) in enumerate(PALETTE.items()):
        x = 10 + (k % 5) * 150
        y = legend_y + (k // 5) * 22
        out.append(f'<rect x="{x}" y="{y}" width="14" height="14" fill="{colour}" stroke="#999999"/>')
        out.append(f'<text x="{x + 20}" y="{y + 11}" font-size="10">{key}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def stale_files(docs_dir: Path) -> list[str]:
    """Names of generated docs under ``docs_dir`` that differ from a fresh rendering."""
    stale = []
    for name, fresh in ((DOC_NAME, render()), (PICTURE_NAME, render_svg())):
        path = docs_dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != fresh:
            stale.append(str(path))
    return stale


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    docs = Path(args[0]) if args else Path("docs")
    for name, text in ((DOC_NAME, render()), (PICTURE_NAME, render_svg())):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text, encoding="utf-8")
        print(f"wrote {docs / name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
