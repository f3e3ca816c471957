"""``kaito presets list|skus``: the model catalog and the GPU SKU tables."""

from __future__ import annotations

from typing import Any

import typer

from kaito.cli.output import Column, Format, dump, print_table
from kaito.presets import GPUSku, ModelPreset, catalog_version, list_presets, list_skus
from kaito.presets.hub import hub_catalog
from kaito.presets.skus import load_skus

app = typer.Typer(help="Model presets and GPU SKUs kaito knows.", no_args_is_help=True)

OUTPUT_HELP = "table (default, fits the terminal), wide (every column), json or yaml"

PRESET_COLUMNS = [
    Column("NAME"),
    Column("PARAMS", 3),
    Column("WEIGHTS", 2),
    Column("CONTEXT", 1),
    Column("GATED", 4),
    Column("TUNING", 5),
    Column("KV/TOKEN", wide=True),
    Column("RUNTIMES", wide=True),
    Column("PARSERS", wide=True),
    Column("HF MODEL", wide=True),
    Column("REVISION", wide=True),
]

#: upstream's catalog models kaito sizes from the Hub: a table of their own, after the presets
HUB_COLUMNS = [
    Column("HUB MODEL"),
    Column("PARAMS", 3),
    Column("WEIGHTS", 2),
    Column("CONTEXT", 1),
    Column("ARCHITECTURE", 4),
    Column("KV/TOKEN", wide=True),
    Column("LICENSE", wide=True),
    Column("REVISION", wide=True),
]

SKU_COLUMNS = [
    Column("INSTANCE TYPE"),
    Column("CLOUD", 5),
    Column("GPU", 2),
    Column("GPUS", 1),
    Column("GPU MEM", 1),
    Column("$/HOUR", 4),
    Column("RUNTIME", 3),
    Column("CC", wide=True),
    Column("BF16", wide=True),
    Column("NVME", wide=True),
    Column("UPSTREAM", wide=True),
]


#: ``source`` of a preset kaito pins (models.yaml) and of one from upstream's model catalog that a
#: Workspace names by repo id and kaito sizes from the Hub (hub_catalog.yaml, no pinned revision).
SOURCE_CATALOG = "catalog"
SOURCE_HUB = "hub"


def preset_record(p: ModelPreset, source: str = SOURCE_CATALOG) -> dict[str, Any]:
    """The machine-readable form of a preset: its catalog fields plus derived facts."""
    data = p.model_dump(mode="json")
    data["gated"] = p.gated
    data["kv_bytes_per_token"] = p.kv_bytes_per_token()
    data["source"] = source
    return data


def sku_record(s: GPUSku) -> dict[str, Any]:
    data = s.model_dump(mode="json", by_alias=False)
    data.pop("upstream_status", None)
    data.update(
        supported=s.supported,
        unsupported_reason=s.unsupported_reason or None,
        upstream=s.upstream,
        upstream_note=s.upstream_note or None,
    )
    return data


@app.command("list")
def list_cmd(
    all_: bool = typer.Option(False, "--all", help="include deprecated presets"),
    hub: bool = typer.Option(
        True, "--hub/--no-hub", help="also list upstream's catalog models, sized from the Hub (org/model)"
    ),
    output: Format = typer.Option(Format.table, "--output", "-o", help=OUTPUT_HELP),
) -> None:
    """Model presets: size, context, gating; -o wide adds KV cache, runtimes, parsers, source.

    The second table (HUB MODEL; ``source: hub`` in json/yaml) is upstream Kaito's model catalog:
    name them by repo id; kaito reads their config from the Hugging Face Hub at admission (no
    pinned revision), so the figures there are upstream's and gating is not known until then."""
    presets = list_presets(include_deprecated=all_)
    listed = [(p, SOURCE_CATALOG) for p in presets]
    if hub:
        listed += [(e.preset, SOURCE_HUB) for e in hub_catalog()]  # -o json/yaml: one list
    if output in (Format.json, Format.yaml):
        dump(
            {
                "kind": "PresetList",
                "catalogVersion": catalog_version(),
                "items": [preset_record(p, source) for p, source in listed],
            },
            output,
        )
        return
    rows = []
    for p in presets:
        parsers = ",".join(x for x in (p.tool_parser, p.reasoning_parser) if x) or "-"
        rows.append(
            [
                f"{p.name} (deprecated)" if p.deprecated else p.name,
                f"{p.params_b:g}B",
                f"{p.weights_gb:g}GB",
                f"{p.context_length}",
                "yes" if p.gated else "no",
                ",".join(p.tuning) or "-",
                f"{p.kv_bytes_per_token() // 1024}KiB",
                ",".join(p.runtimes),
                parsers,
                p.hf_repo,
                p.revision[:12],
            ]
        )
    print_table(PRESET_COLUMNS, rows, output)
    if hub:
        # figures are upstream's; the Workspace's model is read from the Hub (no pinned revision)
        hub_rows = [
            [
                e.preset.name,
                f"~{e.preset.params_b:g}B",
                f"{e.preset.weights_gb:g}GB",
                f"{e.preset.context_length}",
                e.preset.architecture,
                f"{e.preset.kv_bytes_per_token() // 1024}KiB",
                e.license or "-",
                "(unpinned)",
            ]
            for e in hub_catalog()
        ]
        print()
        print_table(HUB_COLUMNS, hub_rows, output)


@app.command("skus")
def skus_cmd(
    cloud: str = typer.Option(None, help="azure, aws or arc; all clouds when omitted"),
    output: Format = typer.Option(Format.table, "--output", "-o", help=OUTPUT_HELP),
) -> None:
    """GPU instance types: GPUs, memory, price, runtime support; -o wide adds CC, bf16, NVMe, upstream."""
    skus = list_skus(cloud)
    if output in (Format.json, Format.yaml):
        dump(
            {
                "kind": "SkuList",
                "tableVersion": load_skus().table_version,
                "items": [sku_record(s) for s in skus],
            },
            output,
        )
        return
    rows = [
        [
            s.name,
            s.cloud,
            s.gpu_model,
            str(s.gpu_count),
            f"{s.gpu_memory_gib:g}GiB",
            f"{s.price_per_hour:.2f}" if s.price_per_hour is not None else "-",
            "vllm" if s.supported else "unsupported",
            f"{s.compute_capability:.1f}" if s.compute_capability else "-",
            "yes" if s.bf16 else "no",
            f"{s.nvme_gb}GB" if s.nvme_gb else "-",
            s.upstream,
        ]
        for s in skus
    ]
    print_table(SKU_COLUMNS, rows, output)
