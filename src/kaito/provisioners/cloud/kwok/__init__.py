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
  adapter example, whose image cannot be pulled anywhere, stays on a kwok fake;
- claims matching ``--real-nodes SELECTOR`` (the same :class:`ClaimSelector`) get no Node made at
  all: a real machine registers its own Node (``kaito local up --node real``, labelled
  ``kaito.sh/kubelet=real``), so the cloud *adopts* an idle one instead (:class:`_Adoption`): it
  claims it with a resourceVersion-checked patch, shapes it like the instance the claim asked for
  (labels, taints, providerID, the SKU's ``nvidia.com/gpu`` as an extended resource) and, when the
  claim goes, releases it (undoes that) rather than deleting it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaito.api.meta import selector_matches
from kaito.nodes import CloudError, Instance, InstanceState
from kaito.provisioners.cloud import (
    ANNOTATION_ADOPTED,
    GPU_RESOURCE,
    LABEL_INSTANCE_TYPE,
    LABEL_NODECLAIM,
    NodeShape,
    claim_instance_type,
    claim_node_labels,
    claim_taints,
    is_adopted,
    node_shape,
)
from kaito.runtime import GVK, AlreadyExistsError, Client, ConflictError, NotFoundError

NODE = GVK("", "v1", "Node")
#: Marks the Nodes this cloud owns; ``list`` (garbage collection) sees only these.
LABEL_KWOK_CLOUD = "kaito.sh/kwok-cloud"
PROVIDER_PREFIX = "kwok://"
#: The label that hands a Node to kaito's local node agent (``kaito.localnode`` owns these names;
#: a cloud may not import it, so they are repeated here, as ``kaito.envtest`` repeats them for kwok).
AGENT_NODE_LABEL = "kaito.sh/node-agent"
AGENT_NODE_VALUE = "local"
#: The label a real kubelet registers its Node with (``kaito.envtest.realnode``, ``kaito local up
#: --node real``); repeated here for the same reason, and a test keeps the two equal.
REAL_NODE_LABEL = "kaito.sh/kubelet"
REAL_NODE_VALUE = "real"
REAL_PROVIDER_PREFIX = "kaito-real://"
#: On a Node held for a claim: what adoption changed (JSON: labels' previous values, taints added,
#: the GPU count written, when), so that release restores exactly that. Gone once released.
ANNOTATION_ADOPTION = "kaito.sh/adoption"
#: Labels the NodeClaim controller adds on registration; release removes them as well.
_REGISTRATION_LABELS = ("karpenter.sh/registered", "karpenter.sh/initialized")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ClaimSelector:
    """Which claims a node option applies to: ``--local-nodes`` (a Node that kaito's local node
    agent runs instead of kwok) or ``--real-nodes`` (an adopted real node).

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
    def parse(cls, text: str, flag: str = "--local-nodes") -> ClaimSelector:
        """``all``, or comma-separated ``k=v``, ``k!=v``, ``k`` (exists), ``!k``.

        Raises ValueError naming ``flag``, the bad term and the accepted forms.
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
                    f"{flag}: {term!r} is not a selector term; use all, or key=value, "
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


#: The names the two flags have always had.
LocalNodes = ClaimSelector
RealNodes = ClaimSelector


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
        self.adoption = _Adoption(client)

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
        held = [n for n in held if _held_by(n) == nodeclaim_name]
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
            if _held_by(node) != nodeclaim_name:
                return None
            if self.adoption.missing_gpus(node):
                await self.adoption.advertise(node, _record(node))
        return self.adoption.instance(node)

    async def list(self) -> list[Instance]:
        nodes = await self.client.list(NODE, label_selector={LABEL_KWOK_CLOUD: "true"}, copy=False)
        real = await self.client.list(NODE, label_selector={REAL_NODE_LABEL: REAL_NODE_VALUE}, copy=False)
        return [self._instance(n) for n in nodes] + [self.adoption.instance(n) for n in real if _held_by(n)]

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


def _held_by(node: dict[str, Any]) -> str:
    """The claim an adopted node is held for ("" when idle or never adopted)."""
    if not is_adopted(node):
        return ""
    annotations = node["metadata"].get("annotations") or {}
    if ANNOTATION_ADOPTION not in annotations:
        return ""
    return str((node["metadata"].get("labels") or {}).get(LABEL_NODECLAIM, ""))


def _ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


class _Adoption:
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
        record = _record(node)
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
            created_at=float(record.get("at") or _epoch(meta.get("creationTimestamp"))),
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
            held = [n for n in nodes if _held_by(n) == name]
            if held:
                # Adopted by an earlier call (create is idempotent): finish what it may not have.
                node = held[0]
                await self.advertise(node, _record(node))
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
                    _epoch(n["metadata"].get("creationTimestamp")),
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
        gpus = int(_record(node).get("gpus") or 0)
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
            if _held_by(node) != claim_name:
                return True
            record = _record(node)
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
            labels.update({k: None for k in _REGISTRATION_LABELS if k in (meta.get("labels") or {})})
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
            kept = [r for r in refs if not (r.get("kind") == "NodeClaim" and r.get("name") == claim_name)]
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


def _record(node: dict[str, Any]) -> dict[str, Any]:
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
            why = "idle" if _ready(n) else "not Ready"
        parts.append(f"{meta['name']} {why}")
    return ", ".join(parts)
