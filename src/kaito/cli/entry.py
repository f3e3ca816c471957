"""The ``kaito`` console script: the typer app, or one line saying which extra to install.

Why a separate entry: ``pip install kaito`` installs only the core (``kaito.runtime`` and
``kaito.envtest`` for operator authors); the command line needs the ``operator`` extra. Without it
the script would die in a traceback about ``typer``; this says what to do instead.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from kaito.cli.main import app
    except ModuleNotFoundError as exc:
        sys.exit(
            f"kaito: the command line needs the operator extra ({exc.name} is not installed): "
            "pip install 'kaito[operator]'"
        )
    app()
