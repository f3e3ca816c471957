"""Inventory gauges: how many Workspaces and InferenceSets exist, by phase and by preset.

Upstream Kaito v0.12 exports ``kaito_workspace_count{phase}``,
``kaito_workspace_preset_count{preset_name}`` and ``kaito_inferenceset_count{phase}``; dashboards
and alerts written for upstream query those names, so kaito exports them with the same names,
labels and phase words (``succeeded``, ``error``, ``pending``, ``deleting``).

Why a collector over the informer cache rather than upstream's once-a-minute LIST: the manager
already holds every Workspace and InferenceSet in its cache, so counting them when Prometheus
scrapes costs no API request (a converged operator stays at zero requests) and is never up to a
minute stale. A kind whose informer is not running (the InferenceSet controller turned off by its
gate, or its CRD missing) exports no samples rather than zeros that would read as "none exist".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kaito.api import inferenceset as iset
from kaito.api import names
from kaito.runtime import GVK, InformerCache

WORKSPACE_GVK: Final = GVK(names.GROUP, names.STORAGE_VERSION, names.KIND)
INFERENCESET_GVK: Final = GVK(iset.GROUP, iset.STORAGE_VERSION, iset.KIND)

#: Upstream's phase words; every one is exported, at zero when nothing is in it, so a query for
#: ``phase="error"`` finds a sample (0) rather than nothing on a healthy cluster.
PHASES: Final = ("succeeded", "error", "pending", "deleting")


def _condition(obj: Mapping[str, object], type_: str) -> str | None:
    status = obj.get("status")
    if not isinstance(status, Mapping):
        return None
    for c in status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            value = c.get("status")
            return value if isinstance(value, str) else None
    return None


def _deleting(obj: Mapping[str, object]) -> bool:
    meta = obj.get("metadata")
    return isinstance(meta, Mapping) and bool(meta.get("deletionTimestamp"))


def workspace_phase(ws: Mapping[str, object]) -> str:
    """Upstream's verdict: deleting, else WorkspaceSucceeded True/False -> succeeded/error,
    else pending. A deletion timestamp counts even before the controller wrote its condition."""
    if _deleting(ws) or _condition(ws, names.WORKSPACE_DELETING) == "True":
        return "deleting"
    verdict = _condition(ws, names.WORKSPACE_SUCCEEDED)
    return {"True": "succeeded", "False": "error"}.get(verdict or "", "pending")


def inferenceset_phase(obj: Mapping[str, object]) -> str:
    """As :func:`workspace_phase`, judged by ``InferenceSetReady``."""
    if _deleting(obj):
        return "deleting"
    verdict = _condition(obj, iset.CONDITION_READY)
    return {"True": "succeeded", "False": "error"}.get(verdict or "", "pending")


def preset_name(ws: Mapping[str, object]) -> str:
    """``inference.preset.name``, or "" for tuning and template Workspaces (not counted)."""
    inference = ws.get("inference")
    preset = inference.get("preset") if isinstance(inference, Mapping) else None
    name = preset.get("name") if isinstance(preset, Mapping) else None
    return name if isinstance(name, str) else ""


def _phase_family(name: str, doc: str, phases: Iterable[str]) -> GaugeMetricFamily:
    counts = Counter({p: 0 for p in PHASES})
    counts.update(phases)
    family = GaugeMetricFamily(name, doc, labels=["phase"])
    for phase, n in sorted(counts.items()):
        family.add_metric([phase], n)
    return family


class InventoryCollector(Collector):
    """Counts the cached Workspaces and InferenceSets each time the registry is collected."""

    def __init__(self, cache: InformerCache) -> None:
        self._cache = cache

    def _objects(self, gvk: GVK) -> list[dict[str, object]] | None:
        if not self._cache.can_serve(gvk):
            return None
        try:
            return list(self._cache.list(gvk))
        except LookupError:  # the informer stopped between the two calls
            return None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without describe() the registry would call collect() at registration, before the cache
        # exists; the families' names are all it needs.
        yield GaugeMetricFamily("kaito_workspace_count", "", labels=["phase"])
        yield GaugeMetricFamily("kaito_workspace_preset_count", "", labels=["preset_name"])
        yield GaugeMetricFamily("kaito_inferenceset_count", "", labels=["phase"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        workspaces = self._objects(WORKSPACE_GVK)
        if workspaces is not None:
            yield _phase_family(
                "kaito_workspace_count",
                "Number of Workspaces in each phase (succeeded, error, pending, deleting)",
                (workspace_phase(ws) for ws in workspaces),
            )
            presets = GaugeMetricFamily(
                "kaito_workspace_preset_count",
                "Number of Workspaces using each preset model, by preset name",
                labels=["preset_name"],
            )
            for name, n in sorted(Counter(p for p in map(preset_name, workspaces) if p).items()):
                presets.add_metric([name], n)
            yield presets
        sets = self._objects(INFERENCESET_GVK)
        if sets is not None:
            yield _phase_family(
                "kaito_inferenceset_count",
                "Number of InferenceSets in each phase (succeeded, error, pending, deleting)",
                (inferenceset_phase(s) for s in sets),
            )


__all__ = [
    "INFERENCESET_GVK",
    "PHASES",
    "WORKSPACE_GVK",
    "InventoryCollector",
    "inferenceset_phase",
    "preset_name",
    "workspace_phase",
]
