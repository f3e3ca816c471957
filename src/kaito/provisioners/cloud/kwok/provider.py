"""The ``kwok`` CloudProvider: a NodeClaim becomes a GPU Node object, made on the spot (see the
package docstring for who plays its kubelet)."""

from __future__ import annotations

from typing import Any

from kaito.api.nodeclaim import NODECLAIM
from kaito.nodes import (
    LABEL_INSTANCE_TYPE,
    LABEL_NODECLAIM,
    NODE,
    CloudError,
    Instance,
    InstanceState,
    claim_instance_type,
    claim_node_labels,
    claim_taints,
    node_shape,
)
from kaito.provisioners.cloud.kwok.adoption import Adoption, adoption_record, epoch, held_by
from kaito.provisioners.cloud.kwok.names import (
    AGENT_NODE_LABEL,
    AGENT_NODE_VALUE,
    LABEL_KWOK_CLOUD,
    PROVIDER_PREFIX,
    REAL_NODE_LABEL,
    REAL_NODE_VALUE,
    REAL_PROVIDER_PREFIX,
)
from kaito.provisioners.cloud.kwok.options import KwokOptions
from kaito.provisioners.cloud.kwok.selector import ClaimSelector
from kaito.runtime import AlreadyExistsError, Client, NotFoundError


class KwokCloudProvider:
    """Nodes named after their claims; ``create`` is idempotent by that name.

    ``local_nodes``: claims whose Nodes go to kaito's local node agent (None: none, all kwok).
    ``real_nodes``: claims served by adopting an idle real node (None: none); checked first.
    """

    name = "kwok"

    def __init__(
        self,
        client: Client,
        *,
        zone: str = "kwok-zone-a",
        local_nodes: ClaimSelector | None = None,
        real_nodes: ClaimSelector | None = None,
    ) -> None:
        self.client = client
        self.zone = zone
        self.local_nodes = local_nodes
        self.real_nodes = real_nodes
        self.adoption = Adoption(client)

    def node_manifest(self, nodeclaim: dict[str, Any]) -> dict[str, Any]:
        claim = nodeclaim
        name = claim["metadata"]["name"]
        instance_type = claim_instance_type(claim)
        shape = node_shape(instance_type)
        if shape.gpus == 0:
            raise CloudError(
                "SkuNotAvailable",
                f"instance type {instance_type} is not a GPU SKU kaito knows; use one from `kaito presets` "
                "SKU table (e.g. Standard_NC24ads_A100_v4)",
            )
        labels = {
            **claim_node_labels(claim),
            **shape.gpu_labels(),
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            LABEL_INSTANCE_TYPE: instance_type,
            "topology.kubernetes.io/zone": self.zone,
            LABEL_KWOK_CLOUD: "true",
        }
        annotations = {"node.alpha.kubernetes.io/ttl": "0"}
        if self.local_nodes is not None and self.local_nodes.matches(claim):
            # kaito's node agent runs it: no kwok marks, or kwok would fake its pods as well
            labels[AGENT_NODE_LABEL] = AGENT_NODE_VALUE
        else:
            labels["type"] = "kwok"
            annotations["kwok.x-k8s.io/node"] = "fake"
        cap = shape.capacity()
        meta: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
        uid = nodeclaim["metadata"].get("uid")
        if uid:
            # What registration would add anyway, written at birth: saves a Node patch per claim.
            labels["karpenter.sh/registered"] = "true"
            meta["ownerReferences"] = [
                {
                    "apiVersion": NODECLAIM.api_version,
                    "kind": NODECLAIM.kind,
                    "name": name,
                    "uid": uid,
                    "blockOwnerDeletion": True,
                }
            ]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": meta,
            "spec": {"providerID": PROVIDER_PREFIX + name, "taints": claim_taints(claim)},
            "status": {"capacity": cap, "allocatable": dict(cap)},
        }

    def _instance(self, node: dict[str, Any]) -> Instance:
        meta = node["metadata"]
        labels = meta.get("labels") or {}
        state = InstanceState.DELETING if meta.get("deletionTimestamp") else InstanceState.RUNNING
        return Instance(
            name=meta["name"],
            nodeclaim=labels.get(LABEL_NODECLAIM, meta["name"]),
            instance_type=labels.get(LABEL_INSTANCE_TYPE, ""),
            state=state,
            provider_id=(node.get("spec") or {}).get("providerID", ""),
            created_at=epoch(meta.get("creationTimestamp")),
            labels=dict(labels),
            capacity=dict((node.get("status") or {}).get("capacity") or {}),
        )

    async def create(self, nodeclaim: dict[str, Any]) -> Instance:
        if self.real_nodes is not None and self.real_nodes.matches(nodeclaim):
            return await self.adoption.adopt(nodeclaim)
        try:
            node = await self.client.create(self.node_manifest(nodeclaim))
        except AlreadyExistsError:
            node = await self.client.get(NODE, nodeclaim["metadata"]["name"], cached=False)
        return self._instance(node)

    async def get(self, nodeclaim_name: str) -> Instance | None:
        try:
            node = await self.client.get(NODE, nodeclaim_name, copy=False)
        except NotFoundError:
            node = None
        if node is not None and (node["metadata"].get("labels") or {}).get(LABEL_KWOK_CLOUD) == "true":
            return self._instance(node)
        # An adopted node is named by its kubelet, not after the claim: found by the claim label.
        selector = {REAL_NODE_LABEL: REAL_NODE_VALUE, LABEL_NODECLAIM: nodeclaim_name}
        held = await self.client.list(NODE, label_selector=selector, copy=False)
        held = [n for n in held if held_by(n) == nodeclaim_name]
        if not held:
            return None
        node = held[0]
        if self.adoption.missing_gpus(node):
            # An adoption cut short before its GPUs were advertised (an error, a crash) finishes
            # here, judged on a fresh read: the cache may show a release half done (GPUs gone,
            # label not yet), and a release finishes before this claim's next get.
            try:
                node = await self.client.get(NODE, node["metadata"]["name"], cached=False)
            except NotFoundError:
                return None
            if held_by(node) != nodeclaim_name:
                return None
            if self.adoption.missing_gpus(node):
                await self.adoption.advertise(node, adoption_record(node))
        return self.adoption.instance(node)

    async def list(self) -> list[Instance]:
        nodes = await self.client.list(NODE, label_selector={LABEL_KWOK_CLOUD: "true"}, copy=False)
        real = await self.client.list(NODE, label_selector={REAL_NODE_LABEL: REAL_NODE_VALUE}, copy=False)
        return [self._instance(n) for n in nodes] + [self.adoption.instance(n) for n in real if held_by(n)]

    async def delete(self, instance: Instance) -> bool:
        if (
            instance.provider_id.startswith(REAL_PROVIDER_PREFIX)
            or instance.labels.get(REAL_NODE_LABEL) == REAL_NODE_VALUE
        ):
            # A machine's own Node: released (idle again), never deleted.
            return await self.adoption.release(instance.name, instance.nodeclaim)
        try:
            await self.client.delete(NODE, instance.name)
        except NotFoundError:
            return True
        return False


def new_cloud(client: Client, options: KwokOptions) -> KwokCloudProvider:
    """The registry's factory (:mod:`kaito.provisioners.cloud.registry`)."""
    return KwokCloudProvider(client, local_nodes=options.local_selector(), real_nodes=options.real_selector())


__all__ = ["KwokCloudProvider", "new_cloud"]
