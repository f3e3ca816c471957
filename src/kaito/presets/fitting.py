"""Whether a preset fits a SKU, and what the resource-check bypass annotation waives.

Admission (the Workspace and InferenceSet webhooks, ``kaito validate``) and the workspace
controller's plan both ask this one function, so an object the webhook admits is one the
controller will plan, and the bypass means the same on both sides.

The annotation counts by presence, whatever its value, as upstream Kaito reads it. It waives the
GPU-memory verdict only: a SKU the runtime cannot use at all (a GPU family vLLM has no build for,
too old a compute capability for the preset) stays refused, since the pod could never start there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kaito.presets.catalog import ModelPreset
from kaito.presets.estimator import Estimate, estimate
from kaito.presets.skus import GPUSku

#: upstream Kaito's annotation name; kaito.api.names re-exports it with the other annotation names
BYPASS_ANNOTATION: Final = "kaito.sh/bypass-resource-checks"


def bypass_requested(annotations: Mapping[str, str] | None) -> bool:
    """Whether the object asks to bypass the checks: the annotation is present, any value."""
    return BYPASS_ANNOTATION in (annotations or {})


def runnable(preset: ModelPreset, sku: GPUSku) -> bool:
    """Whether kaito's runtime can run ``preset`` on ``sku`` at all, memory aside."""
    return sku.supported and sku.compute_capability >= preset.min_compute_capability


@dataclass(frozen=True)
class Fit:
    """The verdict: the estimator's plan, and whether the annotation waived its refusal."""

    estimate: Estimate
    #: the plan does not fit, the annotation is present and the SKU is runnable
    bypassed: bool

    @property
    def ok(self) -> bool:
        """Whether the workload may be planned: it fits, or the memory verdict was waived."""
        return self.estimate.fits or self.bypassed

    @property
    def reason(self) -> str:
        """Why the plan does not fit (empty when it does), also when the verdict was waived."""
        return self.estimate.reason


def fit(
    preset: ModelPreset,
    sku: GPUSku,
    node_count: int | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    multi_node: bool = True,
) -> Fit:
    """Plan ``preset`` on ``sku`` (``node_count`` nodes, or the fewest that fit) and judge it,
    honouring the bypass annotation in ``annotations`` (the Workspace's). ``multi_node`` False:
    one node or nothing (a MIG slice cannot be spread, so the reason must not suggest nodes)."""
    plan = estimate(preset, sku, node_count, multi_node=multi_node)
    waived = not plan.fits and bypass_requested(annotations) and runnable(preset, sku)
    return Fit(plan, waived)


__all__ = ["BYPASS_ANNOTATION", "Fit", "bypass_requested", "fit", "runnable"]
