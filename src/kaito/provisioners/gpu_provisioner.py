"""The ``gpu-provisioner`` NodeProvisioner: one ``karpenter.sh/v1`` NodeClaim per missing node.

Why NodeClaims shaped exactly like upstream Kaito's: the claim is the contract between the
workspace controller and whatever fulfils it. Keeping upstream's shape (name, labels,
annotations, nodeClassRef, taint, requirements, storage) means Azure's Go gpu-provisioner can
serve kaito's claims and kaito's node-provisioner (``kaito.controllers.nodeclaim``) can serve
upstream's, so either half can be swapped.

Steady state reads only the informer cache: a converged Workspace costs no API request. The API
is asked only where a stale cache would do harm: in the window between a create and the cache
showing it, when a Workspace is deleted (an uncached LIST decides which claims to delete: a claim
the cache has not shown yet would otherwise outlive its Workspace, as NodeClaims are
cluster-scoped and have no owner reference), and by :class:`OrphanClaimSweeper` before it deletes
a claim whose Workspace the cache says is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from kaito.api.names import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    GROUP,
    KIND,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    STORAGE_VERSION,
)
from kaito.api.nodeclaim import KAITO_NODEPOOL, LABEL_NODEPOOL, LAUNCHED, NODECLAIM, READY
from kaito.nodes import (
    LABEL_AZURE_SKU,
    LABEL_HOSTNAME,
    LABEL_INSTANCE_TYPE,
    LABEL_OS,
    NODE,
    NodeRequest,
    NodeStatus,
    Placement,
    gpu_taint,
    is_node_ready,
)
from kaito.provisioners.options import Cloud, GPUProvisionerOptions, resolve_cloud
from kaito.runtime import (
    GVK,
    AlreadyExistsError,
    Client,
    Expectations,
    Manager,
    NotFoundError,
    get_condition,
    get_logger,
    is_true,
)

POD = GVK("", "v1", "Pod")
WORKSPACE = GVK(GROUP, STORAGE_VERSION, KIND)
#: The StatefulSet ordinal Kubernetes (1.28+) writes on each pod; older ones: the name's suffix.
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"

#: Seconds a preferred node that was Ready may be NotReady before it stops counting towards the
#: Workspace's nodes (a kubelet restart, a short network blip): without it a blip creates a GPU
#: claim that the node's recovery then makes surplus. Kubernetes' node lifecycle waits 40 s
#: before it even marks a silent node Unknown, and 300 s before evicting pods from it.
PREFERRED_NODE_GRACE = 300.0
#: Seconds a NodeClaim naming a Workspace that does not exist is left alone before the sweep
#: deletes it (see OrphanClaimSweeper).
ORPHAN_CLAIM_GRACE = 300.0
ORPHAN_SWEEP_INTERVAL = 60.0

log = get_logger("kaito.provisioners.gpu_provisioner")

LABEL_AWS_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
DEFAULT_NODE_IMAGE_FAMILY = "ubuntu"
DEFAULT_STORAGE = "1024Gi"


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
    # The user's labels first, kaito's after: a matchLabels entry may never override the labels
    # the backend, the sweep and Karpenter find the claim by.
    labels = dict((request.label_selector or {}).get("matchLabels") or {})
    labels.update({LABEL_NODEPOOL: KAITO_NODEPOOL, **workspace_labels(request)})
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
            "taints": [gpu_taint()],
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


async def workspace_gone(client: Client, namespace: str, name: str) -> bool:
    """Whether the apiserver (not the cache, which may trail a creation) says the Workspace does
    not exist: asked before deleting nodes on the cache's word that their Workspace is gone."""
    try:
        await client.get(WORKSPACE, name, namespace, cached=False)
    except NotFoundError:
        return True
    return False


