"""The ``gpu-provisioner`` NodeProvisioner: one ``karpenter.sh/v1`` NodeClaim per missing node.

Why NodeClaims shaped exactly like upstream Kaito's: the claim is the contract between the
workspace controller and whatever fulfils it. Keeping upstream's shape (name, labels,
annotations, nodeClassRef, taint, requirements, storage) means Azure's Go gpu-provisioner can
serve kaito's claims and kaito's node-provisioner (``kaito.controllers.nodeclaim``) can serve
upstream's, so either half can be swapped.

Everything here reads the informer cache; the only API calls are the creates and deletes that
change the number of claims.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from kaito.api.names import ANNOTATION_NODE_IMAGE_FAMILY, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito.api.nodeclaim import (
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    KAITO_NODEPOOL,
    LABEL_INSTANCE_TYPE,
    LABEL_NODEPOOL,
    LAUNCHED,
    READY,
)
from kaito.nodes import NodeRequest, NodeStatus
from kaito.provisioners.options import Cloud, GPUProvisionerOptions, resolve_cloud
from kaito.runtime import GVK, Manager, NotFoundError, get_condition, is_true

NODECLAIM = GVK("karpenter.sh", "v1", "NodeClaim")
NODEPOOL = GVK("karpenter.sh", "v1", "NodePool")
NODE = GVK("", "v1", "Node")

LABEL_OS = "kubernetes.io/os"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_AZURE_SKU = "karpenter.azure.com/sku-name"
LABEL_AWS_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
DEFAULT_NODE_IMAGE_FAMILY = "ubuntu"
DEFAULT_STORAGE = "1024Gi"
GPU_RESOURCE = "nvidia.com/gpu"


#: nodeClassRef per cloud: what upstream Kaito v0.12 writes.
NODE_CLASS_REFS: dict[str, dict[str, str]] = {
    "azure": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
    "aws": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
}


def nodeclaim_name(namespace: str, name: str, now: float | None = None) -> str:
    """``ws`` + 9 hex: upstream hashes namespace, name and the time so a replacement gets a new
    name (a claim being deleted and its successor never collide)."""
    stamp = f"{namespace}{name}{now if now is not None else time.time_ns()}"
    return "ws" + hashlib.sha256(stamp.encode()).hexdigest()[:9]


def workspace_labels(request: NodeRequest) -> dict[str, str]:
    return {LABEL_WORKSPACE: request.workspace, LABEL_WORKSPACE_NAMESPACE: request.namespace}


def nodeclaim_manifest(
    request: NodeRequest, *, cloud: Cloud = "azure", name: str | None = None
) -> dict[str, Any]:
    """The NodeClaim upstream Kaito writes for one node of ``request``."""
    if not request.instance_type:
        raise ValueError(
            "resource.instanceType is empty: the gpu-provisioner backend needs an instance type "
            "to create nodes (set it, or use --node-provisioner byo with existing nodes)"
        )
    if cloud not in NODE_CLASS_REFS:
        raise ValueError(f"cloud {cloud!r} is not supported: use azure or aws")
    labels = {LABEL_NODEPOOL: KAITO_NODEPOOL, **workspace_labels(request)}
    labels.update((request.label_selector or {}).get("matchLabels") or {})
    family = request.annotations.get(ANNOTATION_NODE_IMAGE_FAMILY) or DEFAULT_NODE_IMAGE_FAMILY
    requirements: list[dict[str, Any]] = [
        {"key": LABEL_NODEPOOL, "operator": "In", "values": [KAITO_NODEPOOL]},
        {"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [request.instance_type]},
        {"key": LABEL_OS, "operator": "In", "values": ["linux"]},
    ]
    if cloud == "azure":
        requirements.append({"key": LABEL_AZURE_SKU, "operator": "In", "values": [request.instance_type]})
    else:
        requirements.append({"key": LABEL_AWS_GPU_COUNT, "operator": "Gt", "values": ["0"]})
    storage = f"{request.storage_gib}Gi" if request.storage_gib else DEFAULT_STORAGE
    return {
        "apiVersion": NODECLAIM.api_version,
        "kind": NODECLAIM.kind,
        "metadata": {
            "name": name or nodeclaim_name(request.namespace, request.workspace),
            "labels": labels,
            "annotations": {
                ANNOTATION_DO_NOT_DISRUPT: "true",
                ANNOTATION_NODE_IMAGE_FAMILY: family,
            },
        },
        "spec": {
            "nodeClassRef": dict(NODE_CLASS_REFS[cloud]),
            "taints": [{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NoSchedule"}],
            "requirements": requirements,
            "resources": {"requests": {"ephemeral-storage": storage}},
        },
    }


def claim_failure(claim: dict[str, Any]) -> str:
    """The cloud's refusal recorded on a claim (``Code: message``), or ''."""
    for type_ in (LAUNCHED, "Registered", "Initialized"):
        cond = get_condition(claim, type_)
        if cond is not None and cond.get("status") == "False" and cond.get("message"):
            return f"{cond.get('reason', '')}: {cond['message']}"
    return ""


