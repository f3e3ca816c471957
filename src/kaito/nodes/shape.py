"""The node an instance type becomes: capacity plus GPU feature-discovery labels.

The instance type is resolved to its SKU once, here (:func:`node_shape`); everything a cloud or
the NodeClaim controller needs about that node (GPU count, product, memory) is then read off the
returned :class:`NodeShape`, never looked up again by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaito.nodes.node import GPU_RESOURCE, LABEL_GPU_COUNT
from kaito.presets import GPUSku, get_sku


@dataclass(frozen=True)
class NodeShape:
    """What a node of one instance type reports: capacity plus GPU feature-discovery labels."""

    instance_type: str
    cpu: int
    memory_gib: int
    gpus: int
    gpu_product: str
    gpu_memory_mib: int
    #: The SKU the instance type resolved to; None when kaito's table does not know it.
    sku: GPUSku | None = None

    def capacity(self) -> dict[str, str]:
        cap = {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_gib}Gi",
            "pods": "110",
            "ephemeral-storage": "2048Gi",
        }
        if self.gpus:
            cap[GPU_RESOURCE] = str(self.gpus)
        return cap

    def gpu_labels(self) -> dict[str, str]:
        if not self.gpus:
            return {}
        return {
            "nvidia.com/gpu.product": self.gpu_product,
            LABEL_GPU_COUNT: str(self.gpus),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
            "nvidia.com/gpu.present": "true",
        }


_AZURE_CPUS = re.compile(r"^standard_[a-z]+?(\d+)", re.I)
_AWS_SIZE = re.compile(r"\.(\d*)x?large$", re.I)


def _vcpus(instance_type: str) -> int:
    """vCPUs read off the size name (Azure: the digits after the family; AWS: N·xlarge = 4N)."""
    m = _AZURE_CPUS.match(instance_type)
    if m:
        return int(m.group(1))
    m = _AWS_SIZE.search(instance_type)
    if m:
        if "xlarge" not in instance_type.lower():
            return 2
        return 4 * int(m.group(1) or 1)
    return 8


def node_shape(instance_type: str) -> NodeShape:
    """The node an instance type becomes. GPU facts come from kaito's SKU table; CPU and memory
    are estimates from the size name (8 GiB per vCPU) since the table does not carry them."""
    sku = get_sku(instance_type)
    cpu = _vcpus(instance_type)
    if sku is None:
        return NodeShape(instance_type, cpu, max(cpu * 8, 16), 0, "", 0)
    return NodeShape(
        instance_type=instance_type,
        cpu=cpu,
        memory_gib=max(cpu * 8, 16),
        gpus=sku.gpu_count,
        gpu_product=f"NVIDIA-{sku.gpu_model.replace(' ', '-')}",
        gpu_memory_mib=int(sku.gpu_memory_gib * 1024),
        sku=sku,
    )


__all__ = ["NodeShape", "node_shape"]
