"""The ``kaito`` command line: one typer app, one sub-module per command group.

Each command group lives in its own module under ``kaito.cli`` and is registered here, so the
entry point stays a table of contents.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from kaito.cli import controller, crds, estimate, local, models, node_provisioner, presets, serve, validate

app = typer.Typer(
    name="kaito",
    help="Kubernetes AI toolchain operator: presets, estimates, local clusters, controllers.",
    no_args_is_help=True,
    # `kaito --install-completion` / `--show-completion` for bash, zsh, fish and PowerShell
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("kaito")
        except metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
            version = "unknown (not installed)"
        typer.echo(f"kaito {version}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print kaito's version and exit."),
    ] = False,
) -> None:
    """Kubernetes AI toolchain operator: presets, estimates, local clusters, controllers."""


app.add_typer(local.app, name="local")
app.command("serve", context_settings=serve.SETTINGS)(serve.serve)
app.add_typer(presets.app, name="presets")
app.add_typer(models.app, name="models")
app.command("validate")(validate.validate)
app.command("estimate")(estimate.estimate_cmd)
app.command("controller")(controller.controller)
app.command("node-provisioner")(node_provisioner.node_provisioner)
app.command("crds")(crds.crds)


if __name__ == "__main__":  # pragma: no cover
    app()
