"""``kaito crds``: the CustomResourceDefinitions of this kaito, as one YAML stream.

Why a command: the CRDs are generated from the pydantic models (``kaito.api.crd``), so the
installed package itself is their source; a user who ``pip install``-ed kaito (no checkout, no
chart) gets the ones that match the code they run with ``kaito crds | kubectl apply
--server-side -f -``. The chart's ``crds/`` and ``config/crd`` hold the same text (a test checks).
"""

from __future__ import annotations

from typing import Annotated

import typer

from kaito.api.crd import generated


def _group(file_name: str) -> str:
    return file_name.split("_", 1)[0]


def crds(
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            help="only the CRDs of this API group (repeatable), e.g. --group kaito.sh where "
            "Karpenter already installed karpenter.sh's NodeClaim and NodePool",
        ),
    ] = None,
) -> None:
    """Print the CRDs kaito needs (as the chart installs them), for `kubectl apply --server-side -f -`."""
    files = generated()
    known = sorted({_group(name) for name in files})
    unknown = sorted(set(group or ()) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)} is not a group kaito defines; choose from {', '.join(known)}",
            param_hint="--group",
        )
    for name, text in files.items():
        if not group or _group(name) in group:
            typer.echo(text, nl=False)
