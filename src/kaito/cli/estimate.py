"""``kaito estimate``: nodes, parallelism and KV-cache capacity for a preset on a GPU SKU."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from kaito.presets import Estimate, PresetError, estimate, get_sku, rank_skus, resolve_preset


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _one(e: Estimate) -> Table:
    table = Table(title=f"{e.preset} on {e.instance_type}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("fits", "yes" if e.fits else f"no: {e.reason}"),
        ("nodes", f"{e.node_count} (minimum {e.required_nodes if e.required_nodes else '-'})"),
        ("GPUs per node used", str(e.gpus_per_node)),
        ("tensor parallel", str(e.tensor_parallel)),
        ("pipeline parallel", str(e.pipeline_parallel)),
        ("dtype", e.dtype),
        ("weights", _gib(e.weights_bytes)),
        ("KV cache", f"{_gib(e.kv_cache_bytes)} ({e.kv_cache_tokens} tokens)"),
        ("max model len", str(e.max_model_len)),
        ("max concurrent seqs (full length)", str(e.max_concurrent_seqs)),
        ("gpu memory utilization", f"{e.gpu_memory_utilization:.2f}"),
        ("$/hour", f"{e.hourly_cost:.2f}" if e.hourly_cost is not None else "-"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


def _ranking(plans: list[Estimate], preset: str) -> Table:
    table = Table(title=f"SKUs that fit {preset}, cheapest first")
    table.add_column("INSTANCE TYPE", no_wrap=True)
    for col in ("NODES", "TP", "PP", "DTYPE", "MAX LEN", "KV TOKENS", "SEQS", "$/HOUR"):
        table.add_column(col)
    for e in plans:
        table.add_row(
            e.instance_type,
            str(e.node_count),
            str(e.tensor_parallel),
            str(e.pipeline_parallel),
            e.dtype,
            str(e.max_model_len),
            str(e.kv_cache_tokens),
            str(e.max_concurrent_seqs),
            f"{e.hourly_cost:.2f}" if e.hourly_cost is not None else "-",
        )
    return table


def estimate_cmd(
    preset: str = typer.Option(..., "--preset", "-p", help="preset name or Hugging Face org/model id"),
    instance_type: str = typer.Option(None, "--instance-type", "-t", help="GPU SKU; rank all when omitted"),
    count: int = typer.Option(None, "--count", "-n", min=1, help="plan exactly this many nodes"),
    cloud: str = typer.Option(None, help="limit the ranking to azure or aws"),
    params: str = typer.Option(None, help="JSON architecture numbers for a custom org/model preset"),
) -> None:
    """Plan a preset on one GPU SKU, or rank every SKU it fits on by hourly cost."""
    console = Console(highlight=False, soft_wrap=True)
    try:
        model = resolve_preset(preset, json.loads(params) if params else None)
    except (PresetError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if instance_type is None:
        plans = rank_skus(model, cloud)
        if not plans:
            console.print(f"[red]{preset} fits on no known SKU[/]")
            raise typer.Exit(1)
        console.print(_ranking(plans, preset))
        return
    sku = get_sku(instance_type)
    if sku is None:
        console.print(f"[red]error:[/] unknown instance type {instance_type!r} (kaito presets skus)")
        raise typer.Exit(1)
    plan = estimate(model, sku, count)
    console.print(_one(plan))
    if not plan.fits:
        raise typer.Exit(1)