def _deleting(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _created(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_ordinal(pod: dict[str, Any], statefulset: str) -> int | None:
    """A StatefulSet pod's ordinal: its ``apps.kubernetes.io/pod-index`` label, else the number
    after ``<statefulset>-`` in its name; None for any other pod."""
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(LABEL_POD_INDEX)
    if raw is None:
        name = str(meta.get("name") or "")
        prefix = f"{statefulset}-"
        raw = name[len(prefix) :] if name.startswith(prefix) else None
    if raw is None or not str(raw).isdigit():
        return None
    return int(raw)


def surplus_claims(
    claims: list[dict[str, Any]], want: int, ordinals: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The claims to delete so that ``want`` remain (pure: unit tests call it).

    Kept first: claims whose node runs one of the Workspace's pods, lowest StatefulSet ordinal
    first, so pod-0 (the leader, holding a loaded model) keeps its node while any other claim
    can go; then claims running none of them, Ready before not Ready, oldest before newest. So
    the newest not-Ready claim is dropped first (a duplicate made after a lost create answer is
    the newer one) and scale-down removes the nodes of the highest ordinals, which the
    StatefulSet is removing too. ``ordinals``: node name -> lowest ordinal of the Workspace's
    pods on it.
    """
    ordinals = ordinals or {}

    def keep_rank(claim: dict[str, Any]) -> tuple[int, int, str, str]:
        node = (claim.get("status") or {}).get("nodeName")
        if node and node in ordinals:
            return (0, ordinals[node], _created(claim), claim["metadata"]["name"])
        ready = 0 if is_true(claim, READY) else 1
        return (1, ready, _created(claim), claim["metadata"]["name"])

    ranked = sorted(claims, key=keep_rank)
    return ranked[max(want, 0) :]


class GPUProvisioner:
    """NodeProvisioner backend ``gpu-provisioner`` (the default, as upstream)."""

    name = "gpu-provisioner"

    def __init__(
        self,
        manager: Manager,
        options: GPUProvisionerOptions | None = None,
        *,
        cloud: str | None = None,
        preferred_node_grace: float | None = None,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        opts = options or GPUProvisionerOptions()
        # ``cloud`` (tests, embedders) > options (``--cloud-provider``) > $CLOUD_PROVIDER > azure.
        self.cloud: Cloud = resolve_cloud(cloud) if cloud else opts.cloud()
        #: See GPUProvisionerOptions.preferred_node_grace.
        self.preferred_node_grace = (
            opts.preferred_node_grace if preferred_node_grace is None else float(preferred_node_grace)
        )
        #: Claim names this backend chose and POSTed (or is POSTing) that the cache had not
        #: listed yet, per (namespace, workspace). A name goes in *before* its POST: an answer
        #: lost to a cut connection, a cancelled reconcile or a resend must not make the next
        #: reconcile create a second claim, nor a deletion miss the first.
        #: (kaito.runtime.Expectations: names, as RecentWrites keeps objects.)
        self._unseen: Expectations[tuple[str, str]] = Expectations()
        #: Surplus claims this backend deleted that the cache still lists as live, per
        #: (namespace, workspace): the mirror of ``_unseen``. While a lagging NodeClaim watch
        #: still shows a deleted claim, the next reconcile would count it, rank the claims again
        #: and (its pods having moved meanwhile) delete the other one too, leaving none.
        self._deleted: Expectations[tuple[str, str]] = Expectations()
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

    async def _pods(self, request: NodeRequest) -> list[dict[str, Any]]:
        """The Workspace's pods, by kaito's labels: from a synced Pod informer of the manager
        that holds them (it may be label-filtered to kaito's pods), else one LIST. Only asked
        when claims are surplus, never in steady state."""
        selector = workspace_labels(request)
        for inf in self.manager.cache.informers:
            if inf.gvk != POD or not inf.has_synced:
                continue
            if inf.namespace not in (None, request.namespace):
                continue
            return inf.store.list(request.namespace, label_selector=selector)
        return await self.client.list(POD, request.namespace, label_selector=selector, cached=False)

    # -- NodeProvisioner ---------------------------------------------------------------------
    async def _created_unseen(self, request: NodeRequest, listed: list[dict[str, Any]]) -> int:
        """Claims this backend created (or may have: the answer was lost) that the cache does not
        list yet. Claim names are random, so without this a reconcile right after a create (the
        Workspace's own status write triggers one) sees a stale cache and creates a second claim.
        Each is checked against the apiserver, so one deleted meanwhile, or one whose POST never
        landed, stops counting; API calls happen only in that window."""
        key = (request.namespace, request.workspace)
        names = {c["metadata"]["name"] for c in listed}
        for name in self._unseen.pending(key):
            if name in names:
                self._unseen.settle(key, name)
                continue
            try:
                live = await self.client.get(NODECLAIM, name, cached=False)
            except NotFoundError:
                self._unseen.settle(key, name)
                continue
            if _deleting(live):
                self._unseen.settle(key, name)
        return len(self._unseen.pending(key))

    def _deleted_unseen(self, request: NodeRequest, listed: list[dict[str, Any]]) -> set[str]:
        """Names of claims this backend deleted that the cache still lists without a deletion
        timestamp. A name leaves the set once the cache shows the claim deleting or gone; no
        API call is needed, the DELETE was answered."""
        key = (request.namespace, request.workspace)
        return self._deleted.keep_only(key, (c["metadata"]["name"] for c in listed if not _deleting(c)))

    async def _create(self, request: NodeRequest) -> None:
        manifest = nodeclaim_manifest(request, cloud=self.cloud)
        name = manifest["metadata"]["name"]
        # Remembered before the POST: see _unseen.
        self._unseen.expect((request.namespace, request.workspace), name)
        try:
            await self.client.create(manifest)
        except AlreadyExistsError:
            # Our own, freshly hashed name: the POST landed and its answer was lost (a 5xx +
            # Retry-After the client resent, answered AlreadyExists). That claim is ours.
            log.debug("NodeClaim already created", nodeclaim=name, workspace=request.workspace)

    async def provision_nodes(self, request: NodeRequest) -> None:
        listed = await self._claims(request)
        gone = self._deleted_unseen(request, listed)
        claims = [c for c in listed if not _deleting(c) and c["metadata"]["name"] not in gone]
        unseen = await self._created_unseen(request, listed)
        usable_preferred = [n for n in request.preferred_nodes if await self._counts_preferred(n, request)]
        want = max(request.count - len(usable_preferred), 0)
        if len(claims) + unseen < want:
            for _ in range(want - len(claims) - unseen):
                await self._create(request)
        elif len(claims) > want:
            ordinals: dict[str, int] = {}
            for pod in await self._pods(request):
                node = (pod.get("spec") or {}).get("nodeName")
                index = pod_ordinal(pod, request.workspace)
                if node and index is not None:
                    ordinals[node] = min(index, ordinals.get(node, index))
            for claim in surplus_claims(claims, want, ordinals):
                meta = claim["metadata"]
                log.info(
                    "deleting surplus NodeClaim",
                    nodeclaim=meta["name"],
                    workspace=f"{request.namespace}/{request.workspace}",
                    want=want,
                )
                await self.client.delete(NODECLAIM, meta["name"], ignore_not_found=True)
                self._deleted.expect((request.namespace, request.workspace), meta["name"])

    def _fit(self, node: dict[str, Any], request: NodeRequest) -> bool:
        labels = (node.get("metadata") or {}).get("labels") or {}
        return not request.instance_type or labels.get(LABEL_INSTANCE_TYPE) == request.instance_type

    async def _usable_preferred(self, name: str, request: NodeRequest) -> bool:
        node = await self._node(name)
        return node is not None and is_node_ready(node) and self._fit(node, request)

    def _not_ready_for(self, node: dict[str, Any]) -> float | None:
        """Seconds since a node's Ready condition left True; None when it has none."""
        for cond in (node.get("status") or {}).get("conditions") or ():
            if cond.get("type") == "Ready":
                since = _epoch(cond.get("lastTransitionTime"))
                return None if since is None else max(time.time() - since, 0.0)
        return None

    async def _counts_preferred(self, name: str, request: NodeRequest) -> bool:
        """Whether a preferred node stands in for a claim: Ready, or NotReady for less than
        ``preferred_node_grace`` (it is expected back; a claim made now would be deleted as
        surplus when it returns)."""
        node = await self._node(name)
        if node is None or _deleting(node) or not self._fit(node, request):
            return False
        if is_node_ready(node):
            return True
        down = self._not_ready_for(node)
        return down is not None and down < self.preferred_node_grace

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        listed = await self._claims(request)
        gone = self._deleted_unseen(request, listed)
        claims = [c for c in listed if c["metadata"]["name"] not in gone]
        nodes: list[str] = []
        requeue: float | None = None
        for name in request.preferred_nodes:
            if await self._usable_preferred(name, request):
                nodes.append(name)
                continue
            node = await self._node(name)
            down = self._not_ready_for(node) if node is not None and self._fit(node, request) else None
            if down is not None and down < self.preferred_node_grace:
                # Counted as coming back until its grace ends; look again then (no watch event
                # marks the moment).
                wait = self.preferred_node_grace - down + 0.5
                requeue = wait if requeue is None else min(requeue, wait)
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
        return NodeStatus(
            ready=ready,
            nodes=nodes,
            reason=reason,
            message=message,
            conditions=[cond],
            requeue_after=None if ready else requeue,
        )

    async def delete_nodes(self, request: NodeRequest) -> bool:
        """Delete every claim of the Workspace; True once none is left.

        Decided from the server, not the cache: an uncached LIST by the Workspace's labels, plus
        every name this backend POSTed and has not seen listed (its create may have landed after
        the LIST, or its answer may have been lost). A claim the cache had not shown yet would
        otherwise survive its Workspace for good (no owner reference reaches a cluster-scoped
        NodeClaim). Costs a LIST per call, but only while a Workspace is being deleted.
        """
        key = (request.namespace, request.workspace)
        live = await self.client.list(NODECLAIM, label_selector=workspace_labels(request), cached=False)
        remaining = False
        for claim in live:
            remaining = True
            if not _deleting(claim):
                await self.client.delete(NODECLAIM, claim["metadata"]["name"], ignore_not_found=True)
        listed = {c["metadata"]["name"] for c in live}
        for name in self._unseen.pending(key):
            if name in listed:
                continue
            try:
                await self.client.delete(NODECLAIM, name)
            except NotFoundError:
                self._unseen.settle(key, name)  # never landed, or already gone
                continue
            remaining = True
        return not remaining

    async def release_gone(self, namespace: str, workspace: str) -> None:
        """The Workspace is gone from the cache: delete the claims this backend created for it
        and the cache may not show, if any.

        Its finalizer normally did that already, but the apiserver may delete a Workspace
        outright although our finalizer was just added: a DELETE that read it before the
        finalizer patch removes it without looking again (a client that deletes a Workspace
        milliseconds after creating it hits this), while the reconcile that added the finalizer
        goes on to create a claim. That claim may still be in ``_unseen``, or the cache may
        already list it (a later reconcile saw it and dropped the name), so both are asked:
        free when neither holds a claim of the Workspace; otherwise an uncached GET must confirm
        the Workspace is gone first. Claims the cache never showed and this process did not
        create are the OrphanClaimSweeper's, after its grace period.
        """
        request = NodeRequest(workspace=workspace, namespace=namespace, uid="", instance_type=None, count=0)
        if not self._unseen.pending((namespace, workspace)) and not await self._claims(request):
            return
        if not await workspace_gone(self.client, namespace, workspace):
            return  # there after all: the cache trails its creation
        log.info(
            "deleting the NodeClaims of a Workspace deleted without its finalizer",
            workspace=f"{namespace}/{workspace}",
        )
        await self.delete_nodes(request)

    def placement(self, request: NodeRequest, status: NodeStatus) -> Placement:
        """The Workspace's claimed nodes (by the labels each claim gives its node) or its
        preferred nodes, tolerating the GPU taint the claims put on them."""
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
        return Placement(
            {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
        )


class OrphanClaimSweeper:
    """The last line of defence: deletes NodeClaims whose Workspace no longer exists.

    ``delete_nodes`` decides from the server, so a Workspace's finalizer should leave no claim
    behind; but a create whose answer was lost after the finalizer ran, a finalizer removed by
    hand, or a controller that crashed in between would, and a cluster-scoped NodeClaim has no
    owner reference for the garbage collector to follow. So, at start and every ``interval``
    seconds (leader only), every kaito claim (``karpenter.sh/nodepool: kaito``) whose
    ``kaito.sh/workspace`` / ``kaito.sh/workspacenamespace`` labels name no existing Workspace,
    and that is older than ``grace`` seconds, is deleted.

    Never on the cache's word alone: the candidates come from the NodeClaim informer (free), a
    synced Workspace informer that holds the Workspace clears a claim (free), and a claim is
    deleted only after an uncached GET of its Workspace answers 404. A stale or unsynced
    Workspace cache therefore costs a GET, never a claim. The grace keeps a claim made a moment
    ago (by a controller whose Workspace is still being created, or by hand) out of reach.
    """

    name = "nodeclaim-orphan-sweep"
    needs_leader_election = True

    def __init__(
        self,
        manager: Manager,
        *,
        grace: float = ORPHAN_CLAIM_GRACE,
        interval: float = ORPHAN_SWEEP_INTERVAL,
        nodepool: str = KAITO_NODEPOOL,
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.grace = grace
        self.interval = interval
        self.nodepool = nodepool
        #: Names of the claims this sweeper deleted (tests and logs read it).
        self.swept: list[str] = []
        manager.cache.get_informer(NODECLAIM)

    def _candidates(self, now: float) -> Iterable[tuple[dict[str, Any], str, str]]:
        cache = self.manager.cache
        if not cache.can_serve(NODECLAIM):
            return ()
        scope = self.manager.namespace
        out = []
        for claim in cache.list(NODECLAIM, label_selector={LABEL_NODEPOOL: self.nodepool}):
            meta = claim.get("metadata") or {}
            labels = meta.get("labels") or {}
            ws, ns = labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)
            if not ws or not ns or _deleting(claim):
                continue
            if scope is not None and ns != scope:
                continue  # another kaito's (a namespace-scoped operator answers for its own)
            created = _epoch(meta.get("creationTimestamp"))
            if created is None or now - created < self.grace:
                continue
            if cache.can_serve(WORKSPACE, ns) and cache.get(WORKSPACE, ws, ns) is not None:
                continue
            out.append((claim, ns, ws))
        return out

    async def sweep_once(self) -> list[str]:
        gone: list[str] = []
        for claim, ns, ws in list(self._candidates(time.time())):
            if not await workspace_gone(self.client, ns, ws):
                continue  # exists: the cache was behind
            meta = claim["metadata"]
            log.info("deleting orphan NodeClaim", nodeclaim=meta["name"], workspace=f"{ns}/{ws}")
            try:
                await self.client.delete(NODECLAIM, meta["name"], preconditions={"uid": meta["uid"]})
            except NotFoundError:
                continue
            gone.append(meta["name"])
        self.swept.extend(gone)
        return gone

    async def start(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception as exc:  # an API or network failure: the next round tries again
                log.warning("orphan NodeClaim sweep failed; will retry", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


def new_backend(manager: Manager, options: GPUProvisionerOptions) -> GPUProvisioner:
    """The registry's factory (:mod:`kaito.provisioners.registry`): the backend plus its
    orphan-claim sweep (leader-only, on ``manager``), which a NodeClaim backend always needs."""
    manager.add(
        OrphanClaimSweeper(
            manager, grace=options.orphan_nodeclaim_grace, interval=options.orphan_nodeclaim_interval
        )
    )
    return GPUProvisioner(manager, options)
