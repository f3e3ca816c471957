"""``kaito presets list|skus``: the model catalog and the GPU SKU tables."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from kaito.presets import catalog_version, list_presets, list_skus
from kaito.presets.skus import load_skus

app = typer.Typer(help="Model presets and GPU SKUs kaito knows.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    all_: bool = typer.Option(False, "--all", help="include deprecated presets"),
) -> None:
    """Model presets: size, context, KV cache per token, runtimes and parsers."""
    table = Table(title=f"kaito presets (catalog {catalog_version()})")
    table.add_column("NAME", no_wrap=True)
    table.add_column("HF MODEL", no_wrap=True)
    for col in ("PARAMS", "WEIGHTS", "CONTEXT", "KV/TOKEN", "RUNTIMES", "PARSERS", "TUNING", "TOKEN"):
        table.add_column(col)
    for p in list_presets(include_deprecated=all_):
        parsers = ", ".join(x for x in (p.tool_parser, p.reasoning_parser) if x) or "-"
        name = f"{p.name} (deprecated)" if p.deprecated else p.name
        table.add_row(
            name,
            f"{p.hf_repo}@{p.revision}",
            f"{p.params_b:g}B",
            f"{p.weights_gb:g} GB",
            f"{p.context_length}",
            f"{p.kv_bytes_per_token() // 1024} KiB",
            ", ".join(p.runtimes),
            parsers,
            ", ".join(p.tuning) or "-",
            "yes" if p.requires_token else "no",
        )
    Console().print(table)


@app.command("skus")
def skus_cmd(cloud: str = typer.Option(None, help="azure or aws; all clouds when omitted")) -> None:
    """GPU instance types: GPUs, memory, compute capability, bf16, NVMe and list price."""
    table = Table(title=f"GPU SKUs (table {load_skus().table_version})")
    table.add_column("CLOUD")
    table.add_column("INSTANCE TYPE", no_wrap=True)
    for col in ("GPU", "GPUS", "GPU MEM", "CC", "BF16", "NVME", "$/HOUR"):
        table.add_column(col)
    for s in list_skus(cloud):
        table.add_row(
            s.cloud,
            s.name,
            s.gpu_model,
            str(s.gpu_count),
            f"{s.gpu_memory_gib:g} GiB",
            f"{s.compute_capability:.1f}",
            "yes" if s.bf16 else "no",
            f"{s.nvme_gb} GB" if s.nvme_gb else "-",
            f"{s.price_per_hour:.2f}" if s.price_per_hour is not None else "-",
        )
    Console().print(table)
