"""Model presets, GPU SKU tables and the node estimator; pure, no I/O beyond packaged data.

The public API (see docs/presets.md)::

    get_preset(name) -> ModelPreset          list_presets()
    resolve_preset(name, params=None)        custom_preset(hf_repo, params)
    get_sku(instance_type) -> GPUSku | None  list_skus(cloud=None)
    estimate(preset, sku, node_count=None) -> Estimate
    fit(preset, sku, node_count=None, annotations=None) -> Fit   (the one fit verdict)
    rank_skus(preset, cloud=None) -> list[Estimate]

``kaito.presets.compare`` sets kaito's estimate next to upstream Kaito's for every pair.
"""

from kaito.presets.catalog import (
    ModelPreset,
    PresetError,
    catalog_version,
    custom_preset,
    find_preset,
    get_preset,
    is_hf_repo_id,
    list_presets,
    preset_names,
    resolve_preset,
)
from kaito.presets.estimator import Estimate, MemoryBreakdown, estimate, rank_skus
from kaito.presets.fitting import BYPASS_ANNOTATION, Fit, bypass_requested, fit, runnable
from kaito.presets.skus import CLOUDS, GPUSku, get_sku, list_skus, sku_names

__all__ = [
    "BYPASS_ANNOTATION",
    "CLOUDS",
    "Estimate",
    "Fit",
    "GPUSku",
    "MemoryBreakdown",
    "ModelPreset",
    "PresetError",
    "bypass_requested",
    "catalog_version",
    "custom_preset",
    "estimate",
    "find_preset",
    "fit",
    "get_preset",
    "get_sku",
    "is_hf_repo_id",
    "list_presets",
    "list_skus",
    "preset_names",
    "rank_skus",
    "resolve_preset",
    "runnable",
    "sku_names",
]
