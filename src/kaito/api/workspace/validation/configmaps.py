"""The ConfigMaps a Workspace names (``inference.config``, ``tuning.config``): which to check, and
what stops the check (not found, unreadable, not looked up)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito.api.workspace.inference_config import CONFIG_KEY, TUNING_CONFIG_KEY
from kaito.api.workspace.types import Workspace
from kaito.api.workspace.validation.checker import Checker

_NOT_LOOKED_UP: Any = object()


def config_map_due(ck: Checker, path: str, name: str | None) -> Mapping[str, Any] | None:
    """The ConfigMap ``name`` (at ``path``) to check, after reporting what stops the check.

    As upstream, a ConfigMap is checked on create and again only when its name changes, so
    deleting it later cannot block the controller's finalizer and status updates."""
    if not name or not ck.check_config:
        return None
    if ck.old is not None and _config_name(ck.old, path) == name:
        return None
    found = ck.config_maps.get(name, _NOT_LOOKED_UP) if ck.config_maps is not None else _NOT_LOOKED_UP
    namespace = ck.ws.metadata.namespace
    where = f"namespace {namespace!r}" if namespace else "the Workspace's namespace"
    key = CONFIG_KEY if path == "inference.config" else TUNING_CONFIG_KEY
    if found is _NOT_LOOKED_UP:
        ck.result.skipped.append(
            f"{path}: ConfigMap {name!r} was not checked: nothing to read it from "
            "(kaito validate: give the ConfigMap with -f too)"
        )
    elif found is None:
        ck.error(
            path,
            f"ConfigMap {name!r} not found in {where}; create it (key {key}) before the "
            f"Workspace, or remove {path} to use the defaults",
        )
    elif isinstance(found, str):
        ck.error(path, f"could not read ConfigMap {name!r} in {where}: {found}")
    elif isinstance(found, Mapping):
        return found
    return None


def _config_name(ws: Workspace, path: str) -> str | None:
    if path == "inference.config":
        return ws.inference.config if ws.inference else None
    return ws.tuning.config if ws.tuning else None
