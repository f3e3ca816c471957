"""The NodeClaim reconciler and the orphan-instance collector (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaito.api.nodeclaim import (
    INITIALIZED,
    KAITO_NODEPOOL,
    LABEL_NODEPOOL,
    LAUNCHED,
    NODECLAIM,
    READY,
    REGISTERED,
)
from kaito.nodes import (
    GPU_RESOURCE,
    LABEL_NODECLAIM,
    NODE,
    CloudError,
    CloudProvider,
    Instance,
    InstanceState,
    claim_node_labels,
    claim_taints,
    is_adopted,
    is_node_ready,
    node_shape,
)
from kaito.runtime import (
    NORMAL,
    WARNING,
    ApiError,
    EventRecorder,
    Manager,
    NotFoundError,
    Request,
    Result,
    get_condition,
    get_logger,
    has_finalizer,
    is_being_deleted,
    is_true,
    label_selector,
    set_condition,
)

#: Karpenter's own finalizer name, so tools that know Karpenter's claims read ours the same way.
FINALIZER = "karpenter.sh/termination"
LABEL_REGISTERED = "karpenter.sh/registered"
LABEL_INITIALIZED = "karpenter.sh/initialized"
PROVIDER_ID_INDEX = "spec.providerID"
NODECLAIM_LABEL_INDEX = "nodeclaim"

_log = get_logger("kaito.controllers.nodeclaim")


@dataclass
class NodeClaimOptions:
    """How the node-provisioner judges claims; each field is a ``kaito node-provisioner`` flag
    (``launch_timeout`` -> ``--launch-timeout``) whose help text is the field's docstring.
    Seconds throughout; tests shorten them, production keeps Karpenter's defaults."""

    launch_timeout: float = 300.0
    """Delete a claim whose cloud instance is not launched within this many seconds (s)."""
    registration_timeout: float = 900.0
    """Delete a claim whose node never joins the cluster within this many seconds (s)."""
    initialization_timeout: float = 900.0
    """Delete a claim whose node never turns Ready with its GPUs within this many seconds (s)."""
    gc_grace: float = 120.0
    """Delete cloud instances that have no NodeClaim once older than this (s)."""
    gc_interval: float = 30.0
    """Seconds between two sweeps for such orphan instances."""
    poll_interval: float = 2.0
    """How often a launching instance or a refused create is looked at again (s)."""
    error_retry: float = 5.0
    """Seconds before retrying a create the cloud refused."""
    max_concurrent_reconciles: int = 16
    """NodeClaims reconciled at once."""
    nodepool: str = KAITO_NODEPOOL
    """The karpenter.sh/nodepool label value of the claims this node-provisioner serves."""
    component: str = "kaito-node-provisioner"
    """Event source of the events written on claims."""


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _since(cond: dict[str, Any] | None, fallback: str | None) -> float:
    """Seconds since a condition's transition (or the fallback timestamp)."""
    start = _epoch((cond or {}).get("lastTransitionTime")) or _epoch(fallback) or time.time()
    return time.time() - start


def _provider_ids(node: dict[str, Any]) -> list[str]:
    pid = (node.get("spec") or {}).get("providerID")
    return [pid] if pid else []


def _claim_label(node: dict[str, Any]) -> list[str]:
    name = ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_NODECLAIM)
    return [name] if name else []


