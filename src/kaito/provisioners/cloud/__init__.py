"""CloudProvider backends for kaito's node-provisioner: ``kwok`` (local) and ``aks`` (Azure).

Each cloud lives in its own package and never imports another (an import-linter contract);
what they share is here: reading a NodeClaim's wants, and the node shape an instance type has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kaito.presets import get_sku

LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
#: Put on every Node a kaito cloud makes, so a Node maps back to its NodeClaim without a lookup.
LABEL_NODECLAIM = "kaito.sh/nodeclaim"
GPU_RESOURCE = "nvidia.com/gpu"
#: On a Node a cloud *adopted* (a machine that registered its own Node, held for a claim) rather
#: than made: the node-provisioner never deletes such a Node nor gives it an owner reference to its
#: claim (the garbage collector would delete it with the claim); the cloud releases it instead.
#: Stays after release, with the Node's providerID (immutable once set).
ANNOTATION_ADOPTED = "kaito.sh/adopted"


def is_adopted(node: dict[str, Any]) -> bool:
    """Whether ``node`` is a machine's own Node that a cloud adopts and releases, never deletes."""
    return ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ADOPTED) == "true"


@dataclass(frozen=True)
class NodeShape:
    """What a node of one instance type reports: capacity plus GPU feature-discovery labels."""

    instance_type: str
    cpu: int
    memory_gib: int
    gpus: int
    gpu_product: str
    gpu_memory_mib: int

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
            "nvidia.com/gpu.count": str(self.gpus),
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
    )


def requirement_value(claim: dict[str, Any], key: str) -> str | None:
    """The first ``In`` value a NodeClaim requires for ``key`` (its instance type, its OS)."""
    for req in (claim.get("spec") or {}).get("requirements") or ():
        if req.get("key") == key and req.get("operator") == "In" and req.get("values"):
            return str(req["values"][0])
    return None


def claim_instance_type(claim: dict[str, Any]) -> str:
    value = requirement_value(claim, LABEL_INSTANCE_TYPE) or requirement_value(
        claim, "karpenter.azure.com/sku-name"
    )
    if not value:
        name = (claim.get("metadata") or {}).get("name")
        raise ValueError(
            f"NodeClaim {name}: spec.requirements has no {LABEL_INSTANCE_TYPE} In [...]; "
            "add the instance type the node must have"
        )
    return value


def claim_node_labels(claim: dict[str, Any]) -> dict[str, str]:
    """Labels the Node must carry: the claim's own plus single-valued ``In`` requirements
    (what Karpenter copies onto the nodes it launches)."""
    labels: dict[str, str] = {}
    for req in (claim.get("spec") or {}).get("requirements") or ():
        values = req.get("values") or []
        if req.get("operator") == "In" and len(values) == 1:
            labels[str(req["key"])] = str(values[0])
    labels.update((claim.get("metadata") or {}).get("labels") or {})
    labels[LABEL_NODECLAIM] = str(claim["metadata"]["name"])
    return labels


def claim_taints(claim: dict[str, Any]) -> list[dict[str, Any]]:
    spec = claim.get("spec") or {}
    return [dict(t) for t in (spec.get("taints") or [])] + [
        dict(t) for t in (spec.get("startupTaints") or [])
    ]
