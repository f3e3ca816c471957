"""Names and labels of the objects a Workspace owns, in one place."""

from __future__ import annotations

from typing import Any

from kaito.api import names
from kaito.api.inferenceset import LABEL_CREATED_BY

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
    out = {
        names.LABEL_WORKSPACE: meta["name"],
        names.LABEL_WORKSPACE_NAMESPACE: meta["namespace"],
        **MANAGED_BY,
    }
    # An InferenceSet's child: its pods carry the set's label too, so the set's status.selector
    # selects them for an HPA's resource metrics (upstream puts it in the StatefulSet's selector).
    created_by = (meta.get("labels") or {}).get(LABEL_CREATED_BY)
    if created_by:
        out[LABEL_CREATED_BY] = created_by
    return out
