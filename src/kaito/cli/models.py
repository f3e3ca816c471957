"""``kaito models push|pull``: model weights as an OCI artifact (docs/weights-images.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from kaito.contract.weights import empty_config_descriptor
from kaito.weights import DEFAULT_CONCURRENCY, RegistryClient, TransferResult, WeightsError
from kaito.weights import pull_folder as _pull
from kaito.weights import push_folder as _push
from kaito.weights.snapshot import download_snapshot, preset_of

app = typer.Typer(help="Model weights as OCI artifacts in a registry.", no_args_is_help=True)

RegistryConfig = Annotated[
    Path | None,
    typer.Option(
        "--registry-config",
        help="a dockerconfigjson file with the registry's credentials (what a pull secret holds)",
    ),
]
CaFile = Annotated[Path | None, typer.Option("--ca-file", help="the registry's CA certificate (PEM)")]
PlainHttp = Annotated[bool, typer.Option("--plain-http", help="talk HTTP, not HTTPS, to the registry")]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, help="files moved at once, one stream each")
]


def _client(
    image: str, registry_config: Path | None, ca_file: Path | None, plain_http: bool
) -> RegistryClient:
    if registry_config is not None and not registry_config.is_file():
        raise WeightsError(f"--registry-config {registry_config} does not exist")
    return RegistryClient.for_image(
        image, registry_config=registry_config, ca_file=ca_file, plain_http=plain_http
    )


def _report(verb: str, result: TransferResult) -> None:
    typer.echo(
        f"{verb} {result.image}@{result.digest}: {result.files} files, {result.moved} moved "
        f"({result.bytes_moved / 1e6:.1f} MB, {result.mb_per_s:.1f} MB/s), {result.skipped} already there"
    )


@app.command("push")
def push(
    source: Annotated[
        str, typer.Argument(help="a model folder, or a preset (its pinned revision is downloaded)")
    ],
    image: Annotated[str, typer.Argument(help="where to push: host[:port]/repository:tag")],
    registry_config: RegistryConfig = None,
    ca_file: CaFile = None,
    plain_http: PlainHttp = False,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    model: Annotated[
        str | None, typer.Option("--model", help="the model's name in the manifest (default: the preset's)")
    ] = None,
) -> None:
    """Push a Hugging Face model folder as a weights artifact: one layer per file."""
    try:
        client = _client(image, registry_config, ca_file, plain_http)
        folder = Path(source)
        if folder.is_dir():
            _report("pushed", _push(client, folder, model=model, concurrency=concurrency))
            return
        preset = preset_of(source)
        # Reach the registry (TLS, credentials) before a download of gigabytes, not after it.
        client.has_blob(str(empty_config_descriptor()["digest"]))
        with tempfile.TemporaryDirectory(prefix="kaito-snapshot-") as tmp:
            snap = download_snapshot(preset, Path(tmp), os.environ.get("HF_TOKEN"))
            result = _push(
                client, snap, model=model or preset.name, revision=preset.revision, concurrency=concurrency
            )
        _report("pushed", result)
    except WeightsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("pull")
def pull(
    image: Annotated[
        str, typer.Argument(help="the weights artifact: host[:port]/repository:tag or @sha256:...")
    ],
    dest: Annotated[Path, typer.Argument(help="the folder to write the model into")],
    registry_config: RegistryConfig = None,
    ca_file: CaFile = None,
    plain_http: PlainHttp = False,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
) -> None:
    """Pull a weights artifact into a folder; files already there with the same digest are kept."""
    try:
        _report(
            "pulled",
            _pull(_client(image, registry_config, ca_file, plain_http), dest, concurrency=concurrency),
        )
    except WeightsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
