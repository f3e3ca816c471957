"""The NodeProvisioner protocol: how the workspace controller gets GPU nodes.

The controller is level-triggered, so each method is called on every reconcile and must be
idempotent and cheap when nothing changed (reads from the informer cache, no writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kaito.nodes.node import GPU_RESOURCE, gpu_tolerations
from kaito.presets import GPUSku, get_sku
from kaito.runtime import GVK


@dataclass(frozen=True)
class NodeRequest:
    """What one Workspace needs, in terms a backend understands (no Workspace model needed)."""

    workspace: str
    namespace: str
    #: The Workspace's uid: owner references and claim names derive from it.
    uid: str
    instance_type: str | None
    count: int
    #: ``resource.labelSelector`` as the API holds it (matchLabels / matchExpressions).
    label_selector: dict[str, Any] = field(default_factory=dict)
    preferred_nodes: tuple[str, ...] = ()
    #: Disk the preset needs on each node (GiB); backends that make nodes request it.
    storage_gib: int | None = None
    #: GPUs each node must have; 0 when unknown (BYO without GPU labels).
    gpus_per_node: int = 0
    #: The resource those GPUs are counted in: ``nvidia.com/gpu``, or a MIG slice's
    #: ``nvidia.com/mig-<profile>`` under ``resource.partition.mode: mig``.
    gpu_resource: str = GPU_RESOURCE
    #: ``metadata.annotations`` of the Workspace (node image family, bypass checks, ...).
    annotations: dict[str, str] = field(default_factory=dict)
    #: ``instance_type`` resolved against kaito's SKU table, once, when the request is made;
    #: None when it names no SKU kaito knows (or none at all). Backends read GPU facts here.
    sku: GPUSku | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sku", get_sku(self.instance_type) if self.instance_type else None)


@dataclass
class NodeStatus:
    """The answer of ``ensure_nodes_ready``: feeds ResourceReady / NodeClaimReady."""

    ready: bool
    #: Names of the Ready nodes the workload may use, in a stable order.
    nodes: list[str] = field(default_factory=list)
    #: A CamelCase reason and a one-line message for the conditions; the message carries the
    #: first real failure (a cloud error, the count still missing).
    reason: str = ""
    message: str = ""
    #: Set when readiness depends on time (a timeout) rather than on a watched object changing.
    requeue_after: float | None = None
    #: Backend-specific conditions to merge into the Workspace status (e.g. NodeClaimReady).
    conditions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Placement:
    """Where the workload's pods may run, as the backend that provides the nodes says: the pod
    ``affinity`` that pins them to those nodes and the ``tolerations`` of the taints those nodes
    carry. The workspace controller copies both into the pod spec and adds nothing of its own."""

    affinity: dict[str, Any]
    tolerations: list[dict[str, Any]] = field(default_factory=lambda: list(gpu_tolerations()))


class NodeProvisioner(Protocol):
    """A way of getting nodes for Workspaces: NodeClaims, a NodePool, or the user's own."""

    #: The ``--node-provisioner`` value that selects this backend.
    name: str

    def watched_kinds(self) -> Sequence[GVK]:
        """Kinds whose changes should requeue the owning Workspace (mapped back by the
        ``kaito.sh/workspace`` and ``kaito.sh/workspacenamespace`` labels)."""
        ...

    async def provision_nodes(self, request: NodeRequest) -> None:
        """Make what is missing (claims, a pool); remove the surplus. Idempotent."""
        ...

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        """Report whether ``request.count`` usable nodes are Ready, reading only the cache."""
        ...

    async def delete_nodes(self, request: NodeRequest) -> bool:
        """Start removing everything this backend made for the Workspace; True once all is gone."""
        ...

    def placement(self, request: NodeRequest, status: NodeStatus) -> Placement:
        """The affinity and tolerations that put the workload on the nodes this backend provides."""
        ...
