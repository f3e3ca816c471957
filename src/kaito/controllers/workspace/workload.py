"""The seam between the Workspace reconciler and what a Workspace runs.

The reconciler does what every Workspace needs, whatever it runs: the finalizer, the revision
number, the nodes (through the NodeProvisioner), the status write and the deletion order. A
:class:`Workload` does the rest for one kind of Workspace: :mod:`.inference` (a StatefulSet and
its Services) and :mod:`.tuning` (a Job) are peers behind this protocol. A workload never
imports the reconciler and the two never import each other (import-linter contracts in
pyproject.toml); what they share with the reconciler is this module and the shared helpers
(``status``, ``labels``, ``podsecurity``, ``options``).

A reconcile, in the reconciler's words::

    plan    = await workload.plan(ws, model, digest)          # may raise Refused(report)
    request = workload.node_request(ws, model, plan)         # the one NodeRequest of the pass
    nodes   = provision + ensure ready (NodeProvisioner)
    report  = await workload.reconcile(Step(ws, model, plan, revision, request, nodes))
    status written from report.status, only if it differs; requeue from report.requeue_after

Workloads compute the status; they do not write it (one writer, :mod:`.statuswriter`, holds
the rules: write only on a difference, hold message-only changes, one Event per transition).
See docs/design/workspace-seam.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from kaito.api.workspace import Workspace
from kaito.controllers.workspace.options import WorkspaceControllerOptions
from kaito.controllers.workspace.status import Check
from kaito.nodes import GPU_RESOURCE, NodeProvisioner, NodeRequest, NodeStatus
from kaito.runtime import GVK, Client, InformerCache, Writer

Obj = dict[str, Any]
P = TypeVar("P")


@dataclass(frozen=True)
class WorkloadDeps:
    """What a workload may use, handed in by the reconciler that owns it."""

    client: Client
    #: The manager's informer cache (plain reads); the writer's :meth:`Writer.get` is the read
    #: that also sees this controller's own writes the cache has not shown yet.
    cache: InformerCache
    #: The controller's writes: apply-if-changed, background writes, own writes vs the cache.
    writer: Writer
    provisioner: NodeProvisioner
    options: WorkspaceControllerOptions


@dataclass(frozen=True)
class Step(Generic[P]):
    """One reconcile of a Workspace, as far as the reconciler took it."""

    #: The Workspace as stored, with kaito's finalizer and revision annotation on it.
    ws: Obj
    model: Workspace
    #: What :meth:`Workload.plan` decided for this spec.
    plan: P
    #: The revision number (``workspace.kaito.io/revision``) the workload's objects carry.
    revision: int
    #: The NodeRequest the nodes were asked for (node affinity is asked with it too).
    request: NodeRequest
    nodes: NodeStatus


@dataclass
class Report:
    """What a workload wants written back: the Workspace's status and when to look again."""

    #: The Workspace with the status it should have (written only where it differs from the
    #: stored one); None: leave the status as it is.
    status: Obj | None = None
    requeue_after: float | None = None
    #: Hold a change of condition messages alone (a scheduler's recount while it retries):
    #: written at most once per ``statuswriter.STATUS_MESSAGE_INTERVAL``.
    hold_message_only: bool = False


class Refused(Exception):
    """The workload cannot plan the Workspace as written: ``report`` (a failed status, maybe a
    retry) is written and the reconcile ends before any node is asked for."""

    def __init__(self, report: Report) -> None:
        super().__init__("workload refused the Workspace")
        self.report = report


@dataclass
class Teardown:
    """One step of a Workspace's deletion: objects to delete, and what the status says meanwhile."""

    #: The ``Deleting`` status message while these go.
    message: str
    #: The Workspace's own objects still there (kind, cached object).
    objects: list[tuple[GVK, Obj]] = field(default_factory=list)
    #: Delete with ``propagationPolicy: Foreground`` (the next step waits for dependents, pods).
    foreground: bool = False
    #: A Normal ``Deleting`` Event's message when the delete is sent (None: no Event).
    event: str | None = None


class Footprint(Protocol):
    """What a workload leaves in the cluster and in memory: the part the reconciler needs of
    every workload, whatever kind the Workspace at hand is."""

    #: Kinds the workload writes: the controller owns (watches) them and the writer tracks
    #: their informers, so remembered writes are dropped once the cache shows them.
    owns: tuple[GVK, ...]

    def teardown(self, ws: Obj) -> list[Teardown]:
        """Deletion steps, in order, for this workload's objects of ``ws`` (from the cache);
        steps with no objects left are skipped."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """The Workspace is gone: drop what is kept about it."""
        ...


class Workload(Footprint, Protocol[P]):
    """One kind of Workspace (inference, tuning): what it needs and what it runs."""

    #: Whether each distinct spec is recorded as a ControllerRevision with its own number
    #: (rolled pods); otherwise the revision stays 1.
    keeps_revisions: bool

    async def plan(self, ws: Obj, model: Workspace, digest: str) -> P:
        """Decide how to run this spec (``digest``: its hash, for memoising). Raises
        :class:`Refused` when it cannot be run as written."""
        ...

    def node_request(self, ws: Obj, model: Workspace, plan: P) -> NodeRequest:
        """The nodes ``plan`` runs on."""
        ...

    def release_request(self, ws: Obj, model: Workspace) -> NodeRequest:
        """The request naming the nodes to release when the Workspace is deleted (no I/O)."""
        ...

    async def reconcile(self, step: Step[P]) -> Report:
        """Write the workload's objects for ``step`` (only what changed) and say what the
        status should be."""
        ...


def node_request(
    ws: Obj,
    model: Workspace,
    *,
    count: int | None = None,
    storage_gib: int | None = None,
    gpus_per_node: int = 0,
    gpu_resource: str = GPU_RESOURCE,
) -> NodeRequest:
    """The one way a Workspace becomes a NodeRequest; ``count`` None: ``resource.count`` or 1."""
    meta = ws["metadata"]
    return NodeRequest(
        workspace=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        instance_type=model.resource.instance_type,
        count=count if count is not None else (model.resource.count or 1),
        label_selector=model.resource.label_selector.to_dict(),
        preferred_nodes=tuple(model.resource.preferred_nodes or ()),
        storage_gib=storage_gib,
        gpus_per_node=gpus_per_node,
        gpu_resource=gpu_resource,
        annotations=dict(meta.get("annotations") or {}),
    )


def unparsed_request(ws: Obj) -> NodeRequest:
    """A Workspace that no longer parses may still have nodes: the backends find them by the
    Workspace's name and namespace, which is all this request carries."""
    meta = ws["metadata"]
    return NodeRequest(
        workspace=meta["name"],
        namespace=meta["namespace"],
        uid=meta.get("uid", ""),
        instance_type=None,
        count=0,
    )


def resource_check(nodes: NodeStatus) -> Check:
    """ResourceReady's verdict from the provisioner's answer."""
    return Check(
        nodes.ready, nodes.reason or ("NodesReady" if nodes.ready else "NodesNotReady"), nodes.message
    )


__all__ = [
    "Footprint",
    "Refused",
    "Report",
    "Step",
    "Teardown",
    "Workload",
    "WorkloadDeps",
    "node_request",
    "resource_check",
    "unparsed_request",
]
