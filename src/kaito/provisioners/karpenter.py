"""The ``karpenter`` NodeProvisioner: one static-capacity NodePool per Workspace.

Why a NodePool and not NodeClaims: with a real Karpenter-core provider in the cluster, Karpenter
owns the claim lifecycle (launch, registration, drift, repair); kaito only says "keep N nodes of
this type for this Workspace" through ``spec.replicas`` (Karpenter's static capacity), and reads
the nodes Karpenter labels with the pool's name.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

from kaito.api.names import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito.api.nodeclaim import LABEL_NODEPOOL, NODECLAIM, NODEPOOL
from kaito.nodes import (
    LABEL_INSTANCE_TYPE,
    NODE,
    NodeRequest,
    NodeStatus,
    Placement,
    gpu_taint,
    is_node_ready,
)
from kaito.provisioners.gpu_provisioner import claim_failure, workspace_gone
from kaito.provisioners.options import KarpenterOptions
from kaito.runtime import GVK, AlreadyExistsError, Manager, NotFoundError, is_true

LABEL_MANAGED_BY = "karpenter.kaito.sh/managed-by"
LABEL_WS_NAME = "karpenter.kaito.sh/workspace-name"
LABEL_WS_NAMESPACE = "karpenter.kaito.sh/workspace-namespace"
LABEL_INITIALIZED = "karpenter.sh/initialized"
MAX_NAME = 63

#: The node class Karpenter's provider expects; kwok's by default (the local peer), override for a
#: real cloud (AKSNodeClass on Azure, EC2NodeClass on AWS).
DEFAULT_NODE_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def nodepool_name(namespace: str, name: str) -> str:
    """``<ns>-<name>``; cut to 63 characters with a hash suffix so two long names never collide."""
    full = f"{namespace}-{name}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: MAX_NAME - 9].rstrip('-.')}-{digest}"


def nodepool_manifest(request: NodeRequest, node_class: dict[str, str] | None = None) -> dict[str, Any]:
    if not request.instance_type:
        raise ValueError(
            "resource.instanceType is empty: the karpenter backend needs an instance type for the "
            "NodePool's requirement (set it, or use --node-provisioner byo)"
        )
    labels = {
        LABEL_MANAGED_BY: "kaito",
        LABEL_WS_NAME: request.workspace,
        LABEL_WS_NAMESPACE: request.namespace,
    }
    # The user's labels first, kaito's after, so a matchLabels entry can never override the
    # labels kaito finds the nodes by. karpenter.sh/nodepool is Karpenter's to write (the pool's
    # name, which placement selects on); a user's value for it is not passed on.
    user = {
        k: v
        for k, v in ((request.label_selector or {}).get("matchLabels") or {}).items()
        if k != LABEL_NODEPOOL
    }
    node_labels = {
        **user,
        **labels,
        LABEL_WORKSPACE: request.workspace,
        LABEL_WORKSPACE_NAMESPACE: request.namespace,
    }
    return {
        "apiVersion": NODEPOOL.api_version,
        "kind": NODEPOOL.kind,
        "metadata": {"name": nodepool_name(request.namespace, request.workspace), "labels": dict(labels)},
        "spec": {
            "replicas": request.count,
            "template": {
                "metadata": {"labels": node_labels},
                "spec": {
                    "nodeClassRef": dict(node_class or DEFAULT_NODE_CLASS),
                    "requirements": [
                        {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [request.instance_type]},
                    ],
                    "taints": [gpu_taint()],
                    "expireAfter": "Never",
                },
            },
            "disruption": {
                "consolidateAfter": "0s",
                "budgets": [{"nodes": "1", "reasons": ["Drifted"]}],
            },
        },
    }


class KarpenterProvisioner:
    """NodeProvisioner backend ``karpenter``."""

    name = "karpenter"

    def __init__(
        self,
        manager: Manager,
        options: KarpenterOptions | None = None,
        *,
        node_class: dict[str, str] | None = None,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        # ``node_class`` (tests, embedders) > options (``--karpenter-node-class``) > kwok's.
        configured = (options or KarpenterOptions()).node_class
        self.node_class: dict[str, str] = (
            node_class or (configured.as_ref() if configured else None) or dict(DEFAULT_NODE_CLASS)
        )
        #: Pools this backend POSTed that the cache had not shown yet (see release_gone).
        self._unseen: set[str] = set()
        for gvk in self.watched_kinds():
            manager.cache.get_informer(gvk)

    def watched_kinds(self) -> Sequence[GVK]:
        return (NODEPOOL, NODECLAIM, NODE)

    async def _pool(self, request: NodeRequest) -> dict[str, Any] | None:
        try:
            return await self.client.get(NODEPOOL, nodepool_name(request.namespace, request.workspace))
        except NotFoundError:
            return None

    async def provision_nodes(self, request: NodeRequest) -> None:
        want = nodepool_manifest(request, self.node_class)
        pool = await self._pool(request)
        if pool is None:
            self._unseen.add(want["metadata"]["name"])
            # AlreadyExists: the cache had not shown the pool yet (made by an earlier reconcile,
            # or before a restart). It is there; its watch event brings the Workspace back to
            # compare it with what is wanted.
            with contextlib.suppress(AlreadyExistsError):
                await self.client.create(want)
            return
        self._unseen.discard(want["metadata"]["name"])
        spec = pool.get("spec") or {}
        tmpl = (spec.get("template") or {}).get("spec") or {}
        if (
            spec.get("replicas") != request.count
            or tmpl.get("requirements") != want["spec"]["template"]["spec"]["requirements"]
        ):
            patch = {"spec": {"replicas": request.count, "template": want["spec"]["template"]}}
            await self.client.patch(NODEPOOL, want["metadata"]["name"], patch)

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        pool = nodepool_name(request.namespace, request.workspace)
        nodes = await self.client.list(NODE, label_selector={LABEL_NODEPOOL: pool}, copy=False)
        ready = sorted(
            n["metadata"]["name"]
            for n in nodes
            if is_node_ready(n)
            and (n["metadata"].get("labels") or {}).get(LABEL_INITIALIZED) == "true"
            and not n["metadata"].get("deletionTimestamp")
        )
        ok = len(ready) >= request.count
        failure = ""
        if not ok:
            for claim in await self.client.list(NODECLAIM, label_selector={LABEL_NODEPOOL: pool}, copy=False):
                if not is_true(claim, "Ready"):
                    failure = claim_failure(claim)
                    if failure:
                        failure = f"NodeClaim {claim['metadata']['name']}: {failure}"
                        break
        if ok:
            reason, message = "NodesReady", f"{len(ready)}/{request.count} nodes of NodePool {pool} ready"
        elif failure:
            reason, message = "NodeClaimFailed", failure
        else:
            reason, message = "NodesNotReady", f"{len(ready)}/{request.count} nodes of NodePool {pool} ready"
        cond = {
            "type": "NodeClaimReady",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
        }
        return NodeStatus(ready=ok, nodes=ready, reason=reason, message=message, conditions=[cond])

    async def delete_nodes(self, request: NodeRequest) -> bool:
        """Delete the pool by name, whatever the cache shows (a pool created a moment ago may not
        be in it yet, and a NodePool has no owner to be collected with); True once the server
        has neither the pool nor any of its claims. API calls only while a Workspace is being
        deleted."""
        pool_name = nodepool_name(request.namespace, request.workspace)
        try:
            await self.client.delete(NODEPOOL, pool_name)
            pool_left = True
        except NotFoundError:
            pool_left = False
            self._unseen.discard(pool_name)
        if pool_left:
            return False
        claims = await self.client.list(NODECLAIM, label_selector={LABEL_NODEPOOL: pool_name}, cached=False)
        return not claims

    async def release_gone(self, namespace: str, workspace: str) -> None:
        """The Workspace is gone from the cache: delete the pool this backend created for it,
        whether the cache shows it yet or not (the apiserver may delete a Workspace outright
        although our finalizer was just added; see ``GPUProvisioner.release_gone``). Free
        unless there is such a pool; then an uncached GET must confirm the Workspace is gone."""
        name = nodepool_name(namespace, workspace)
        ours = name in self._unseen or self.manager.cache.get(NODEPOOL, name) is not None
        if not ours or not await workspace_gone(self.client, namespace, workspace):
            return  # no pool of ours, or the Workspace is there after all: the cache trails it
        await self.client.delete(NODEPOOL, name, ignore_not_found=True)
        self._unseen.discard(name)

    def placement(self, request: NodeRequest, status: NodeStatus) -> Placement:
        """The nodes Karpenter labels with the Workspace's pool, tolerating the pool's GPU taint."""
        expr = [
            {
                "key": LABEL_NODEPOOL,
                "operator": "In",
                "values": [nodepool_name(request.namespace, request.workspace)],
            }
        ]
        return Placement(
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": expr}]
                    }
                }
            }
        )
