"""``kaito estimate``: nodes, parallelism and KV-cache capacity for a preset on a GPU SKU."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from kaito.api.hub import resolve_hub_model
from kaito.cli.output import Column, Format, dump, print_table
from kaito.presets import (
    Estimate,
    PresetError,
    estimate,
    find_preset,
    get_sku,
    list_skus,
    rank_skus,
    resolve_preset,
)
from kaito.presets.estimator import MIN_CONTEXT
from kaito.presets.hub import parse_model_ref

RANK_COLUMNS = [
    Column("INSTANCE TYPE"),
    Column("NODES"),
    Column("TP", 3),
    Column("PP", 3),
    Column("DP", 3),
    Column("MAX LEN", 1),
    Column("SEQS", 4),
    Column("$/HOUR", 2),
    Column("DTYPE", wide=True),
    Column("KV TOKENS", wide=True),
    Column("UPSTREAM", wide=True),
    Column("REASON", wide=True),
]


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def record(e: Estimate) -> dict[str, Any]:
    return {"kind": "Estimate", **e.model_dump(mode="json")}


def describe(e: Estimate, *, wide: bool) -> str:
    """``kubectl describe``-style lines for one plan."""
    rows: list[tuple[str, str]] = [
        ("Preset", e.preset),
        ("Instance type", e.instance_type),
        ("Fits", "yes" if e.fits else "no"),
    ]
    if e.reason:
        rows.append(("Reason", e.reason))
    if e.upstream_note:
        rows.append(("Upstream", e.upstream_note))
    rows += [
        ("Nodes", f"{e.node_count} (minimum {e.required_nodes if e.required_nodes else '-'})"),
        ("GPUs per node", str(e.gpus_per_node)),
        ("Tensor parallel", str(e.tensor_parallel)),
        ("Pipeline parallel", str(e.pipeline_parallel)),
        ("Data parallel", str(e.data_parallel)),
    ]
    if e.distributed_backend:
        rows.append(("Cross-node backend", f"vLLM multi-node ({e.distributed_backend})"))
    rows += [
        ("Dtype", e.dtype),
        ("Weights", _gib(e.weights_bytes)),
        ("KV cache", f"{_gib(e.kv_cache_bytes)} ({e.kv_cache_tokens} tokens)"),
        ("Max model len", str(e.max_model_len)),
        ("Concurrent full-length seqs", str(e.max_concurrent_seqs)),
        ("GPU memory utilization", f"{e.gpu_memory_utilization:.2f}"),
        ("$/hour", f"{e.hourly_cost:.2f}" if e.hourly_cost is not None else "-"),
    ]
    if e.per_gpu is not None:
        g = e.per_gpu
        rows.append(
            (
                "Per GPU (tightest)",
                f"{_gib(g.budget)} usable = weights {_gib(g.weights)} + runtime {_gib(g.runtime)} + "
                f"activations {_gib(g.activations)} + KV cache {_gib(max(g.kv_cache, 0))}",
            )
        )
    if wide and e.rejections:
        rows += [("Rejected layout", r) for r in e.rejections]
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k + ':':<{width}}{v}" for k, v in rows)


def _row(e: Estimate) -> list[str]:
    ok = e.fits
    return [
        e.instance_type,
        str(e.node_count) if ok else "-",
        str(e.tensor_parallel) if ok else "-",
        str(e.pipeline_parallel) if ok else "-",
        str(e.data_parallel) if ok else "-",
        str(e.max_model_len) if ok else "-",
        str(e.max_concurrent_seqs) if ok else "-",
        f"{e.hourly_cost:.2f}" if ok and e.hourly_cost is not None else "-",
        e.dtype,
        str(e.kv_cache_tokens) if ok else "-",
        "dropped" if "no longer supports" in e.upstream_note else ("absent" if e.upstream_note else "listed"),
        e.reason or "-",
    ]


def estimate_cmd(
    preset: str = typer.Option(..., "--preset", "-p", help="preset name or Hugging Face org/model id"),
    instance_type: str = typer.Option(None, "--instance-type", "-t", help="GPU SKU; rank all when omitted"),
    count: int = typer.Option(None, "--count", "-n", min=1, help="plan exactly this many nodes"),
    cloud: str = typer.Option(None, help="limit the ranking to azure, aws or arc"),
    params: str = typer.Option(
        None,
        help="JSON architecture numbers for an org/model preset (default: read from the Hugging Face Hub)",
    ),
    all_: bool = typer.Option(False, "--all", help="ranking: also list the SKUs that do not fit, and why"),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, wide, json or yaml"),
) -> None:
    """Plan a preset on one GPU SKU, or rank every SKU it fits on (one-node plans first, then cost)."""
    try:
        if params is None and find_preset(preset) is None and parse_model_ref(preset) is not None:
            # any Hugging Face model: sized from its config.json on $HF_ENDPOINT, token $HF_TOKEN
            model = resolve_hub_model(preset, os.environ.get("HF_TOKEN") or None)
        else:
            model = resolve_preset(preset, json.loads(params) if params else None)
    except (PresetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    machine = output in (Format.json, Format.yaml)
    if instance_type is None:
        plans = rank_skus(model, cloud)
        rejected = [e for e in (estimate(model, s) for s in list_skus(cloud)) if not e.fits] if all_ else []
        if machine:
            dump(
                {
                    "kind": "EstimateList",
                    "preset": model.name,
                    "items": [record(e) for e in plans + rejected],
                },
                output,
            )
        elif plans or rejected:
            print_table(
                RANK_COLUMNS if all_ or output is Format.wide else RANK_COLUMNS[:8],
                [_row(e) for e in plans + rejected],
                Format.wide if all_ else output,
            )
        if not plans:
            print(f"error: {model.name} fits on no known SKU (--all shows why)", file=sys.stderr)
            raise typer.Exit(1)
        if not machine and not all_:
            print(
                f"\n{len(plans)} SKUs fit {model.name}, one-node plans first, cheapest first (each holds "
                f"min(context, {MIN_CONTEXT}) tokens of KV cache); --all lists the others with the reason"
            )
        return
    sku = get_sku(instance_type)
    if sku is None:
        print(f"error: unknown instance type {instance_type!r} (kaito presets skus)", file=sys.stderr)
        raise typer.Exit(1)
    plan = estimate(model, sku, count)
    if machine:
        dump(record(plan), output)
    else:
        print(describe(plan, wide=output is Format.wide))
    if not plan.fits:
        raise typer.Exit(1)
