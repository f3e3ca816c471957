"""Bring your own nodes: the Workspace runs on Nodes the user already has.

Nothing is created or deleted. A Node counts when it matches ``resource.labelSelector`` (and the
instance type when the Workspace names one), is Ready, is schedulable and has the GPUs a pod
asks for, in the resource the pod asks them of (``nvidia.com/gpu``, or a MIG slice's
``nvidia.com/mig-<profile>`` under ``resource.partition``). ``preferredNodes`` are taken first.
Every read is from the informer cache, so the check costs no API request; the workspace
controller's Node watch brings the Workspace back when a node appears, goes Ready or changes
labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kaito.api import names
from kaito.api.meta import selector_matches
from kaito.nodes import (
    GPU_RESOURCE,
    LABEL_HOSTNAME,
    LABEL_INSTANCE_TYPE,
    LABEL_OS,
    NODE,
    NodeProvisioner,
    NodeRequest,
    NodeStatus,
    Placement,
    gpu_taint,
    is_node_ready,
    node_gpus,
    node_shape,
)
from kaito.presets.partition import mig_profile_problem, mig_resource
from kaito.provisioners.options import BYOOptions
from kaito.runtime import GVK, Manager


def selector_affinity_terms(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The label selector as node-affinity match expressions (matchLabels become In [value])."""
    exprs: list[dict[str, Any]] = [
        {"key": k, "operator": "In", "values": [v]}
        for k, v in sorted((selector.get("matchLabels") or {}).items())
    ]
    for req in selector.get("matchExpressions") or ():
        expr: dict[str, Any] = {"key": req["key"], "operator": req["operator"]}
        if req.get("values"):
            expr["values"] = list(req["values"])
        exprs.append(expr)
    return exprs


class BYOProvisioner:
    """``--node-provisioner byo``: select the user's Nodes; never create or delete any."""

    name = "byo"

    def __init__(self, manager: Manager, options: BYOOptions | None = None) -> None:
        # BYOOptions is empty (nothing to choose); taken so every backend is built alike.
        self._client = manager.client

    def watched_kinds(self) -> Sequence[GVK]:
        return ()  # Nodes are always watched by the workspace controller

    async def provision_nodes(self, request: NodeRequest) -> None:
        return None

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        cache = self._client.cache
        return assess(request, cache.list(NODE) if cache is not None else [])

    async def delete_nodes(self, request: NodeRequest) -> bool:
        return True  # the nodes are the user's

    def placement(self, request: NodeRequest, status: NodeStatus) -> Placement:
        """The nodes the selector (and instance type) match, tolerating the GPU taint that GPU
        nodes (AKS GPU pools, kaito's own) carry."""
        exprs = selector_affinity_terms(request.label_selector)
        if request.instance_type:
            exprs.append({"key": LABEL_INSTANCE_TYPE, "operator": "In", "values": [request.instance_type]})
        return Placement(
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": exprs}]
                    }
                }
            }
        )


