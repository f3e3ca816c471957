"""``kaito validate -f FILE...``: the admission rules, offline, like a linter.

Exit status 1 when any Workspace is rejected (or a file cannot be read), 0 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from kaito.api.validation import ValidationOptions, validate_workspace


def _documents(path: Path) -> list[tuple[str, Any]]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    label = "<stdin>" if str(path) == "-" else str(path)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    out: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend((f"{label}#{i}.items[{j}]", item) for j, item in enumerate(doc["items"]))
        else:
            out.append((f"{label}#{i}" if len(docs) > 1 else label, doc))
    return out


def validate(
    files: list[Path] = typer.Argument(None, help="Workspace YAML files ('-' for stdin)", show_default=False),
    filename: list[Path] = typer.Option(None, "-f", "--filename", help="Workspace YAML file (repeatable)"),
    cloud: str = typer.Option("azure", help="cloud whose SKU table applies: azure, aws or any"),
    auto_provisioning: bool = typer.Option(
        True, "--auto-provisioning/--no-auto-provisioning", help="kaito provisions the GPU nodes"
    ),
    strict: bool = typer.Option(False, help="treat warnings as rejections"),
) -> None:
    """Check Workspace manifests against kaito's admission rules without a cluster."""
    console = Console(highlight=False, soft_wrap=True)
    paths = [*(filename or []), *(files or [])]
    if not paths:
        console.print("[red]error:[/] give at least one file with -f FILE")
        raise typer.Exit(2)
    opts = ValidationOptions(cloud=None if cloud == "any" else cloud, auto_provisioning=auto_provisioning)
    rejected = 0
    checked = 0
    for path in paths:
        try:
            docs = _documents(path)
        except (OSError, yaml.YAMLError) as exc:
            console.print(f"[red]{path}: cannot read: {exc}[/]")
            rejected += 1
            continue
        for label, doc in docs:
            if isinstance(doc, dict) and doc.get("kind") not in (None, "Workspace"):
                console.print(f"[dim]{label}: skipped {doc.get('kind')}[/]")
                continue
            checked += 1
            result = validate_workspace(doc, options=opts)
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
            where = f"{label} ({name})" if isinstance(name, str) else label
            for warning in result.warnings:
                console.print(f"[yellow]{where}: warning: {warning}[/]")
            if result.ok and not (strict and result.warnings):
                console.print(f"[green]{where}: valid[/]")
                continue
            rejected += 1
            console.print(f"[red]{where}: rejected[/]")
            for err in result.errors:
                console.print(f"  {err}")
    console.print(f"{checked} checked, {rejected} rejected")
    if rejected:
        raise typer.Exit(1)
