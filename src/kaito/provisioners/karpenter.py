"""The ``karpenter`` NodeProvisioner: one static-capacity NodePool per Workspace.

Why a NodePool and not NodeClaims: with a real Karpenter-core provider in the cluster, Karpenter
owns the claim lifecycle (launch, registration, drift, repair); kaito only says "keep N nodes of
this type for this Workspace" through ``spec.replicas`` (Karpenter's static capacity), and reads
the nodes Karpenter labels with the pool's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kaito.api.names import ANNOTATION_NODE_CLASS_NAME, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
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
from kaito.provisioners.options import KarpenterOptions, NodeClassEntry
from kaito.runtime import GVK, AlreadyExistsError, Manager, NotFoundError, get_logger, is_true

log = get_logger("kaito.provisioners.karpenter")

LABEL_MANAGED_BY = "karpenter.kaito.sh/managed-by"
#: On the one ``--karpenter-node-classes`` entry Workspaces get by default (upstream's label).
LABEL_DEFAULT_CLASS = "karpenter.kaito.sh/default"
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
        self.options = options or KarpenterOptions()
        # The default class's ref: ``node_class`` (tests, embedders) > the options.
        self.node_class: dict[str, str] = dict(node_class) if node_class else self.options.ref()
        #: What ``kaito.sh/node-class-name`` may name (the default's name when ``node_class`` won).
        self.node_classes: tuple[str, ...] = (
            (self.node_class["name"],) if node_class else self.options.class_names
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

    def class_problem(self, request: NodeRequest) -> str:
        """Why the Workspace's ``kaito.sh/node-class-name`` cannot be used ("" when it can): a
        name outside the configured classes. The webhook refuses those; this catches a Workspace
        admitted without it, or before the classes changed."""
        name = (request.annotations or {}).get(ANNOTATION_NODE_CLASS_NAME, "")
        if not name or name in self.node_classes:
            return ""
        return (
            f"annotation {ANNOTATION_NODE_CLASS_NAME}={name!r} names no node class of this "
            f"operator; choose one of: {', '.join(self.node_classes)} (--karpenter-node-classes), "
            "or remove it for the default"
        )

    def class_ref(self, request: NodeRequest) -> dict[str, str]:
        """The ``nodeClassRef`` for the Workspace: the class its ``kaito.sh/node-class-name``
        names, else the default; ValueError with :meth:`class_problem`'s message for a name
        outside the configured classes."""
        problem = self.class_problem(request)
        if problem:
            raise ValueError(problem)
        name = (request.annotations or {}).get(ANNOTATION_NODE_CLASS_NAME, "")
        return {**self.node_class, "name": name or self.node_class["name"]}

    async def provision_nodes(self, request: NodeRequest) -> None:
        if self.class_problem(request):
            return  # no pool on a class nobody configured; ensure_nodes_ready reports why
        want = nodepool_manifest(request, self.class_ref(request))
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
            or tmpl.get("nodeClassRef") != want["spec"]["template"]["spec"]["nodeClassRef"]
        ):
            patch = {"spec": {"replicas": request.count, "template": want["spec"]["template"]}}
            await self.client.patch(NODEPOOL, want["metadata"]["name"], patch)

    async def ensure_nodes_ready(self, request: NodeRequest) -> NodeStatus:
        problem = self.class_problem(request)
        if problem:
            reason = "NodeClassNotAllowed"
            cond = {"type": "NodeClaimReady", "status": "False", "reason": reason, "message": problem}
            return NodeStatus(ready=False, reason=reason, message=problem, conditions=[cond])
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


class NodeClassError(RuntimeError):
    """A configured node class cannot be used as configured; the message says which and why."""


def _covers(want: object, have: object) -> bool:
    """Whether ``have`` holds every value of ``want`` (objects compared key by key, recursively;
    anything else by equality): a provider's defaults in ``have`` are not a difference."""
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        return all(k in have and _covers(v, have[k]) for k, v in want.items())
    return want == have


