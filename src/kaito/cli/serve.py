"""``kaito serve``: the inference server (same as ``python -m kaito.inference``).

Every argument is handed unchanged to the server's own parser, which also forwards flags it does
not know to vLLM's; ``kaito serve --help`` shows the server's flags.
"""

from __future__ import annotations

import typer


def serve(ctx: typer.Context) -> None:
    """Run the inference server (vLLM, or transformers with --runtime transformers)."""
    from kaito.inference.server import main

    raise typer.Exit(main(list(ctx.args)))


SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
