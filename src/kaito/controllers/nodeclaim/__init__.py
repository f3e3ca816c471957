"""kaito's node-provisioner: NodeClaims of node pool ``kaito`` fulfilled through a CloudProvider.

This is the half of the provisioning story that upstream runs as Azure's Go gpu-provisioner.
It follows Karpenter's NodeClaim lifecycle so any tool that reads claims understands ours:

- ``Launched``: the cloud instance exists (``status.providerID``, capacity, allocatable);
- ``Registered``: a Node with that providerID joined; it gets the claim's labels and taints and
  an owner reference to the claim;
- ``Initialized``: the Node is Ready and advertises the GPUs its instance type has;
- ``Ready``: all three.

Liveness (Karpenter's figures by default): no launch within 5 min or no registration within 15
min deletes the claim, and so does an initialization timeout (Azure's gpu-provisioner has none:
a node that never shows its GPUs would hold a Workspace forever). The NodeProvisioner backend then
makes a replacement. A cloud refusal (quota, SKU, capacity) becomes ``Launched=False`` with the
cloud's code as reason and a Warning event, and is retried so fixing the cause needs no restart.

The finalizer deletes the cloud instance, then the Node, then lets the claim go. Instances with
no claim (a crash between the cloud call and the status write, a claim force-deleted) are
garbage-collected once older than a grace period.
"""

from kaito.controllers.nodeclaim.controller import (
    FINALIZER,
    NodeClaimController,
    NodeClaimOptions,
    setup_nodeclaim_controller,
)

__all__ = ["FINALIZER", "NodeClaimController", "NodeClaimOptions", "setup_nodeclaim_controller"]
