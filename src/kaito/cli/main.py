"""The ``kaito`` command line: one typer app, one sub-module per command group.

Each command group lives in its own module under ``kaito.cli`` and is registered here, so the
entry point stays a table of contents.
"""

from __future__ import annotations

import typer

from kaito.cli import controller, estimate, local, node_provisioner, presets, serve, validate

app = typer.Typer(
    name="kaito",
    help="Kubernetes AI toolchain operator: presets, estimates, local clusters, controllers.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(local.app, name="local")
app.command("serve", context_settings=serve.SETTINGS)(serve.serve)
app.add_typer(presets.app, name="presets")
app.command("validate")(validate.validate)
app.command("estimate")(estimate.estimate_cmd)
app.command("controller")(controller.controller)
app.command("node-provisioner")(node_provisioner.node_provisioner)


if __name__ == "__main__":  # pragma: no cover
    app()
