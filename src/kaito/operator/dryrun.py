"""``kaito controller --dry-run``: every setting resolved and the backend built, nothing connected.

Why: the chart, an environment variable and a flag can each set the same thing (the cloud
provider, the Karpenter node class, ...), and which one won is otherwise learnt only from a
running controller's behaviour. A dry run answers it from the real command line: the same flag
and environment parsing and the same backend factory as a real start, stopping before the first
connection. It is also what the deploy tests drive, instead of patching the command's run step.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

from kaito.nodes import NodeProvisioner
from kaito.operator.options import OperatorOptions
from kaito.operator.wiring import make_provisioner
from kaito.runtime import Manager, RestConfig

#: JSON values of the report.
Json = str | int | float | bool | None | list["Json"] | dict[str, "Json"]

#: An address nothing listens on: building a backend never dials it (Managers connect on start).
_NEVER_DIALLED = "https://127.0.0.1:1"


def _jsonable(value: object) -> Json:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _backend_facts(backend: NodeProvisioner) -> dict[str, Json]:
    """What the built backend will act with: its name, and the settings it resolved (the cloud a
    gpu-provisioner writes NodeClaims for, the default node class a Karpenter NodePool references and
    the names kaito.sh/node-class-name may choose)."""
    facts: dict[str, Json] = {"name": backend.name, "type": type(backend).__qualname__}
    for attribute in ("cloud", "node_class", "node_classes"):
        if hasattr(backend, attribute):
            facts[attribute] = _jsonable(getattr(backend, attribute))
    return facts


def dry_run_report(options: OperatorOptions) -> dict[str, Json]:
    """The resolved options and the backend they build, as JSON-ready data."""

    async def build() -> NodeProvisioner:
        return make_provisioner(Manager(RestConfig(host=_NEVER_DIALLED), handle_signals=False), options)

    backend = asyncio.run(build())
    return {"options": _jsonable(options), "backend": _backend_facts(backend)}


__all__ = ["dry_run_report"]
