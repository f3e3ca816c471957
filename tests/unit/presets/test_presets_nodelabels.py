"""GPUs read from a bring-your-own node's GPU Feature Discovery labels."""

from __future__ import annotations

import pytest

from kaito.presets import estimate, get_preset
from kaito.presets.nodelabels import NodeLabelsError, sku_from_node_labels

A100 = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81920",
}


def test_the_three_labels_make_a_sku() -> None:
    sku = sku_from_node_labels(A100)
    assert sku is not None
    assert (sku.gpu_count, sku.gpu_memory_gib, sku.compute_capability, sku.bf16) == (8, 80.0, 8.0, True)
    assert sku.name == "node-labels:NVIDIA-A100-SXM4-80GB"
    # and the estimator plans on it like on a named instance type
    plan = estimate(get_preset("phi-3-mini-4k-instruct"), sku)
    assert plan.fits and plan.node_count == 1


def test_cuda_labels_win_over_the_product_name() -> None:
    sku = sku_from_node_labels(
        {**A100, "nvidia.com/cuda.compute.major": "9", "nvidia.com/cuda.compute.minor": "0"}
    )
    assert sku is not None and sku.compute_capability == 9.0
    v100 = sku_from_node_labels({**A100, "nvidia.com/gpu.product": "Tesla-V100-PCIE-16GB"})
    assert v100 is not None and v100.compute_capability == 7.0 and not v100.bf16


def test_missing_labels_mean_no_sku() -> None:
    assert sku_from_node_labels({}) is None
    assert sku_from_node_labels({k: v for k, v in A100.items() if k != "nvidia.com/gpu.memory"}) is None


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        ({**A100, "nvidia.com/gpu.count": "eight"}, "must be integers"),
        ({**A100, "nvidia.com/gpu.memory": "0"}, "must be positive"),
        ({**A100, "nvidia.com/gpu.product": "Mystery-GPU"}, "label the node with its compute capability"),
        ({**A100, "nvidia.com/cuda.compute.major": "x"}, "are not integers"),
    ],
)
def test_unreadable_labels_are_named(labels: dict[str, str], needle: str) -> None:
    with pytest.raises(NodeLabelsError, match=needle):
        sku_from_node_labels(labels)
