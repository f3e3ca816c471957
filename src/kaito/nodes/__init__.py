"""What the workspace controller, the provisioner backends and the node-provisioner share.

Two seams, one per direction of the provisioning story:

- ``NodeProvisioner`` (workspace-facing): the workspace controller says how many GPU nodes of
  which instance type a Workspace needs and learns whether they are there. Backends: NodeClaims
  for a gpu-provisioner, a NodePool for Karpenter, or the user's own nodes.
- ``CloudProvider`` (node-provisioner-facing): the node-provisioner controller turns one
  NodeClaim into one cloud instance (an AKS agent pool, a kwok node) and back.

Both are protocols so backends live in ``kaito.provisioners`` and depend on this package, never
the other way round. The names both sides must spell alike live here too, once: the Node kind and
its readiness, the ``nvidia.com/gpu`` resource, the ``sku=gpu`` taint and its toleration
(:mod:`kaito.nodes.node`), what a NodeClaim asks for (:mod:`kaito.nodes.claims`) and the node an
instance type becomes (:mod:`kaito.nodes.shape`).
"""

from kaito.nodes.claims import (
    ANNOTATION_ADOPTED,
    LABEL_AZURE_SKU,
    LABEL_NODECLAIM,
    claim_instance_type,
    claim_node_labels,
    claim_taints,
    is_adopted,
    requirement_value,
)
from kaito.nodes.cloud import CloudError, CloudProvider, Instance, InstanceState
from kaito.nodes.node import (
    GPU_RESOURCE,
    LABEL_GPU_COUNT,
    LABEL_HOSTNAME,
    LABEL_INSTANCE_TYPE,
    LABEL_OS,
    NODE,
    gpu_taint,
    gpu_tolerations,
    is_node_ready,
    node_gpus,
)
from kaito.nodes.provisioner import NodeProvisioner, NodeRequest, NodeStatus, Placement
from kaito.nodes.shape import NodeShape, node_shape

__all__ = [
    "ANNOTATION_ADOPTED",
    "GPU_RESOURCE",
    "LABEL_AZURE_SKU",
    "LABEL_GPU_COUNT",
    "LABEL_HOSTNAME",
    "LABEL_INSTANCE_TYPE",
    "LABEL_NODECLAIM",
    "LABEL_OS",
    "NODE",
    "CloudError",
    "CloudProvider",
    "Instance",
    "InstanceState",
    "NodeProvisioner",
    "NodeRequest",
    "NodeShape",
    "NodeStatus",
    "Placement",
    "claim_instance_type",
    "claim_node_labels",
    "claim_taints",
    "gpu_taint",
    "gpu_tolerations",
    "is_adopted",
    "is_node_ready",
    "node_gpus",
    "node_shape",
    "requirement_value",
]