def candidates(request: NodeRequest, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes the Workspace may use, preferred ones first, then by name."""
    out = []
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if not selector_matches(request.label_selector, labels):
            continue
        if request.instance_type and labels.get(LABEL_INSTANCE_TYPE) != request.instance_type:
            continue
        out.append(node)
    preferred = {n: i for i, n in enumerate(request.preferred_nodes)}
    out.sort(key=lambda n: (preferred.get(n["metadata"]["name"], len(preferred)), n["metadata"]["name"]))
    return out


def assess(request: NodeRequest, nodes: list[dict[str, Any]]) -> NodeStatus:
    """Which of ``nodes`` the Workspace may use, and what is missing (pure: tests call it)."""
    usable: list[str] = []
    not_ready: list[str] = []
    too_small: list[str] = []
    for node in candidates(request, nodes):
        name = node["metadata"]["name"]
        if not is_node_ready(node) or (node.get("spec") or {}).get("unschedulable"):
            not_ready.append(name)
        elif request.gpus_per_node and node_gpus(node, request.gpu_resource) < request.gpus_per_node:
            too_small.append(name)
        else:
            usable.append(name)
    byo_claim = {
        "type": names.NODE_CLAIM_READY,
        "status": "True",
        "reason": "BringYourOwnNodes",
        "message": "the Workspace runs on existing nodes; no NodeClaims are made",
    }
    if len(usable) >= request.count:
        return NodeStatus(
            ready=True,
            nodes=usable[: request.count],
            reason="NodesReady",
            message=f"{request.count} of {request.count} required nodes are Ready",
            conditions=[byo_claim],
        )
    missing = request.count - len(usable)
    what = describe_request(request)
    detail = []
    if not_ready:
        detail.append(f"{len(not_ready)} matching not Ready ({', '.join(not_ready[:3])})")
    if too_small:
        unit = "GPUs" if request.gpu_resource == GPU_RESOURCE else request.gpu_resource
        detail.append(
            f"{len(too_small)} with fewer than {request.gpus_per_node} {unit} ({', '.join(too_small[:3])})"
        )
    extra = f"; {'; '.join(detail)}" if detail else ""
    return NodeStatus(
        ready=False,
        nodes=usable,
        reason="NodesNotEnough",
        message=(
            f"{missing} more node(s) needed: {len(usable)} of {request.count} Ready nodes match "
            f"{what}{extra}; add or label nodes"
        ),
        conditions=[byo_claim],
    )


def describe_request(request: NodeRequest) -> str:
    """``apps=phi-3, instance type Standard_NC6s_v3`` for messages."""
    parts = [f"{k}={v}" for k, v in sorted((request.label_selector.get("matchLabels") or {}).items())]
    for req in request.label_selector.get("matchExpressions") or ():
        parts.append(f"{req.get('key')} {req.get('operator')} {list(req.get('values') or [])}".strip())
    text = "selector " + (", ".join(parts) or "<none>")
    if request.instance_type:
        text += f" and instance type {request.instance_type}"
    return text


def gpu_node_manifest(
    name: str,
    instance_type: str,
    labels: dict[str, str] | None = None,
    *,
    fake: bool = True,
    mig_profile: str | None = None,
) -> dict[str, Any]:
    """A Node as AKS registers a GPU agent-pool VM of ``instance_type`` (GPU feature-discovery
    labels, ``nvidia.com/gpu`` capacity, the ``sku=gpu`` taint), plus the user's ``labels``.

    ``mig_profile`` (e.g. ``1g.10gb``): every GPU cut into slices of that profile, as the GPU
    Operator's mig-manager leaves a node under the device plugin's "mixed" strategy: the slices
    are advertised as ``nvidia.com/mig-<profile>`` instead of ``nvidia.com/gpu``, with the
    ``nvidia.com/mig.config`` labels saying so.

    For clusters without real GPUs: ``make run``, tests and benchmarks create these for kwok to
    run (``fake`` adds kwok's annotation), and BYO Workspaces select them like real ones.
    """
    sku = node_shape(instance_type).sku
    if sku is None:
        raise ValueError(
            f"instance type {instance_type!r} is not in kaito's GPU SKU table (kaito presets skus)"
        )
    gpu_labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": sku.gpu_model,
        "nvidia.com/gpu.count": str(sku.gpu_count),
        "nvidia.com/gpu.memory": str(int(sku.gpu_memory_gib * 1024)),
        "accelerator": "nvidia",
    }
    node_labels = {
        **gpu_labels,
        LABEL_HOSTNAME: name,
        LABEL_OS: "linux",
        "kubernetes.io/arch": "amd64",
        LABEL_INSTANCE_TYPE: sku.name,
        "beta.kubernetes.io/instance-type": sku.name,
        "kubernetes.azure.com/agentpool": "gpu",
        "type": "kwok",
        **(labels or {}),
    }
    capacity = {
        "cpu": "32",
        "memory": "256Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(sku.gpu_count),
    }
    if mig_profile is not None:
        problem = mig_profile_problem(mig_profile)
        if problem:
            raise ValueError(problem)
        compute = int(mig_profile.split("g.", 1)[0])
        slices = sku.gpu_count * (7 // compute if compute <= 3 else 1)  # of a GPU's 7 compute slices
        node_labels |= {
            "nvidia.com/mig.config": f"all-{mig_profile}",
            "nvidia.com/mig.config.state": "success",
            "nvidia.com/mig.strategy": "mixed",
            f"{mig_resource(mig_profile)}.count": str(slices),
        }
        capacity[GPU_RESOURCE] = "0"
        capacity[mig_resource(mig_profile)] = str(slices)
    annotations = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"} if fake else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": annotations},
        "spec": {"taints": [gpu_taint()]},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def _check(p: BYOProvisioner) -> NodeProvisioner:
    return p  # mypy: BYOProvisioner satisfies the protocol
