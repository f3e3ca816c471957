"""What the workspace controller, the provisioner backends and the node-provisioner share.

Two seams, one per direction of the provisioning story:

- ``NodeProvisioner`` (workspace-facing): the workspace controller says how many GPU nodes of
  which instance type a Workspace needs and learns whether they are there. Backends: NodeClaims
  for a gpu-provisioner, a NodePool for Karpenter, or the user's own nodes.
- ``CloudProvider`` (node-provisioner-facing): the node-provisioner controller turns one
  NodeClaim into one cloud instance (an AKS agent pool, a kwok node) and back.

Both are protocols so backends live in ``kaito.provisioners`` and depend on this package, never
the other way round.
"""

from kaito.nodes.cloud import CloudError, CloudProvider, Instance, InstanceState
from kaito.nodes.provisioner import NodeProvisioner, NodeRequest, NodeStatus

__all__ = [
    "CloudError",
    "CloudProvider",
    "Instance",
    "InstanceState",
    "NodeProvisioner",
    "NodeRequest",
    "NodeStatus",
]
