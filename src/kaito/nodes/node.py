"""What kaito reads off a Node and writes onto GPU nodes: readiness, the GPU resource, the taint.

One owner for names every side must agree on: the backends that pick nodes, the NodeClaim
controller that judges them initialized, the clouds that make them and the workloads that must
tolerate them. A second spelling of ``nvidia.com/gpu`` or of the ``sku=gpu`` taint would be a
node nobody's pods can use.
"""

from __future__ import annotations

from typing import Any

from kaito.api.nodeclaim import GPU_TAINT_KEY, GPU_TAINT_VALUE

# The core kind's one definition is the runtime's; re-exported here beside what kaito reads off it.
from kaito.runtime import NODE

#: The extended resource the NVIDIA device plugin advertises and GPU pods request.
GPU_RESOURCE = "nvidia.com/gpu"
#: GPU feature discovery's count label; read when a Node advertises no resource (yet).
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
#: The well-known label every kubelet (and kwok) sets from the cloud's instance type.
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"


def is_node_ready(node: dict[str, Any]) -> bool:
    """Whether the Node's ``Ready`` condition is True (a missing condition is not Ready)."""
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def node_gpus(node: dict[str, Any], resource: str = GPU_RESOURCE) -> int:
    """Allocatable ``resource``; else capacity; else GPU feature discovery's count label for it
    (``nvidia.com/gpu.count``; ``nvidia.com/mig-1g.10gb.count`` for a MIG slice, which GFD
    writes under the device plugin's "mixed" strategy)."""
    status = node.get("status") or {}
    raw = (status.get("allocatable") or {}).get(resource) or (status.get("capacity") or {}).get(resource)
    if raw is None:
        label = LABEL_GPU_COUNT if resource == GPU_RESOURCE else f"{resource}.count"
        raw = ((node.get("metadata") or {}).get("labels") or {}).get(label)
    try:
        return int(str(raw)) if raw is not None else 0
    except ValueError:
        return 0


def gpu_taint() -> dict[str, str]:
    """The taint a GPU node kaito asks for carries (a fresh dict: callers put it in manifests)."""
    return {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NoSchedule"}


def gpu_tolerations() -> list[dict[str, str]]:
    """What a pod needs to land on such a node: the ``sku=gpu`` taint, and the
    ``nvidia.com/gpu`` taint GPU node images add (fresh dicts: callers edit pod specs)."""
    return [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
        {"key": GPU_TAINT_KEY, "operator": "Equal", "value": GPU_TAINT_VALUE, "effect": "NoSchedule"},
    ]


__all__ = [
    "GPU_RESOURCE",
    "LABEL_GPU_COUNT",
    "LABEL_HOSTNAME",
    "LABEL_INSTANCE_TYPE",
    "LABEL_OS",
    "NODE",
    "gpu_taint",
    "gpu_tolerations",
    "is_node_ready",
    "node_gpus",
]
