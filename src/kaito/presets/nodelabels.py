"""A GPU SKU read from a node's NVIDIA GPU Feature Discovery labels, for bring-your-own nodes
that name no instance type.

Upstream Kaito sizes such a Workspace from the first Ready matching node's
``nvidia.com/gpu.product``, ``nvidia.com/gpu.count`` and ``nvidia.com/gpu.memory`` (MiB per GPU)
labels, plus ``nvidia.com/cuda.compute.major``/``minor`` when present; kaito does the same, so a
cluster whose nodes carry GFD's labels needs no instance type at all. Pure: the caller supplies
the labels (from its node cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from kaito.presets.skus import GPUSku, list_skus

GPU_PRODUCT: Final = "nvidia.com/gpu.product"
GPU_COUNT: Final = "nvidia.com/gpu.count"
#: Memory of one GPU in MiB (GFD's unit).
GPU_MEMORY: Final = "nvidia.com/gpu.memory"
CUDA_MAJOR: Final = "nvidia.com/cuda.compute.major"
CUDA_MINOR: Final = "nvidia.com/cuda.compute.minor"
#: Name prefix of a SKU made from labels: no cloud instance type has it.
NODE_SKU_PREFIX: Final = "node-labels:"


class NodeLabelsError(ValueError):
    """The node carries the GPU labels but one cannot be read; the message names the label."""


def _compute_capability(labels: Mapping[str, str], product: str) -> float | None:
    major, minor = labels.get(CUDA_MAJOR), labels.get(CUDA_MINOR)
    if major is not None:
        try:
            return int(major) + (int(minor) / 10 if minor is not None else 0.0)
        except ValueError:
            raise NodeLabelsError(f"{CUDA_MAJOR}/{CUDA_MINOR} {major!r}/{minor!r} are not integers") from None
    # No CUDA labels (older GFD): the GPU model's, when kaito's SKU table knows the product name.
    # The longest model name contained in the product wins (A100 before A10, L40S before L4).
    upper = product.upper().replace("-", " ")
    known = sorted({(s.gpu_model, s.compute_capability) for s in list_skus()}, key=lambda m: -len(m[0]))
    return next((cc for model, cc in known if model.upper() in upper), None)


def sku_from_node_labels(labels: Mapping[str, str]) -> GPUSku | None:
    """The SKU the labels describe; None when the three GFD labels are not all there."""
    product, count, memory = labels.get(GPU_PRODUCT), labels.get(GPU_COUNT), labels.get(GPU_MEMORY)
    if product is None or count is None or memory is None:
        return None
    try:
        gpus, mib = int(count), int(memory)
    except ValueError:
        raise NodeLabelsError(
            f"{GPU_COUNT}={count!r} and {GPU_MEMORY}={memory!r} must be integers (GPUs, MiB per GPU)"
        ) from None
    if gpus <= 0 or mib <= 0:
        raise NodeLabelsError(f"{GPU_COUNT}={count!r} and {GPU_MEMORY}={memory!r} must be positive")
    cc = _compute_capability(labels, product)
    if cc is None:
        raise NodeLabelsError(
            f"{GPU_PRODUCT}={product!r} is not a GPU kaito knows and the node has no {CUDA_MAJOR} "
            "label; label the node with its compute capability, or name resource.instanceType"
        )
    return GPUSku.model_validate(
        {
            "name": f"{NODE_SKU_PREFIX}{product}",
            "cloud": "arc",
            "gpu": product,
            "gpus": gpus,
            "gpu_mem_gib": round(mib / 1024, 2),
            "cc": cc,
            "bf16": cc >= 8.0,
        }
    )


__all__ = [
    "CUDA_MAJOR",
    "CUDA_MINOR",
    "GPU_COUNT",
    "GPU_MEMORY",
    "GPU_PRODUCT",
    "NODE_SKU_PREFIX",
    "NodeLabelsError",
    "sku_from_node_labels",
]
