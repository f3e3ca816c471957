"""``kaito validate -f FILE...``: the admission rules, offline, like a linter.

Exit status 1 when any Workspace is rejected (or a file cannot be read), 0 otherwise.

Without a cluster, the one rule that reads the API (the ConfigMap named by ``inference.config``)
is run against the ConfigMaps among the files given, and otherwise reported as skipped. An
``org/model`` preset is looked up on the Hugging Face Hub (``$HF_ENDPOINT``) as the webhook does,
with the token of the ``modelAccessSecret`` Secret among the files or else ``$HF_TOKEN``; ``--offline``
skips that and only warns. Files
are refused cleanly, with exit 1, when they are not UTF-8, hold no document, or hold an object
the apiserver would not store (see :func:`size_problem`).
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from kaito.api.hub import hub_preset_of, resolve_answer, token_from_secret
from kaito.api.validation import HubModels, ValidationOptions
from kaito.api.workspace.validation import validate_workspace
from kaito.cli.output import Format, dump
from kaito.operator.featuregates import parse_feature_gates

#: kube-apiserver refuses request bodies over 3 MiB (its maxRequestBodyBytes).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
#: etcd's default --max-request-bytes: the largest object the apiserver can store.
MAX_OBJECT_BYTES = 1536 * 1024
#: The apiserver's limit on all of an object's annotations together.
MAX_ANNOTATION_BYTES = 256 * 1024
#: Files larger than this are not parsed at all (many objects of at most 3 MiB each).
MAX_FILE_BYTES = 64 * 1024 * 1024


class InputError(ValueError):
    """A file that cannot be read as YAML documents; the message is the whole explanation."""


def size_problem(doc: Any) -> str | None:
    """Why the apiserver would refuse to store ``doc`` for its size, or None."""
    size = len(json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8"))
    if size > MAX_REQUEST_BYTES:
        return (
            f"the object is {size} bytes as JSON; the apiserver refuses requests over 3 MiB "
            f"({MAX_REQUEST_BYTES} bytes)"
        )
    if size > MAX_OBJECT_BYTES:
        return (
            f"the object is {size} bytes as JSON; etcd stores at most 1.5 MiB ({MAX_OBJECT_BYTES} bytes) "
            "per object, so the apiserver would refuse it"
        )
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(annotations, dict):
        total = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
        if total > MAX_ANNOTATION_BYTES:
            return (
                f"metadata.annotations hold {total} bytes; the apiserver allows at most 256 KiB "
                f"({MAX_ANNOTATION_BYTES} bytes) in all"
            )
    return None


def _read(path: Path) -> tuple[str, str]:
    if str(path) == "-":
        label, raw = "<stdin>", sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        label = str(path)
        if path.is_dir():
            raise InputError("is a directory; give the YAML files in it")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not parsed")
        raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not parsed")
    try:
        # kubectl reads UTF-16 with a byte-order mark too (PowerShell's '>' writes it).
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); Kubernetes "
            "manifests are UTF-8: re-save it as UTF-8 (e.g. iconv -t UTF-8)"
        ) from None
    if "\x00" in text:
        raise InputError("contains NUL bytes; it is not a YAML text file")
    return label, text


def _documents(path: Path) -> list[tuple[str, Any]]:
    label, text = _read(path)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"is not valid YAML: {exc}") from None
    if not docs:
        raise InputError("is empty (no YAML document in it); give a file with a Workspace")
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
    cloud: str = typer.Option("azure", help="cloud whose SKU table applies: azure, aws, arc or any"),
    auto_provisioning: bool = typer.Option(
        True, "--auto-provisioning/--no-auto-provisioning", help="kaito provisions the GPU nodes"
    ),
    refuse_privileged_pods: bool = typer.Option(
        True,
        "--refuse-privileged-pods/--allow-privileged-pods",
        help="the operator's Workspace pod policy (as kaito controller's flag of the same name)",
    ),
    feature_gates: str = typer.Option(
        "",
        "--feature-gates",
        help="the operator's gates, as kaito controller takes them (enableMIG=true,"
        "enableAccelerator=true admit resource.partition)",
    ),
    strict: bool = typer.Option(False, help="treat warnings as rejections"),
    offline: bool = typer.Option(
        False, "--offline", help="do not look org/model presets up on the Hugging Face Hub ($HF_ENDPOINT)"
    ),
    output: Format = typer.Option(
        Format.table, "--output", "-o", help="table/wide (lines for people), json or yaml (one document)"
    ),
) -> None:
    """Check Workspace manifests against kaito's admission rules without a cluster."""
    machine = output in (Format.json, Format.yaml)
    # In json/yaml mode the human lines go to stderr so stdout is exactly one document.
    console = Console(highlight=False, soft_wrap=True, stderr=machine, quiet=machine)
    items: list[dict[str, Any]] = []
    paths = [*(filename or []), *(files or [])]
    if not paths:
        console.print("[red]error:[/] give at least one file with -f FILE")
        raise typer.Exit(2)
    try:
        gates = parse_feature_gates(feature_gates)
    except ValueError as exc:
        console.print(f"[red]error: --feature-gates: {escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    opts = ValidationOptions(
        cloud=None if cloud == "any" else cloud,
        auto_provisioning=auto_provisioning,
        refuse_privileged_pods=refuse_privileged_pods,
        mig=gates.mig,
        accelerator=gates.accelerator,
    )
    rejected = 0
    checked = 0
    loaded: list[tuple[str, Any]] = []
    for path in paths:
        try:
            loaded.extend(_documents(path))
        except (OSError, InputError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            console.print(f"[red]{escape(str(path))}: cannot read: {escape(reason)}[/]")
            items.append(_item(str(path), None, None, "unreadable", [f"cannot read: {reason}"], []))
            rejected += 1
    config_maps = [doc for _, doc in loaded if isinstance(doc, dict) and doc.get("kind") == "ConfigMap"]
    secrets = [doc for _, doc in loaded if isinstance(doc, dict) and doc.get("kind") == "Secret"]
    for label, doc in loaded:
        name = _name(doc)
        where = escape(f"{label} ({name})" if name is not None else label)
        too_big = size_problem(doc)
        if too_big is not None:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            console.print(f"[red]{where}: rejected[/]\n  {escape(too_big)}")
            items.append(_item(label, kind, name, "rejected", [too_big], []))
            rejected += 1
            continue
        if isinstance(doc, dict) and doc.get("kind") not in (None, "Workspace"):
            console.print(f"[dim]{escape(label)}: skipped {escape(str(doc.get('kind')))}[/]")
            items.append(_item(label, doc.get("kind"), name, "skipped", [], []))
            continue
        checked += 1
        result = validate_workspace(
            doc,
            options=opts,
            config_maps=_config_maps_for(doc, config_maps),
            hub_models=None if offline else _hub_models_for(doc, secrets),
        )
        for warning in result.warnings:
            console.print(f"[yellow]{where}: warning: {escape(warning)}[/]")
        for skipped in result.skipped:
            console.print(f"[cyan]{where}: skipped check: {escape(skipped)}[/]")
        errs = [str(e) for e in result.errors]
        if result.ok and not (strict and result.warnings):
            console.print(f"[green]{where}: valid[/]")
            items.append(_item(label, "Workspace", name, "valid", errs, result.warnings, result.skipped))
            continue
        rejected += 1
        items.append(_item(label, "Workspace", name, "rejected", errs, result.warnings, result.skipped))
        console.print(f"[red]{where}: rejected[/]")
        for err in result.errors:
            console.print(f"  {escape(str(err))}")
    console.print(f"{checked} checked, {rejected} rejected")
    if machine:
        dump({"kind": "ValidationResult", "checked": checked, "rejected": rejected, "items": items}, output)
    if rejected:
        raise typer.Exit(1)


def _hub_models_for(ws: Any, secrets: list[dict[str, Any]]) -> HubModels | None:
    """The Hub's answer for the Workspace's ``org/model`` preset, with the token of the Secret it
    names when that Secret is among the files (``data`` or ``stringData``), else ``$HF_TOKEN``."""
    found = hub_preset_of(ws)
    if found is None:
        return None
    name, secret = found
    token: str | None = None
    if secret is not None:
        token = os.environ.get("HF_TOKEN") or None
        for doc in secrets:
            if (doc.get("metadata") or {}).get("name") == secret:
                string_data = doc.get("stringData") or {}
                given = string_data.get("HF_TOKEN") if isinstance(string_data, dict) else None
                token = given if isinstance(given, str) and given else token_from_secret(doc)
    return {name: resolve_answer(name, token)}


def _config_maps_for(ws: Any, config_maps: list[dict[str, Any]]) -> dict[str, Any]:
    """The given ConfigMaps this Workspace could name: same namespace, or either has none."""
    meta = ws.get("metadata") if isinstance(ws, dict) else None
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    out: dict[str, Any] = {}
    for cm in config_maps:
        cm_meta = cm.get("metadata") or {}
        cm_ns = cm_meta.get("namespace") if isinstance(cm_meta, dict) else None
        name = cm_meta.get("name") if isinstance(cm_meta, dict) else None
        if isinstance(name, str) and (ns is None or cm_ns is None or ns == cm_ns):
            out[name] = cm
    return out


def _name(doc: Any) -> str | None:
    meta = doc.get("metadata") if isinstance(doc, dict) else None  # any shape: the input is unchecked
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def _item(
    source: str,
    kind: Any,
    name: str | None,
    result: str,
    errors: list[str],
    warnings: list[str],
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """One entry of ``-o json|yaml``: the same keys for every document, whatever happened to it."""
    return {
        "source": source,
        "kind": kind if isinstance(kind, str) else None,
        "name": name,
        "result": result,
        "errors": errors,
        "warnings": list(warnings),
        "skipped": list(skipped or []),
    }
