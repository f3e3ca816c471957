"""Names and labels of the objects a Workspace owns, in one place."""

from __future__ import annotations

from typing import Any

from kaito.api import names

Obj = dict[str, Any]

MANAGED_BY = {"app.kubernetes.io/managed-by": "kaito"}


def headless_name(ws_name: str) -> str:
    return f"{ws_name}-headless"


def config_name(ws_name: str) -> str:
    """The per-Workspace default ConfigMap of earlier versions (now shared per namespace, see
    ``configmap``); still removed where it exists."""
    return f"{ws_name}-inference-config"


def selector_labels(ws: Obj) -> dict[str, str]:
    """What the StatefulSet selects its pods by (and the Services route by): immutable."""
    return {names.LABEL_WORKSPACE: ws["metadata"]["name"]}


def child_labels(ws: Obj) -> dict[str, str]:
    meta = ws["metadata"]
    return {
        names.LABEL_WORKSPACE: meta["name"],
        names.LABEL_WORKSPACE_NAMESPACE: meta["namespace"],
        **MANAGED_BY,
    }