class NodeClaimController:
    """Reconciles one NodeClaim at a time per key; every read is from the informer cache."""

    def __init__(
        self, manager: Manager, cloud: CloudProvider, options: NodeClaimOptions | None = None
    ) -> None:
        self.manager = manager
        self.client = manager.client
        self.cloud = cloud
        self.options = options or NodeClaimOptions()
        self.recorder = EventRecorder(self.client, self.options.component)
        self.collector = OrphanCollector(manager, cloud, self.options)
        #: claim -> (resourceVersion our last write replaced, the object that write returned)
        self._written: dict[str, tuple[str, dict[str, Any]]] = {}
        manager.cache.add_index(NODE, PROVIDER_ID_INDEX, _provider_ids)
        manager.cache.add_index(NODE, NODECLAIM_LABEL_INDEX, _claim_label)

    # -- wiring ------------------------------------------------------------------------------
    def node_to_claims(self, node: dict[str, Any]) -> Iterable[Request]:
        meta = node.get("metadata") or {}
        name = (meta.get("labels") or {}).get(LABEL_NODECLAIM)
        if name:
            return (Request(None, name),)
        pid = (node.get("spec") or {}).get("providerID")
        if not pid:
            return ()
        claims = self.manager.cache.get_informer(NODECLAIM).store.list()
        return tuple(
            Request(None, c["metadata"]["name"])
            for c in claims
            if (c.get("status") or {}).get("providerID") == pid
        )

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, req: Request) -> Result | None:
        try:
            claim = await self.client.get(NODECLAIM, req.name)
        except NotFoundError:
            self._written.pop(req.name, None)
            return None
        # Our own last write may not have reached the informer yet (a Node event can requeue the
        # claim first); acting on the older copy would only earn a 409 and a backoff.
        written = self._written.get(req.name)
        if written is not None and claim["metadata"].get("resourceVersion") == written[0]:
            claim = copy.deepcopy(written[1])
        labels = claim["metadata"].get("labels") or {}
        if labels.get(LABEL_NODEPOOL) != self.options.nodepool:
            return None
        if is_being_deleted(claim):
            return await self._finalize(claim)
        if not has_finalizer(claim, FINALIZER):
            fins = [*(claim["metadata"].get("finalizers") or []), FINALIZER]
            base = claim["metadata"]["resourceVersion"]
            try:
                claim = await self.client.patch(
                    NODECLAIM, req.name, {"metadata": {"finalizers": fins, "resourceVersion": base}}
                )
            except NotFoundError:
                # Deleted before it had our finalizer (a cache just filled from the apiserver's
                # watch cache can trail a delete): nothing was launched for it, nothing to undo.
                self._written.pop(req.name, None)
                return None
            self._written[req.name] = (base, copy.deepcopy(claim))
        before = repr(claim.get("status"))
        result = await self._advance(claim)
        if claim.get("_delete"):
            self._written.pop(req.name, None)
            return None
        if repr(claim.get("status")) != before:
            base = claim["metadata"]["resourceVersion"]
            updated = await self.client.update_status(claim)
            self._written[req.name] = (base, updated)
        return result

    async def _advance(self, claim: dict[str, Any]) -> Result | None:
        opts = self.options
        if not is_true(claim, LAUNCHED):
            age = _since(None, claim["metadata"].get("creationTimestamp"))
            if age > opts.launch_timeout:
                await self._expire(claim, "LaunchTimeout", f"not launched within {opts.launch_timeout:.0f}s")
                return None
            wait = await self._launch(claim)
            if wait is not None:
                return Result(requeue_after=max(min(wait, opts.launch_timeout - age + 0.5), 0.1))
        status = claim.setdefault("status", {})
        node = self._node_for(claim)
        if node is None:
            if is_true(claim, REGISTERED):
                await self._expire(claim, "NodeDeleted", f"node {status.get('nodeName')} was deleted")
                return None
            waited = _since(get_condition(claim, LAUNCHED), claim["metadata"].get("creationTimestamp"))
            if waited > opts.registration_timeout:
                await self._expire(
                    claim,
                    "RegistrationTimeout",
                    f"no node registered within {opts.registration_timeout:.0f}s",
                )
                return None
            set_condition(claim, REGISTERED, "Unknown", "AwaitingNode", "waiting for the node to register")
            self._set_ready(claim)
            return Result(
                requeue_after=max(min(opts.poll_interval * 5, opts.registration_timeout - waited), 0.1)
            )
        await self._sync_node(claim, node)
        status["nodeName"] = node["metadata"]["name"]
        if not status.get("providerID") and (node.get("spec") or {}).get("providerID"):
            status["providerID"] = node["spec"]["providerID"]
        set_condition(claim, REGISTERED, True, "Registered", "")
        if not self._initialized(claim, node):
            waited = _since(get_condition(claim, REGISTERED), None)
            if waited > opts.initialization_timeout:
                await self._expire(
                    claim,
                    "InitializationTimeout",
                    f"node {node['metadata']['name']} not Ready with its GPUs within "
                    f"{opts.initialization_timeout:.0f}s",
                )
                return None
            set_condition(
                claim,
                INITIALIZED,
                "Unknown",
                "AwaitingInitialization",
                f"waiting for the node to be Ready with {GPU_RESOURCE} allocatable",
            )
            self._set_ready(claim)
            return Result(
                requeue_after=max(min(opts.poll_interval * 5, opts.initialization_timeout - waited), 0.1)
            )
        set_condition(claim, INITIALIZED, True, "Initialized", "")
        await self._label_node(node, {LABEL_INITIALIZED: "true"})
        self._set_ready(claim)
        return None

    def _set_ready(self, claim: dict[str, Any]) -> None:
        parts = (LAUNCHED, REGISTERED, INITIALIZED)
        if all(is_true(claim, t) for t in parts):
            set_condition(claim, READY, True, "Ready", "")
            return
        for t in parts:
            cond = get_condition(claim, t)
            if cond is None or cond.get("status") != "True":
                reason = (cond or {}).get("reason") or f"Not{t}"
                message = (cond or {}).get("message") or f"{t} is not True"
                set_condition(
                    claim,
                    READY,
                    "False" if (cond or {}).get("status") == "False" else "Unknown",
                    reason,
                    message,
                )
                return

    async def _launch(self, claim: dict[str, Any]) -> float | None:
        """Create or look at the instance; None once launched, else seconds to wait."""
        name = claim["metadata"]["name"]
        opts = self.options
        try:
            inst = await self.cloud.get(name)
            if inst is None:
                inst = await self.cloud.create(claim)
        except CloudError as err:
            self._refused(claim, err)
            return opts.error_retry if not err.retryable else opts.poll_interval
        except ValueError as err:
            set_condition(claim, LAUNCHED, False, "InvalidNodeClaim", str(err))
            self._set_ready(claim)
            self.recorder.emit(claim, WARNING, "InvalidNodeClaim", str(err))
            return opts.error_retry
        if inst.state == InstanceState.FAILED:
            failure = inst.error or CloudError(
                "ProvisioningFailed", f"instance {inst.name} failed to provision"
            )
            self._refused(claim, failure)
            # A failed instance is deleted so the next attempt creates afresh (quota may be fixed).
            try:
                await self.cloud.delete(inst)
            except CloudError as exc:
                _log.warning("could not delete a failed instance", instance=inst.name, error=str(exc))
            return opts.error_retry
        if inst.state == InstanceState.RUNNING:
            # Some clouds learn the providerID only from the Node (AKS: the VMSS instance);
            # registration fills it in then.
            self._launched(claim, inst)
            return None
        if inst.state == InstanceState.DELETING:
            # A failed instance on its way out; a new one is created once it is gone.
            try:
                await self.cloud.delete(inst)
            except CloudError as exc:
                _log.warning("could not delete a failed instance", instance=inst.name, error=str(exc))
            return opts.poll_interval
        # While retrying after a refusal the refusal stays on the claim until a launch succeeds,
        # so the Workspace keeps showing the cloud's reason instead of flapping.
        if get_condition(claim, LAUNCHED) is None:
            set_condition(
                claim, LAUNCHED, "Unknown", "Launching", f"instance {inst.name} is {inst.state.value}"
            )
            self._set_ready(claim)
        return opts.poll_interval

    def _refused(self, claim: dict[str, Any], err: CloudError) -> None:
        changed = set_condition(claim, LAUNCHED, False, err.code or "CloudError", err.message)
        self._set_ready(claim)
        if changed:
            self.recorder.emit(claim, WARNING, err.code or "CloudError", err.message)

    def _launched(self, claim: dict[str, Any], inst: Instance) -> None:
        status = claim.setdefault("status", {})
        if inst.provider_id:
            status["providerID"] = inst.provider_id
        cap = inst.capacity or node_shape(inst.instance_type).capacity()
        status["capacity"] = dict(cap)
        status["allocatable"] = dict(cap)
        if set_condition(claim, LAUNCHED, True, "Launched", ""):
            self.recorder.emit(
                claim, NORMAL, "Launched", f"instance {inst.name} ({inst.instance_type}) launched"
            )

    def _node_for(self, claim: dict[str, Any]) -> dict[str, Any] | None:
        """The Node by providerID (Karpenter's link) or by the claim label kaito's clouds set."""
        pid = (claim.get("status") or {}).get("providerID")
        nodes = self.manager.cache.by_index(NODE, PROVIDER_ID_INDEX, pid) if pid else []
        if not nodes:
            nodes = self.manager.cache.by_index(NODE, NODECLAIM_LABEL_INDEX, claim["metadata"]["name"])
        live = [n for n in nodes if not is_being_deleted(n)]
        return live[0] if live else None

    def _initialized(self, claim: dict[str, Any], node: dict[str, Any]) -> bool:
        if not is_node_ready(node):
            return False
        want = (claim.get("status") or {}).get("capacity", {}).get(GPU_RESOURCE)
        if want and want != "0":
            have = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
            return int(have) >= 1
        return True

    async def _sync_node(self, claim: dict[str, Any], node: dict[str, Any]) -> None:
        """Labels and taints from the claim, an owner reference to it (Karpenter's registration)."""
        meta = node["metadata"]
        labels = meta.get("labels") or {}
        wanted = {**claim_node_labels(claim), LABEL_REGISTERED: "true"}
        patch: dict[str, Any] = {}
        new_labels = {k: v for k, v in wanted.items() if labels.get(k) != v}
        if new_labels:
            patch.setdefault("metadata", {})["labels"] = new_labels
        ref = {
            "apiVersion": NODECLAIM.api_version,
            "kind": NODECLAIM.kind,
            "name": claim["metadata"]["name"],
            "uid": claim["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }
        refs = meta.get("ownerReferences") or []
        # An adopted node (a machine's own Node) must outlive its claim: no owner reference, or
        # the garbage collector would delete it with the claim.
        if not is_adopted(node) and not any(r.get("uid") == ref["uid"] for r in refs):
            patch.setdefault("metadata", {})["ownerReferences"] = [*refs, ref]
        taints = list((node.get("spec") or {}).get("taints") or [])
        have = {(t.get("key"), t.get("effect")) for t in taints}
        missing = [t for t in claim_taints(claim) if (t.get("key"), t.get("effect")) not in have]
        if missing:
            patch["spec"] = {"taints": taints + missing}
        if patch:
            await self.client.patch(NODE, meta["name"], patch)

    async def _label_node(self, node: dict[str, Any], labels: dict[str, str]) -> None:
        have = node["metadata"].get("labels") or {}
        if any(have.get(k) != v for k, v in labels.items()):
            await self.client.patch(NODE, node["metadata"]["name"], {"metadata": {"labels": labels}})

    async def _expire(self, claim: dict[str, Any], reason: str, message: str) -> None:
        """Liveness: delete the claim; the finalizer cleans up and the backend replaces it."""
        _log.info("deleting NodeClaim", nodeclaim=claim["metadata"]["name"], reason=reason, message=message)
        self.recorder.emit(claim, WARNING, reason, message)
        claim["_delete"] = True
        await self.client.delete(NODECLAIM, claim["metadata"]["name"], ignore_not_found=True)

    async def _finalize(self, claim: dict[str, Any]) -> Result | None:
        name = claim["metadata"]["name"]
        if not has_finalizer(claim, FINALIZER):
            return None
        inst = await self.cloud.get(name)
        if inst is not None and not await self.cloud.delete(inst):
            return Result(requeue_after=self.options.poll_interval)
        nodes = [n for n in await self.client.list(NODE, label_selector={LABEL_NODECLAIM: name}, copy=False)]
        node = self._node_for(claim)
        if node is not None and all(n["metadata"]["name"] != node["metadata"]["name"] for n in nodes):
            nodes.append(node)
        waiting = False
        for n in nodes:
            if is_adopted(n):
                # A machine's own Node: the cloud releases it (above), it is never deleted. Still
                # labelled for this claim means the release has not been seen yet: look again.
                held = ((n["metadata"].get("labels") or {}).get(LABEL_NODECLAIM)) == name
                waiting = waiting or held
                continue
            waiting = True
            try:
                await self.client.delete(NODE, n["metadata"]["name"])
            except NotFoundError:
                continue
        if waiting:
            return Result(requeue_after=self.options.poll_interval)
        fins = [f for f in claim["metadata"].get("finalizers") or [] if f != FINALIZER]
        with contextlib.suppress(NotFoundError):
            await self.client.patch(
                NODECLAIM,
                name,
                {"metadata": {"finalizers": fins, "resourceVersion": claim["metadata"]["resourceVersion"]}},
            )
        return None


class OrphanCollector:
    """Deletes cloud instances whose NodeClaim is gone (leader-only, periodic)."""

    name = "nodeclaim-gc"
    needs_leader_election = True

    def __init__(self, manager: Manager, cloud: CloudProvider, options: NodeClaimOptions) -> None:
        self.manager = manager
        self.cloud = cloud
        self.options = options
        self.collected: list[str] = []

    async def collect_once(self) -> list[str]:
        claims = {c["metadata"]["name"] for c in await self.manager.client.list(NODECLAIM, copy=False)}
        now = time.time()
        gone: list[str] = []
        for inst in await self.cloud.list():
            if inst.nodeclaim in claims or inst.state == InstanceState.DELETING:
                continue
            if now - inst.created_at < self.options.gc_grace:
                continue
            _log.info("deleting orphan instance", instance=inst.name, nodeclaim=inst.nodeclaim)
            await self.cloud.delete(inst)
            gone.append(inst.name)
        self.collected.extend(gone)
        return gone

    async def start(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.collect_once()
            except (ApiError, CloudError, OSError) as exc:
                _log.warning("orphan collection failed; will retry", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.gc_interval)


def setup_nodeclaim_controller(
    manager: Manager, cloud: CloudProvider, options: NodeClaimOptions | None = None
) -> NodeClaimController:
    """Register the reconciler (NodeClaims of the pool, their Nodes) and the collector."""
    opts = options or NodeClaimOptions()
    ctrl = NodeClaimController(manager, cloud, opts)
    (
        manager.builder()
        .named("nodeclaim")
        .for_(NODECLAIM, predicates=[label_selector({LABEL_NODEPOOL: opts.nodepool})])
        .watches(NODE, ctrl.node_to_claims)
        .with_options(max_concurrent_reconciles=opts.max_concurrent_reconciles)
        .complete(ctrl)
    )
    manager.add(ctrl.collector)
    return ctrl
