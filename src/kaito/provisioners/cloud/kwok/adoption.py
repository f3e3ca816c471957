"""Serving claims with real nodes: adopt an idle machine's own Node, release it when done."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from kaito.api.nodeclaim import NODECLAIM
from kaito.nodes import (
    ANNOTATION_ADOPTED,
    GPU_RESOURCE,
    LABEL_INSTANCE_TYPE,
    LABEL_NODECLAIM,
    NODE,
    CloudError,
    Instance,
    InstanceState,
    NodeShape,
    claim_instance_type,
    claim_node_labels,
    claim_taints,
    is_adopted,
    is_node_ready,
    node_shape,
)
from kaito.provisioners.cloud.kwok.names import (
    ANNOTATION_ADOPTION,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_PROVIDER_PREFIX,
    REGISTRATION_LABELS,
)
from kaito.runtime import Client, ConflictError, NotFoundError


def epoch(ts: str | None) -> float:
    if not ts:
        return time.time()
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def held_by(node: dict[str, Any]) -> str:
    """The claim an adopted node is held for ("" when idle or never adopted)."""
    if not is_adopted(node):
        return ""
    annotations = node["metadata"].get("annotations") or {}
    if ANNOTATION_ADOPTION not in annotations:
        return ""
    return str((node["metadata"].get("labels") or {}).get(LABEL_NODECLAIM, ""))


class Adoption:
    """Serving claims with real nodes: a machine registers its own Node, so the cloud takes an idle
    one (label ``kaito.sh/kubelet=real``, no claim label) and makes it look like the instance the
    claim asked for; release undoes exactly what adoption changed.

    Claiming is one merge patch carrying the Node's resourceVersion: the claim label, the
    annotations, labels, taints and providerID all land together or not at all, and two claims
    racing for one node get one success and one Conflict (the loser picks again). The GPU count
    goes into ``status.capacity``/``allocatable`` through the status subresource, Kubernetes'
    documented way to advertise an extended resource for a node; the kubelet keeps an extended
    resource it did not write across its status updates (it merges into what the apiserver holds),
    so it stays until release removes it.
    """

    #: Attempts at claiming (or releasing) before giving up for this reconcile; each Conflict
    #: means another writer (the kubelet, another claim) changed the node meanwhile.
    attempts = 5

    def __init__(self, client: Client) -> None:
        self.client = client

    def instance(self, node: dict[str, Any]) -> Instance:
        meta = node["metadata"]
        labels = meta.get("labels") or {}
        record = adoption_record(node)
        capacity = dict((node.get("status") or {}).get("capacity") or {})
        if record.get("gpus") and not capacity.get(GPU_RESOURCE):
            capacity[GPU_RESOURCE] = str(record["gpus"])
        state = InstanceState.DELETING if meta.get("deletionTimestamp") else InstanceState.RUNNING
        return Instance(
            name=meta["name"],
            nodeclaim=str(labels.get(LABEL_NODECLAIM, "")),
            instance_type=str(labels.get(LABEL_INSTANCE_TYPE, "")),
            state=state,
            provider_id=(node.get("spec") or {}).get("providerID", ""),
            # Garbage collection's grace counts from the adoption, not from the machine's birth.
            created_at=float(record.get("at") or epoch(meta.get("creationTimestamp"))),
            labels=dict(labels),
            capacity=capacity,
        )

    async def adopt(self, claim: dict[str, Any]) -> Instance:
        name = claim["metadata"]["name"]
        instance_type = claim_instance_type(claim)
        shape = node_shape(instance_type)
        if shape.gpus == 0:
            raise CloudError(
                "SkuNotAvailable",
                f"instance type {instance_type} is not a GPU SKU kaito knows; use one from `kaito presets` "
                "SKU table (e.g. Standard_NC24ads_A100_v4)",
            )
        for _ in range(self.attempts):
            nodes = await self.client.list(
                NODE, label_selector={REAL_NODE_LABEL: REAL_NODE_VALUE}, cached=False
            )
            held = [n for n in nodes if held_by(n) == name]
            if held:
                # Adopted by an earlier call (create is idempotent): finish what it may not have.
                node = held[0]
                await self.advertise(node, adoption_record(node))
                return self.instance(await self.client.get(NODE, node["metadata"]["name"], cached=False))
            idle = sorted(
                (
                    n
                    for n in nodes
                    if not (n["metadata"].get("labels") or {}).get(LABEL_NODECLAIM)
                    and not n["metadata"].get("deletionTimestamp")
                    and not (n.get("spec") or {}).get("unschedulable")
                ),
                key=lambda n: (
                    epoch(n["metadata"].get("creationTimestamp")),
                    n["metadata"]["name"],
                ),
            )
            if not idle:
                raise CloudError(
                    "InsufficientCapacity",
                    f"no idle real node (label {REAL_NODE_LABEL}={REAL_NODE_VALUE}) for NodeClaim {name}: "
                    f"{_describe(nodes)}; start one with `kaito local up --node real`, or free one by "
                    "deleting the NodeClaim that holds it",
                )
            node = idle[0]
            patch, record = self._claim_patch(claim, node, instance_type, shape)
            try:
                node = await self.client.patch(NODE, node["metadata"]["name"], patch)
            except (ConflictError, NotFoundError):
                continue  # changed or gone under us: look again
            await self.advertise(node, record)
            return self.instance(node)
        raise CloudError(
            "AdoptionConflict",
            f"real nodes kept changing while NodeClaim {name} tried to adopt one; retrying",
            retryable=True,
        )

    def _claim_patch(
        self, claim: dict[str, Any], node: dict[str, Any], instance_type: str, shape: NodeShape
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        meta = node["metadata"]
        have = meta.get("labels") or {}
        wanted = {**claim_node_labels(claim), **shape.gpu_labels(), LABEL_INSTANCE_TYPE: instance_type}
        previous = {k: have.get(k) for k, v in wanted.items() if have.get(k) != v}
        taints = list((node.get("spec") or {}).get("taints") or [])
        keys = {(t.get("key"), t.get("effect")) for t in taints}
        added = [t for t in claim_taints(claim) if (t.get("key"), t.get("effect")) not in keys]
        capacity = (node.get("status") or {}).get("capacity") or {}
        # A machine with real GPUs (a device plugin advertises them) keeps its own count.
        gpus = shape.gpus if not capacity.get(GPU_RESOURCE) else 0
        record = {"labels": previous, "taints": added, "gpus": gpus, "at": time.time()}
        patch: dict[str, Any] = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "labels": {k: wanted[k] for k in previous},
                "annotations": {
                    ANNOTATION_ADOPTED: "true",
                    ANNOTATION_ADOPTION: json.dumps(record, sort_keys=True),
                },
            },
        }
        spec: dict[str, Any] = {}
        if added:
            spec["taints"] = taints + added
        if not (node.get("spec") or {}).get("providerID"):
            spec["providerID"] = REAL_PROVIDER_PREFIX + meta["name"]
        if spec:
            patch["spec"] = spec
        return patch, record

    @staticmethod
    def missing_gpus(node: dict[str, Any]) -> bool:
        """Whether the GPUs adoption advertises are not (or no longer) on the node."""
        gpus = int(adoption_record(node).get("gpus") or 0)
        status = node.get("status") or {}
        return bool(gpus) and any(
            (status.get(part) or {}).get(GPU_RESOURCE) != str(gpus) for part in ("capacity", "allocatable")
        )

    async def advertise(self, node: dict[str, Any], record: dict[str, Any]) -> None:
        """The SKU's GPUs as an extended resource (status subresource), unless already there."""
        gpus = int(record.get("gpus") or 0)
        status = node.get("status") or {}
        if not gpus or all(
            (status.get(part) or {}).get(GPU_RESOURCE) == str(gpus) for part in ("capacity", "allocatable")
        ):
            return
        value = str(gpus)
        await self.client.patch(
            NODE,
            node["metadata"]["name"],
            {"status": {"capacity": {GPU_RESOURCE: value}, "allocatable": {GPU_RESOURCE: value}}},
            subresource="status",
        )

    async def release(self, node_name: str, claim_name: str) -> bool:
        """Undo the adoption for ``claim_name``; True once the node is idle (or gone, or someone
        else's). What stays: ``spec.providerID`` (immutable once set) and ``kaito.sh/adopted``."""
        for _ in range(self.attempts):
            try:
                node = await self.client.get(NODE, node_name, cached=False)
            except NotFoundError:
                return True
            if held_by(node) != claim_name:
                return True
            record = adoption_record(node)
            if record.get("gpus"):
                # GPUs first: an idle node never advertises a GPU it does not have.
                await self.client.patch(
                    NODE,
                    node_name,
                    {"status": {"capacity": {GPU_RESOURCE: None}, "allocatable": {GPU_RESOURCE: None}}},
                    subresource="status",
                )
            meta = node["metadata"]
            labels: dict[str, Any] = {k: v for k, v in (record.get("labels") or {}).items()}
            labels.update({k: None for k in REGISTRATION_LABELS if k in (meta.get("labels") or {})})
            labels[LABEL_NODECLAIM] = None  # last in effect: the same patch makes the node idle
            ours = [(t.get("key"), t.get("value"), t.get("effect")) for t in record.get("taints") or ()]
            taints = [
                t
                for t in (node.get("spec") or {}).get("taints") or ()
                if (t.get("key"), t.get("value"), t.get("effect")) not in ours
            ]
            patch: dict[str, Any] = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "labels": labels,
                    "annotations": {ANNOTATION_ADOPTION: None},
                },
                "spec": {"taints": taints or None},
            }
            refs = meta.get("ownerReferences") or []
            kept = [r for r in refs if not (r.get("kind") == NODECLAIM.kind and r.get("name") == claim_name)]
            if len(kept) != len(refs):
                patch["metadata"]["ownerReferences"] = kept or None
            try:
                await self.client.patch(NODE, node_name, patch)
            except ConflictError:
                continue
            except NotFoundError:
                return True
            return True
        return False


def adoption_record(node: dict[str, Any]) -> dict[str, Any]:
    text = ((node["metadata"].get("annotations") or {}).get(ANNOTATION_ADOPTION)) or "{}"
    try:
        got = json.loads(text)
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def _describe(nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return "none is registered"
    parts = []
    for n in nodes:
        meta = n["metadata"]
        holder = (meta.get("labels") or {}).get(LABEL_NODECLAIM)
        if holder:
            why = f"held by NodeClaim {holder}"
        elif meta.get("deletionTimestamp"):
            why = "being deleted"
        elif (n.get("spec") or {}).get("unschedulable"):
            why = "cordoned"
        else:
            why = "idle" if is_node_ready(n) else "not Ready"
        parts.append(f"{meta['name']} {why}")
    return ", ".join(parts)


__all__ = ["Adoption", "adoption_record", "epoch", "held_by"]