def is_node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _deleting(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _created(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


class GPUProvisioner:
    """NodeProvisioner backend ``gpu-provisioner`` (the default, as upstream)."""

    name = "gpu-provisioner"

    def __init__(
        self, manager: Manager, options: GPUProvisionerOptions | None = None, *, cloud: str | None = None
    ) -> None:
        self.manager = manager
        self.client = manager.client
        # ``cloud`` (tests, embedders) > options (``--cloud-provider``) > $CLOUD_PROVIDER > azure.
        self.cloud: Cloud = (
            resolve_cloud(cloud) if cloud else (options or GPUProvisionerOptions()).cloud()
        )
        #: Claims created here that the cache had not listed yet, per (namespace, workspace).
        self._unseen: dict[tuple[str, str], set[str]] = {}
        # Informers up front, so reads are cached from the first reconcile on.
        for gvk in self.watched_kinds():
            manager.cache.get_informer(gvk)

    def watched_kinds(self) -> Sequence[GVK]:
        return (NODECLAIM, NODE)

    # -- reads (cache) ---------------------------------------------------------------------
    async def _claims(self, request: NodeRequest) -> list[dict[str, Any]]:
        claims = await self.client.list(NODECLAIM, label_selector=workspace_labels(request), copy=False)
        return sorted(claims, key=lambda c: (_created(c), c["metadata"]["name"]))

    async def _node(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(NODE, name, copy=False)
        except NotFoundError:
            return None

    # -- NodeProvisioner ---------------------------------------------------------------------
    async def _created_unseen(self, request: NodeRequest, listed: list[dict[str, Any]]) -> int:
        """Claims this backend created that the cache does not list yet. Claim names are random,
        so without this a reconcile right after a create (the Workspace's own status write
        triggers one) sees a stale cache and creates a second claim. Each is checked against the
        apiserver, so one deleted meanwhile stops counting; API calls happen only in that window."""
        key = (request.namespace, request.workspace)
        names = {c["metadata"]["name"] for c in listed}
        pending = self._unseen.get(key, set())
        for name in list(pending):
            if name in names:
                pending.discard(name)
                continue
            try:
                live = await self.client.get(NODECLAIM, name, cached=False)
            except NotFoundError:
                pending.discard(name)
                continue
            if _deleting(live):
                pending.discard(name)
        if not pending:
            self._unseen.pop(key, None)
        return len(pending)

    async def provision_nodes(self, request: NodeRequest) -> None:
        listed = await self._claims(request)
        claims = [c for c in listed if not _deleting(c)]
        unseen = await self._created_unseen(request, listed)
        usable_preferred = [n for n in request.preferred_nodes if await self._usable_preferred(n, request)]
        want = max(request.count - len(usable_preferred), 0)
        if len(claims) + unseen < want:
            for _ in range(want - len(claims) - unseen):
                created = await self.client.create(nodeclaim_manifest(request, cloud=self.cloud))
                key = (request.namespace, request.workspace)
                self._unseen.setdefault(key, set()).add(created["metadata"]["name"])
        elif len(claims) > want:
            # Keep the claims furthest along: drop not-Ready ones first, then the newest.
            ranked = sorted(claims, key=lambda c: (is_true(c, READY), _created(c)), reverse=True)
            for claim in ranked[want:]:
                await self.client.delete(NODECLAIM, claim["metadata"]["name"], ignore_not_found=True)

    async def _usable_preferred(self, name: str, request: NodeRequest) -> bool:
        node = await self._node(name)
        if node is None or not is_node_ready(node):
            return False
        labels = (node.get("metadata") or {}).get("labels") or {}
        return not request.instance_type or labels.get(LABEL_INSTANCE_TYPE) == request.instance_type

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        claims = await self._claims(request)
        nodes: list[str] = [n for n in request.preferred_nodes if await self._usable_preferred(n, request)]
        failure = ""
        for claim in claims:
            if _deleting(claim):
                continue
            status = claim.get("status") or {}
            node_name = status.get("nodeName")
            if is_true(claim, READY) and node_name:
                node = await self._node(node_name)
                if node is not None and is_node_ready(node) and not _deleting(node):
                    nodes.append(node_name)
                    continue
            if not failure:
                reason = claim_failure(claim)
                if reason:
                    failure = f"NodeClaim {claim['metadata']['name']}: {reason}"
        nodes = sorted(set(nodes))
        ready = len(nodes) >= request.count
        if ready:
            reason, message = "NodeClaimsReady", f"{len(nodes)}/{request.count} nodes ready"
        elif failure:
            reason, message = "NodeClaimFailed", failure
        else:
            reason = "NodeClaimNotReady"
            message = f"{len(nodes)}/{request.count} nodes ready; waiting for NodeClaims to become Ready"
        cond = {
            "type": "NodeClaimReady",
            "status": "True" if ready else "False",
            "reason": reason,
            "message": message,
        }
        return NodeStatus(ready=ready, nodes=nodes, reason=reason, message=message, conditions=[cond])

    async def delete_nodes(self, request: NodeRequest) -> bool:
        claims = await self._claims(request)
        for claim in claims:
            if not _deleting(claim):
                await self.client.delete(NODECLAIM, claim["metadata"]["name"], ignore_not_found=True)
        return not claims

    def node_affinity(self, request: NodeRequest, status: NodeStatus) -> dict[str, Any]:
        terms: list[dict[str, Any]] = [
            {
                "matchExpressions": [
                    {"key": LABEL_WORKSPACE, "operator": "In", "values": [request.workspace]},
                    {"key": LABEL_WORKSPACE_NAMESPACE, "operator": "In", "values": [request.namespace]},
                ]
            }
        ]
        if request.preferred_nodes:
            terms.append(
                {
                    "matchExpressions": [
                        {"key": LABEL_HOSTNAME, "operator": "In", "values": sorted(request.preferred_nodes)}
                    ]
                }
            )
        return {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