def _is_ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class NodeClassSetup:
    """Creates or adopts the ``--karpenter-node-classes`` at start, then waits for the default.

    Why at start and not per Workspace: the classes are the operator's configuration, shared by
    every Workspace, so a wrong one must stop the operator with a clear message before any
    NodePool references it, and a cluster without the provider's node class CRD must be told so.
    Idempotent: an entry with a spec is created with upstream's labels (``managed-by=kaito``, and
    ``default=true`` on the default) and, if kaito's and drifted from the configuration, patched
    back (fields the provider defaulted are not drift); an existing class kaito does not manage is
    refused when the entry has a spec (kaito will not overwrite someone else's class) and
    adopted untouched when it has none. Leader-only: one replica writes.
    """

    name = "karpenter-node-classes"
    needs_leader_election = True

    def __init__(
        self,
        manager: Manager,
        options: KarpenterOptions,
        *,
        ready_timeout: float = 120.0,
        poll_interval: float = 2.0,
    ) -> None:
        self.client = manager.client
        self.options = options
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        api = options.node_class_api
        self.gvk = GVK(api.group, api.version, api.kind)
        #: Set once every class is in place and the default is Ready.
        self.done = asyncio.Event()

    def manifest(self, entry: NodeClassEntry) -> dict[str, Any]:
        labels = {LABEL_MANAGED_BY: "kaito"}
        if entry.default:
            labels[LABEL_DEFAULT_CLASS] = "true"
        obj: dict[str, Any] = {
            "apiVersion": self.gvk.api_version,
            "kind": self.gvk.kind,
            "metadata": {"name": entry.name, "labels": labels},
        }
        if entry.spec is not None:
            obj["spec"] = dict(entry.spec)
        return obj

    async def check_api(self) -> None:
        """NodeClassError when the server does not serve the node class type (the provider's
        CRDs are missing, or ``--karpenter-node-class-api`` names another type)."""
        try:
            await self.client.is_namespaced(self.gvk)
        except NotFoundError:
            raise NodeClassError(
                f"the cluster has no {self.gvk.kind} ({self.gvk.api_version}) API: install the "
                "Karpenter provider (its CRDs) before kaito, or set --karpenter-node-class-api "
                "to the provider's node class type"
            ) from None

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(self.gvk, name, cached=False)
        except NotFoundError:
            return None

    async def ensure(self, entry: NodeClassEntry) -> None:
        """One class in place, as configured; NodeClassError when it cannot be."""
        kind = self.gvk.kind
        have = await self._get(entry.name)
        if have is None:
            if entry.spec is None:
                raise NodeClassError(
                    f"{kind} {entry.name!r} does not exist and its --karpenter-node-classes entry has "
                    "no spec to create it with: create the class, or give the entry a spec"
                )
            with contextlib.suppress(AlreadyExistsError):  # another replica won the race
                await self.client.create(self.manifest(entry))
                log.info("created node class", kind=kind, name=entry.name, default=entry.default)
                return
            have = await self._get(entry.name)
            if have is None:
                return
        if entry.spec is None:
            log.info("adopted node class as it is", kind=kind, name=entry.name)
            return
        labels = have["metadata"].get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != "kaito":
            raise NodeClassError(
                f"{kind} {entry.name!r} exists but kaito does not manage it (no label "
                f"{LABEL_MANAGED_BY}=kaito), and its --karpenter-node-classes entry has a spec kaito "
                "would have to write: drop the entry's spec to use the class as it is, rename the "
                "entry, or delete the class for kaito to create"
            )
        want = self.manifest(entry)
        want_labels = {**want["metadata"]["labels"], LABEL_DEFAULT_CLASS: "true" if entry.default else None}
        stale_labels = any(labels.get(k) != v for k, v in want_labels.items())
        if _covers(want.get("spec") or {}, have.get("spec") or {}) and not stale_labels:
            return
        await self.client.patch(
            self.gvk, entry.name, {"metadata": {"labels": want_labels}, "spec": want.get("spec") or {}}
        )
        log.info("updated node class to the configured spec", kind=kind, name=entry.name)

    async def wait_ready(self, name: str, stop: asyncio.Event) -> None:
        """Until class ``name`` reports Ready=True; NodeClassError after ``ready_timeout``."""
        deadline = time.monotonic() + self.ready_timeout
        last: dict[str, Any] | None = None
        while not stop.is_set():
            last = await self._get(name)
            if last is not None and _is_ready(last):
                return
            if time.monotonic() >= deadline:
                conditions = ((last or {}).get("status") or {}).get("conditions") or []
                raise NodeClassError(
                    f"default {self.gvk.kind} {name!r} is not Ready after {self.ready_timeout:.0f}s "
                    f"(conditions: {conditions or 'none'}); see the Karpenter provider's log"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def start(self, stop: asyncio.Event) -> None:
        await self.check_api()
        for entry in self.options.node_classes:
            await self.ensure(entry)
        await self.wait_ready(self.options.default_class, stop)
        if not stop.is_set():
            log.info(
                "node classes in place",
                kind=self.gvk.kind,
                names=list(self.options.class_names),
                default=self.options.default_class,
            )
            self.done.set()


def new_backend(manager: Manager, options: KarpenterOptions) -> KarpenterProvisioner:
    """The registry's factory: the backend, plus the start-up creation of the
    ``--karpenter-node-classes`` when any are configured."""
    if options.node_classes:
        manager.add(NodeClassSetup(manager, options))
    return KarpenterProvisioner(manager, options)
