"""CloudProvider ``kwok``: a NodeClaim becomes a GPU Node object, made on the spot.

Why: ``make run`` has no cloud, yet the seed's Workspaces (no nodes exist beforehand) must get
nodes on demand. The "instance" is the Node object itself, shaped from kaito's SKU table
(``nvidia.com/gpu`` capacity, GPU feature-discovery labels). Who plays its kubelet depends on the
claim:

- by default the cluster's kwok (it manages every Node not labelled ``kaito.sh/node-agent=local``)
  makes it Ready and fakes its pods;
- claims matching :class:`LocalNodes` (``--local-nodes SELECTOR``, a label selector over the
  claim's labels, which carry the Workspace's ``labelSelector.matchLabels``) get a Node labelled
  ``kaito.sh/node-agent=local`` and no kwok marks, so kaito's local node agent (``kaito local
  up``) owns it and runs its pods for real. A selector, not a switch, because one process serves
  every Workspace: ``make run`` hands the seed's node (``apps=phi-3``) to the agent while the
  adapter example, whose image cannot be pulled anywhere, stays on a kwok fake.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaito.api.meta import selector_matches
from kaito.nodes import CloudError, Instance, InstanceState
from kaito.provisioners.cloud import (
    LABEL_NODECLAIM,
    claim_instance_type,
    claim_node_labels,
    claim_taints,
    node_shape,
)
from kaito.runtime import GVK, AlreadyExistsError, Client, NotFoundError

NODE = GVK("", "v1", "Node")
#: Marks the Nodes this cloud owns; ``list`` (garbage collection) sees only these.
LABEL_KWOK_CLOUD = "kaito.sh/kwok-cloud"
PROVIDER_PREFIX = "kwok://"
#: The label that hands a Node to kaito's local node agent (``kaito.localnode`` owns these names;
#: a cloud may not import it, so they are repeated here, as ``kaito.envtest`` repeats them for kwok).
AGENT_NODE_LABEL = "kaito.sh/node-agent"
AGENT_NODE_VALUE = "local"
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class LocalNodes:
    """Which claims get a Node that kaito's local node agent runs instead of kwok.

    ``selector`` is a ``metav1.LabelSelector`` (``matchLabels`` / ``matchExpressions``) evaluated
    on the claim's labels; an empty one matches every claim, as in Kubernetes.
    """

    selector: dict[str, Any] = field(default_factory=dict)

    def matches(self, nodeclaim: dict[str, Any]) -> bool:
        """Whether the claim's Node goes to the agent, judged on the labels that Node will carry
        (the claim's labels, with the Workspace's matchLabels, and its single-valued requirements
        such as the instance type)."""
        return selector_matches(self.selector, claim_node_labels(nodeclaim))

    @classmethod
    def parse(cls, text: str) -> LocalNodes:
        """``--local-nodes``: ``all``, or comma-separated ``k=v``, ``k!=v``, ``k`` (exists), ``!k``.

        Raises ValueError naming the bad term and the accepted forms.
        """
        text = text.strip()
        if text == "all":
            return cls()
        match: dict[str, str] = {}
        exprs: list[dict[str, Any]] = []
        for raw in text.split(","):
            term = raw.strip()
            key, op, value = _split_term(term)
            if not _LABEL_KEY.match(key) or (op in ("=", "!=") and not _LABEL_VALUE.match(value)):
                raise ValueError(
                    f"--local-nodes: {term!r} is not a selector term; use all, or key=value, "
                    "key!=value, key or !key separated by commas (e.g. apps=phi-3)"
                )
            if op == "=":
                match[key] = value
            elif op == "!=":
                exprs.append({"key": key, "operator": "NotIn", "values": [value]})
            elif op == "!":
                exprs.append({"key": key, "operator": "DoesNotExist"})
            else:
                exprs.append({"key": key, "operator": "Exists"})
        selector: dict[str, Any] = {}
        if match:
            selector["matchLabels"] = match
        if exprs:
            selector["matchExpressions"] = exprs
        return cls(selector)


def _split_term(term: str) -> tuple[str, str, str]:
    if "!=" in term:
        key, _, value = term.partition("!=")
        return key.strip(), "!=", value.strip()
    if "=" in term:
        key, _, value = term.partition("=")
        return key.strip().rstrip("="), "=", value.strip().lstrip("=")
    if term.startswith("!"):
        return term[1:].strip(), "!", ""
    return term, "exists", ""


def _epoch(ts: str | None) -> float:
    if not ts:
        return time.time()
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class KwokCloudProvider:
    """Nodes named after their claims; ``create`` is idempotent by that name.

    ``local_nodes``: claims whose Nodes go to kaito's local node agent (None: none, all kwok).
    """

    name = "kwok"

    def __init__(
        self, client: Client, *, zone: str = "kwok-zone-a", local_nodes: LocalNodes | None = None
    ) -> None:
        self.client = client
        self.zone = zone
        self.local_nodes = local_nodes

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
            "node.kubernetes.io/instance-type": instance_type,
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
                    "apiVersion": "karpenter.sh/v1",
                    "kind": "NodeClaim",
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
            instance_type=labels.get("node.kubernetes.io/instance-type", ""),
            state=state,
            provider_id=(node.get("spec") or {}).get("providerID", ""),
            created_at=_epoch(meta.get("creationTimestamp")),
            labels=dict(labels),
            capacity=dict((node.get("status") or {}).get("capacity") or {}),
        )

    async def create(self, nodeclaim: dict[str, Any]) -> Instance:
        try:
            node = await self.client.create(self.node_manifest(nodeclaim))
        except AlreadyExistsError:
            node = await self.client.get(NODE, nodeclaim["metadata"]["name"], cached=False)
        return self._instance(node)

    async def get(self, nodeclaim_name: str) -> Instance | None:
        try:
            node = await self.client.get(NODE, nodeclaim_name, copy=False)
        except NotFoundError:
            return None
        if (node["metadata"].get("labels") or {}).get(LABEL_KWOK_CLOUD) != "true":
            return None
        return self._instance(node)

    async def list(self) -> list[Instance]:
        nodes = await self.client.list(NODE, label_selector={LABEL_KWOK_CLOUD: "true"}, copy=False)
        return [self._instance(n) for n in nodes]

    async def delete(self, instance: Instance) -> bool:
        try:
            await self.client.delete(NODE, instance.name)
        except NotFoundError:
            return True
        return False
