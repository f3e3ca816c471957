"""The ``kaito`` command line: one typer app, one sub-module per command group.

Each command group lives in its own module under ``kaito.cli`` and is listed here, so the entry
point stays a table of contents. The modules are imported when their command runs (or when
``kaito --help`` lists them), not all at start: ``kaito controller`` is the operator's long-lived
process, and the other commands' imports (the local control plane's certificates, rich progress
displays, OCI clients) would cost it about 11 MB of resident memory it never uses.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated

import typer
from typer._click.core import Command, Context  # typer 0.29 carries its own click
from typer.core import TyperGroup


@dataclass(frozen=True)
class _Entry:
    """Where one command of the table lives."""

    module: str
    """The ``kaito.cli`` module that defines it."""
    attr: str
    """A ``typer.Typer`` (a command group) or a function (one command) in that module."""
    settings: str = ""
    """The name of a click ``context_settings`` dict in the module, for commands that need one."""
    long_lived: bool = False
    """A process that runs for days (the controllers): structlog is imported without rich
    (:func:`_structlog_without_rich`)."""


#: The table of contents: command name → where it lives.
COMMANDS: dict[str, _Entry] = {
    "local": _Entry("kaito.cli.local", "app"),
    "serve": _Entry("kaito.cli.serve", "serve", settings="SETTINGS"),
    "presets": _Entry("kaito.cli.presets", "app"),
    "models": _Entry("kaito.cli.models", "app"),
    "validate": _Entry("kaito.cli.validate", "validate"),
    "estimate": _Entry("kaito.cli.estimate", "estimate_cmd"),
    "controller": _Entry("kaito.cli.controller", "controller", long_lived=True),
    "node-provisioner": _Entry("kaito.cli.node_provisioner", "node_provisioner", long_lived=True),
    "crds": _Entry("kaito.cli.crds", "crds"),
}


def _structlog_without_rich() -> None:
    """Import structlog while ``import rich`` fails.

    When rich is installed (typer brings it), structlog imports it and pygments at import time
    (66 modules, about 3 MB resident) to draw tracebacks in its console renderer. kaito's log
    configuration renders exceptions itself (``format_exc_info`` comes first), so a controller
    would carry them for nothing, for days. rich is refused only while structlog is imported:
    typer still imports it later if it has an error to show."""
    if "structlog" in sys.modules:
        return
    saved = sys.modules.get("rich")
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` raise ImportError
    try:
        importlib.import_module("structlog")
    finally:
        if saved is None:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = saved


def load_command(name: str) -> Command:
    """The click command ``name`` of :data:`COMMANDS`, importing its module now."""
    entry = COMMANDS[name]
    if entry.long_lived:
        _structlog_without_rich()
    module = importlib.import_module(entry.module)
    target = getattr(module, entry.attr)
    if isinstance(target, typer.Typer):
        command: Command = typer.main.get_group(target)
    else:
        one = typer.Typer()
        settings = getattr(module, entry.settings) if entry.settings else None
        one.command(name, context_settings=settings)(target)
        command = typer.main.get_command(one)
    command.name = name
    return command


class _LazyGroup(TyperGroup):
    """The root group: lists :data:`COMMANDS` and imports one only when it is asked for."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="kaito",
    cls=_LazyGroup,
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


if __name__ == "__main__":  # pragma: no cover
    app()
