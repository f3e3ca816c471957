"""Provisioning under faults the apiserver will not produce on demand (issue 20): a NodeClaim
watch held back so the cache trails the server, a create whose answer is lost to a cut
connection, a scale-down with pod-0 on the oldest node, a preferred node blinking NotReady, a
NodePool the cache has not shown yet, and claims whose Workspace is gone.

Faults are real: a loopback proxy (``faultproxy``) in front of the real apiserver holds back
watch streams or cuts a connection after the apiserver answered; everything else is the real
control plane. No node-provisioner runs unless a test says so, so claims carry no finalizer and a
deleted claim is gone at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiohttp import web
from faultproxy import Chunks, FaultProxy, Seen
from provisioning_helpers import ROOT, condition, get_or_none, new_manager, running

from kaito.api.nodeclaim import NODECLAIM, NODEPOOL
from kaito.envtest import eventually
from kaito.nodes import NODE, NodeRequest
from kaito.operator import Operator, OperatorOptions, build_operator
from kaito.operator.options import ProvisionerOptions
from kaito.provisioners.gpu_provisioner import GPUProvisioner, nodeclaim_manifest
from kaito.provisioners.karpenter import KarpenterProvisioner, nodepool_manifest, nodepool_name
from kaito.provisioners.options import GPUProvisionerOptions
from kaito.runtime import GVK, ApiError, Client, Manager, NotFoundError

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]

SEED = ROOT / "tests" / "unit" / "api" / "seed" / "phi3_inference.yaml"
SEED_NAME = "workspace-phi-3-mini"
WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
POD = GVK("", "v1", "Pod")
#: kwok leaves Nodes with this label alone, so a test sets their Ready condition itself.
UNMANAGED = {"kaito.sh/node-agent": "local"}

# -- faults ------------------------------------------------------------------------------------

_REQUEST: contextvars.ContextVar[web.Request] = contextvars.ContextVar("request")


class Proxy(FaultProxy):
    """The fault proxy, plus the request being served, so a fault can drop its connection."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        _REQUEST.set(request)
        return await super()._handle(request)


class Faults:
    """Watches of ``held`` resources deliver nothing until ``release()`` (the cache goes stale,
    as a lagging watch leaves it); the first ``cut_creates`` POSTs of NodeClaims reach the
    apiserver, which creates the claim, and then lose their answer: ``loss="cut"`` drops the
    client's connection, ``loss="504"`` answers 504 + Retry-After instead (a gateway timing out
    on a slow apiserver; the client resends and the apiserver answers AlreadyExists).
    ``created``: names the apiserver created through the proxy, in order."""

    def __init__(self, *held: str, cut_creates: int = 0, loss: str = "cut") -> None:
        self.held = held
        self.released = asyncio.Event()
        self.cut_creates = cut_creates
        self.loss = loss
        self.created: list[str] = []
        self.cut: list[str] = []

    def release(self) -> None:
        self.released.set()

    async def fault(self, seen: Seen, chunks: Chunks) -> Chunks | web.StreamResponse | None:
        resource = seen.path.rsplit("/", 1)[-1]
        if seen.is_watch and resource in self.held and not self.released.is_set():
            return self._after_release(chunks)
        if seen.method == "POST" and resource == "nodeclaims":
            body = b"".join([c async for c in chunks])
            answer = json.loads(body) if body else {}
            if answer.get("kind") == "NodeClaim":
                self.created.append(answer["metadata"]["name"])
                if self.cut_creates > 0:
                    self.cut_creates -= 1
                    self.cut.append(answer["metadata"]["name"])
                    if self.loss == "504":
                        return web.Response(
                            status=504,
                            headers={"Retry-After": "0.1"},
                            content_type="application/json",
                            text='{"kind":"Status","apiVersion":"v1","status":"Failure",'
                            '"reason":"Timeout","message":"gateway timeout","code":504}',
                        )
                    request = _REQUEST.get()
                    assert request.transport is not None
                    request.transport.close()  # the apiserver's 201 never reaches the client
                    return web.Response(status=502)
            return _replay(body)
        return None

    async def _after_release(self, chunks: Chunks) -> AsyncIterator[bytes]:
        await self.released.wait()
        async for chunk in chunks:
            yield chunk


async def _replay(body: bytes) -> AsyncIterator[bytes]:
    yield body


# -- helpers -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def operator(config: Any, **options: Any) -> AsyncIterator[Operator]:
    """The workspace controller with the gpu-provisioner backend (no node-provisioner)."""
    opts = OperatorOptions(
        provisioner=ProvisionerOptions(name="gpu-provisioner"),
        metrics_bind_address="0",
        health_probe_bind_address="0",
    )
    # Set after construction, so that this file also runs against a build that lacks an option
    # (that is how each test was seen to fail before its fix).
    for key, value in options.items():
        setattr(opts.provisioner, key, value)
    op = build_operator(config, opts, handle_signals=False)
    task = asyncio.create_task(op.start())
    try:
        await asyncio.wait_for(op.manager.elected.wait(), 60)
        yield op
    finally:
        op.stop()
        await asyncio.wait_for(task, 60)


def apply_seed(cluster: Any, namespace: str, name: str = SEED_NAME) -> str:
    text = SEED.read_text().replace(f"name: {SEED_NAME}", f"name: {name}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    return name


async def claims_of(client: Client, ns: str, name: str) -> list[dict[str, Any]]:
    return await client.list(
        NODECLAIM,
        label_selector={"kaito.sh/workspace": name, "kaito.sh/workspacenamespace": ns},
        cached=False,
    )


async def delete_workspace(client: Client, ns: str, name: str) -> None:
    """Delete and wait until the Workspace is gone (its finalizer ran)."""
    with contextlib.suppress(NotFoundError):
        await client.delete(WORKSPACE, name, ns)

    async def gone() -> bool:
        return await get_or_none(client, WORKSPACE, name, ns) is None

    await eventually(gone, f"Workspace {ns}/{name} gone", timeout=90)


def request(name: str, ns: str, **kw: Any) -> NodeRequest:
    base: dict[str, Any] = {
        "workspace": name,
        "namespace": ns,
        "uid": "u1",
        "instance_type": "Standard_NC6s_v3",
        "count": 1,
        "label_selector": {"matchLabels": {"apps": "phi-3"}},
    }
    base.update(kw)
    return NodeRequest(**base)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(status: str, since: datetime) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": "KubeletReady" if status == "True" else "KubeletNotReady",
        "message": "set by the test",
        "lastHeartbeatTime": _rfc3339(datetime.now(UTC)),
        "lastTransitionTime": _rfc3339(since),
    }


async def make_node(client: Client, name: str, *, ready: str = "True", since: datetime | None = None) -> None:
    """A GPU Node kwok leaves alone, with the Ready condition given."""
    labels = {
        **UNMANAGED,
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": "Standard_NC6s_v3",
    }
    node = await client.create(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    )
    await set_node_ready(client, node["metadata"]["name"], ready, since or datetime.now(UTC))


async def set_node_ready(client: Client, name: str, status: str, since: datetime) -> None:
    patch = {"status": {"conditions": [ready_condition(status, since)]}}
    await client.patch(NODE, name, patch, subresource="status", patch_type="strategic")


async def make_claim(client: Client, req: NodeRequest, *, ready_on: str | None = None) -> dict[str, Any]:
    """A claim of ``req``'s Workspace as the backend writes it; ``ready_on``: marked Ready on that
    node (no node-provisioner runs here to do it)."""
    claim = await client.create(nodeclaim_manifest(req, name=f"ws{uuid.uuid4().hex[:9]}"))
    if ready_on is not None:
        now = _rfc3339(datetime.now(UTC))
        claim["status"] = {
            "nodeName": ready_on,
            "conditions": [
                {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now}
                for t in ("Launched", "Registered", "Initialized", "Ready")
            ],
        }
        claim = await client.update_status(claim)
    return claim


async def create_pod(client: Client, ns: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod bound to ``node`` (a fresh namespace's default ServiceAccount may not exist yet:
    the create is retried until admission lets it in)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }

    async def create() -> dict[str, Any] | None:
        try:
            return await client.create(pod)
        except ApiError as exc:
            if exc.status == 403 and "serviceaccount" in str(exc).lower():
                return None
            raise

    return await eventually(create, f"pod {ns}/{name} created", timeout=30)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _created(obj: dict[str, Any]) -> float:
    return _ts(obj["metadata"]["creationTimestamp"])


async def next_second_after(obj: dict[str, Any]) -> None:
    """creationTimestamp has whole seconds: wait until an object created now is strictly newer."""
    await eventually(lambda: time.time() >= _created(obj) + 1.05, "a new second", timeout=5, interval=0.05)


# -- bug 1: a Workspace deleted before the cache shows its claim -------------------------------


async def test_workspace_deleted_before_cache_shows_its_claim_leaves_no_claim(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """Fault: the operator's NodeClaim watch is held back, so its cache never shows the claim
    it created. The Workspace is deleted once the claim exists on the server; its finalizer must
    find the claim on the server and delete it before letting the Workspace go (before the fix
    the cached LIST was empty, the finalizer went at once and the claim stayed for good)."""
    faults = Faults("nodeclaims")
    async with Proxy(crds.client_configuration(), fault=faults.fault) as proxy:
        try:
            async with operator(proxy.configuration()) as op:
                name = apply_seed(crds, namespace)
                claims = await eventually(
                    lambda: claims_of(kclient, namespace, name), "the Workspace's claim", timeout=60
                )
                # The fault holds: the operator's cache does not show the claim.
                assert op.manager.cache.list(NODECLAIM, label_selector={"kaito.sh/workspace": name}) == []
                await delete_workspace(kclient, namespace, name)
                assert await claims_of(kclient, namespace, name) == [], (
                    f"NodeClaim {claims[0]['metadata']['name']} outlived its Workspace"
                )
        finally:
            faults.release()


# -- bug 2: a lost create answer ----------------------------------------------------------------


@pytest.mark.parametrize("loss", ["cut", "504"])
async def test_lost_create_answer_makes_no_second_claim(
    crds: Any, kclient: Client, namespace: str, loss: str
) -> None:
    """Fault: the proxy forwards the first NodeClaim POST (the apiserver creates the claim) and
    drops the connection before the answer ("cut"), or answers 504 + Retry-After so the client
    resends and gets AlreadyExists ("504"); the NodeClaim watch is held back meanwhile, so only
    the backend's own memory knows the claim exists. The retry must not create a second claim,
    and once the watch delivers, the first claim is the one that stays (before the fix a second
    claim was made under a new name and the surplus rule then deleted the original)."""
    faults = Faults("nodeclaims", cut_creates=1, loss=loss)
    async with Proxy(crds.client_configuration(), fault=faults.fault) as proxy:
        try:
            async with operator(proxy.configuration()):
                name = apply_seed(crds, namespace)

                async def reported() -> Any:
                    cond = condition(await get_or_none(kclient, WORKSPACE, name, namespace), "ResourceReady")
                    return cond or None

                # A reconcile after the cut got through provisioning and wrote the status.
                await eventually(reported, "ResourceReady reported after the cut", timeout=60)
                assert len(faults.cut) == 1
                first = faults.cut[0]
                assert faults.created == [first], f"claims created: {faults.created}"
                faults.release()

                async def settled() -> Any:
                    claims = await claims_of(kclient, namespace, name)
                    return claims if len(claims) == 1 else None

                claims = await eventually(settled, "one claim", timeout=60)
                assert claims[0]["metadata"]["name"] == first
                assert faults.created == [first]
                await delete_workspace(kclient, namespace, name)
                assert await claims_of(kclient, namespace, name) == []
        finally:
            faults.release()


async def test_surplus_rule_keeps_the_original_claim(crds: Any, kclient: Client, namespace: str) -> None:
    """Two not-Ready claims for a one-node Workspace (a duplicate from a lost answer, made by an
    earlier controller): the newer one goes, the original stays (before the fix: the reverse)."""
    req = request("dup", namespace)
    original = await make_claim(kclient, req)
    await next_second_after(original)
    duplicate = await make_claim(kclient, req)
    mgr = new_manager(crds)
    backend = GPUProvisioner(mgr, cloud="azure")
    async with running(mgr):

        async def both_cached() -> bool:
            return len(await backend._claims(req)) == 2

        await eventually(both_cached, "both claims in the cache", timeout=30)
        await backend.provision_nodes(req)
        left = [c["metadata"]["name"] for c in await claims_of(kclient, namespace, "dup")]
        assert left == [original["metadata"]["name"]], (
            f"kept {left}; original {original['metadata']['name']}, duplicate {duplicate['metadata']['name']}"
        )
        await eventually(lambda: backend.delete_nodes(req), "claims deleted", timeout=30)


# -- bug 3: scale-down keeps pod-0's node -------------------------------------------------------


async def test_scale_down_keeps_the_node_of_pod_zero(crds: Any, kclient: Client, namespace: str) -> None:
    """Two Ready claims; pod-0 runs on the OLDER claim's node, pod-1 on the newer one's. Scaling to
    one node must delete the claim under pod-1 (before the fix the oldest Ready claim went, and
    pod-0 with its loaded model with it). Pods are read by kaito's workspace labels."""
    ws = "scale"
    req = request(ws, namespace, count=2)
    suffix = uuid.uuid4().hex[:6]
    node_a, node_b = f"scale-a-{suffix}", f"scale-b-{suffix}"
    for n in (node_a, node_b):
        await make_node(kclient, n)
    try:
        older = await make_claim(kclient, req, ready_on=node_a)
        await next_second_after(older)
        newer = await make_claim(kclient, req, ready_on=node_b)
        labels = {"kaito.sh/workspace": ws, "kaito.sh/workspacenamespace": namespace}
        for ordinal, node in ((0, node_a), (1, node_b)):
            await create_pod(kclient, namespace, f"{ws}-{ordinal}", node, labels)
        mgr = new_manager(crds)
        mgr.cache.get_informer(POD)  # the workspace controller's Pod watch, as in the operator
        backend = GPUProvisioner(mgr, cloud="azure")
        async with running(mgr):

            async def cached() -> bool:
                pods = mgr.cache.list(POD, namespace, {"kaito.sh/workspace": ws})
                return len(pods) == 2 and len(await backend._claims(req)) == 2

            await eventually(cached, "claims and pods in the cache", timeout=30)
            await backend.provision_nodes(request(ws, namespace, count=1))
            left = [c["metadata"]["name"] for c in await claims_of(kclient, namespace, ws)]
            assert left == [older["metadata"]["name"]], (
                f"kept {left}: pod-0 runs on {node_a} (claim {older['metadata']['name']}), "
                f"pod-1 on {node_b} (claim {newer['metadata']['name']})"
            )
            await eventually(lambda: backend.delete_nodes(req), "claims deleted", timeout=30)
    finally:
        for n in (node_a, node_b):
            with contextlib.suppress(NotFoundError):
                await kclient.delete(NODE, n)


async def test_surplus_delete_is_remembered_while_the_claim_watch_lags(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """Found by the chaos suite's lagging-watch fault: scale 2 -> 1 deletes the claim under
    pod-1; the NodeClaim watch is held, so the cache still shows that claim live. The
    StatefulSet then moves pod-0 onto the deleted claim's node (a rolling update). Before the fix
    the next reconcile counted both claims again, re-ranked them by the moved pod and deleted
    the other one too: both nodes of a Workspace that wants one gone. Deletes are now
    remembered until the cache shows them."""
    ws = "lagdel"
    req = request(ws, namespace, count=2)
    suffix = uuid.uuid4().hex[:6]
    node_a, node_b = f"lagdel-a-{suffix}", f"lagdel-b-{suffix}"
    for n in (node_a, node_b):
        await make_node(kclient, n)
    labels = {"kaito.sh/workspace": ws, "kaito.sh/workspacenamespace": namespace}
    faults = Faults("nodeclaims")
    try:
        older = await make_claim(kclient, req, ready_on=node_a)
        await next_second_after(older)
        newer = await make_claim(kclient, req, ready_on=node_b)
        for ordinal, node in ((0, node_a), (1, node_b)):
            await create_pod(kclient, namespace, f"{ws}-{ordinal}", node, labels)
        async with Proxy(crds.client_configuration(), fault=faults.fault) as proxy:
            mgr = Manager(
                proxy.configuration(),
                handle_signals=False,
                metrics_bind_address="0",
                health_probe_bind_address="0",
            )
            mgr.cache.get_informer(POD)
            backend = GPUProvisioner(mgr, cloud="azure")
            async with running(mgr):

                async def cached(pods: int) -> bool:
                    listed = mgr.cache.list(POD, namespace, {"kaito.sh/workspace": ws})
                    return len(listed) == pods and len(await backend._claims(req)) == 2

                await eventually(lambda: cached(2), "claims and pods in the cache", timeout=30)
                one = request(ws, namespace, count=1)
                await backend.provision_nodes(one)
                assert [c["metadata"]["name"] for c in await claims_of(kclient, namespace, ws)] == [
                    older["metadata"]["name"]
                ]
                # the watch lags: the deleted claim is still live in the cache
                stale = {c["metadata"]["name"] for c in await backend._claims(req)}
                assert newer["metadata"]["name"] in stale
                # pod-0 moves onto the deleted claim's node; pod-1 is gone
                for ordinal in (0, 1):
                    await kclient.delete(POD, f"{ws}-{ordinal}", namespace, grace_period_seconds=0)
                await eventually(lambda: cached(0), "the pods gone from the cache", timeout=30)
                await create_pod(kclient, namespace, f"{ws}-0", node_b, labels)
                await eventually(lambda: cached(1), "the moved pod-0 in the cache", timeout=30)
                await backend.provision_nodes(one)
                left = [c["metadata"]["name"] for c in await claims_of(kclient, namespace, ws)]
                assert left == [older["metadata"]["name"]], f"claims left: {left} (the Workspace wants 1)"
                faults.release()
                await eventually(lambda: backend.delete_nodes(req), "claims deleted", timeout=30)
    finally:
        faults.release()
        for n in (node_a, node_b):
            with contextlib.suppress(NotFoundError):
                await kclient.delete(NODE, n)


# -- issue 20 item 11: a preferred node blinking NotReady; Karpenter's stale cache --------------


async def test_preferred_node_briefly_not_ready_buys_no_claim(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """A Ready preferred node goes NotReady (a kubelet restart): within the grace period it still
    stands in for a claim, so no GPU claim is created (before the fix one was, and deleted as
    surplus when the node came back); NotReady for longer than the grace, a claim is made."""
    node = f"pref-{uuid.uuid4().hex[:6]}"
    await make_node(kclient, node)
    req = request("pref", namespace, preferred_nodes=(node,))
    try:
        mgr = new_manager(crds)
        backend = GPUProvisioner(mgr, GPUProvisionerOptions(preferred_node_grace=120.0), cloud="azure")
        async with running(mgr):

            def cached_ready(want: str) -> bool:
                obj = mgr.cache.get(NODE, node)
                conds = ((obj or {}).get("status") or {}).get("conditions") or []
                return any(c.get("type") == "Ready" and c.get("status") == want for c in conds)

            await eventually(lambda: cached_ready("True"), "node Ready in the cache", timeout=30)
            await backend.provision_nodes(req)
            assert await claims_of(kclient, namespace, "pref") == []

            await set_node_ready(kclient, node, "False", datetime.now(UTC))
            await eventually(lambda: cached_ready("False"), "node NotReady in the cache", timeout=30)
            await backend.provision_nodes(req)
            assert await claims_of(kclient, namespace, "pref") == [], "a blip made a GPU claim"
            status = await backend.ensure_nodes_ready(req)
            assert not status.ready
            assert status.requeue_after is not None and 0 < status.requeue_after <= 121

            # Down for longer than the grace: the node no longer counts, a claim replaces it.
            await set_node_ready(kclient, node, "False", datetime.now(UTC) - timedelta(minutes=10))

            async def old_outage_cached() -> bool:
                obj = mgr.cache.get(NODE, node) or {}
                conds = (obj.get("status") or {}).get("conditions") or []
                since = [_ts(c["lastTransitionTime"]) for c in conds if c.get("type") == "Ready"]
                return bool(since) and since[0] < time.time() - 300

            try:
                await eventually(old_outage_cached, "the long outage in the cache", timeout=30)
            except AssertionError as exc:
                # What the cache and the apiserver each hold, and how the node informer fared.
                stored = await kclient.get(NODE, node)
                informer = mgr.cache.get_informer(NODE)
                raise AssertionError(
                    f"{exc}\ncached: {(mgr.cache.get(NODE, node) or {}).get('status')}\n"
                    f"apiserver: {stored.get('status')} rv={stored['metadata'].get('resourceVersion')}\n"
                    f"informer: {informer.stats} last rv {informer.last_sync_resource_version}"
                ) from None
            await backend.provision_nodes(req)
            assert len(await claims_of(kclient, namespace, "pref")) == 1
            await eventually(lambda: backend.delete_nodes(req), "claims deleted", timeout=30)
    finally:
        with contextlib.suppress(NotFoundError):
            await kclient.delete(NODE, node)


@contextlib.asynccontextmanager
async def karpenter_behind_a_held_nodepool_watch(
    cluster: Any,
) -> AsyncIterator[tuple[Manager, KarpenterProvisioner]]:
    """The karpenter backend on a running manager whose NodePool watch delivers nothing."""
    faults = Faults("nodepools")
    async with Proxy(cluster.client_configuration(), fault=faults.fault) as proxy:
        try:
            mgr = Manager(
                proxy.configuration(),
                handle_signals=False,
                metrics_bind_address="0",
                health_probe_bind_address="0",
            )
            backend = KarpenterProvisioner(mgr)
            async with running(mgr):
                yield mgr, backend
        finally:
            faults.release()


async def test_karpenter_create_over_a_stale_cache_is_converged(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """Fault: the NodePool watch is held back. A second reconcile, not seeing the pool the first
    one created, creates again: AlreadyExists means converged, not an error (before the fix it
    raised, failing every reconcile until the watch caught up)."""
    async with karpenter_behind_a_held_nodepool_watch(crds) as (mgr, backend):
        req = request(f"kp-{uuid.uuid4().hex[:5]}", namespace)
        pool = nodepool_name(req.namespace, req.workspace)
        await backend.provision_nodes(req)
        await backend.provision_nodes(req)  # the cache still shows no pool
        assert mgr.cache.get(NODEPOOL, pool) is None  # the fault holds
        assert await get_or_none(kclient, NODEPOOL, pool) is not None
        with contextlib.suppress(NotFoundError):
            await kclient.delete(NODEPOOL, pool)


async def test_karpenter_delete_removes_a_pool_the_cache_never_showed(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """Fault: the NodePool watch is held back; the Workspace's pool exists on the server only.
    Deleting the Workspace's nodes deletes the pool by name and answers done only once the server
    has no pool (before the fix delete_nodes answered done at once and the pool stayed)."""
    async with karpenter_behind_a_held_nodepool_watch(crds) as (mgr, backend):
        req = request(f"kp-{uuid.uuid4().hex[:5]}", namespace)
        pool = nodepool_name(req.namespace, req.workspace)
        await kclient.create(nodepool_manifest(req))
        assert mgr.cache.get(NODEPOOL, pool) is None  # the fault holds
        await eventually(lambda: backend.delete_nodes(req), "delete_nodes done", timeout=30)
        assert await get_or_none(kclient, NODEPOOL, pool) is None, "the NodePool outlived its Workspace"


# -- the last line of defence: claims of Workspaces that are gone --------------------------------


async def test_orphan_sweep_deletes_claims_of_missing_workspaces_only(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """Fault: the operator's Workspace watch is held back, so its cache does not show a Workspace
    created after it started. A claim naming that Workspace and one naming a Workspace that does
    not exist are both older than the grace: the sweep deletes the second only (it asks the
    server before it deletes; the cache alone would have taken both). Before the fix nothing
    deleted either."""
    faults = Faults("workspaces")
    async with Proxy(crds.client_configuration(), fault=faults.fault) as proxy:
        try:
            sweep = GPUProvisionerOptions(orphan_nodeclaim_grace=1.0, orphan_nodeclaim_interval=0.3)
            async with operator(proxy.configuration(), gpu_provisioner=sweep) as op:
                live = apply_seed(crds, namespace, "sweep-live")
                kept = await make_claim(kclient, request(live, namespace))
                orphan = await make_claim(kclient, request("sweep-gone", namespace))
                assert op.manager.cache.get(WORKSPACE, live, namespace) is None  # the fault holds

                async def orphan_gone() -> bool:
                    return await get_or_none(kclient, NODECLAIM, orphan["metadata"]["name"]) is None

                await eventually(orphan_gone, "the orphan claim deleted", timeout=30)
                # The sweep that took the orphan also saw the other claim past its grace: it was
                # made first (creation stamps have whole seconds, so the wall clock cannot tell).
                assert _created(kept) <= _created(orphan)
                assert await get_or_none(kclient, NODECLAIM, kept["metadata"]["name"]) is not None
                faults.release()
                await delete_workspace(kclient, namespace, live)

                # Deleted before the released watch let the controller add its finalizer, the
                # Workspace goes at once and its claim is the sweep's (past the grace); after
                # the finalizer, delete_nodes takes it. Either way none is left.
                async def none_left() -> bool:
                    return await claims_of(kclient, namespace, live) == []

                await eventually(none_left, "the live Workspace's claim gone after its deletion", timeout=30)
        finally:
            faults.release()


async def test_workspaces_deleted_right_after_creation_leave_no_claims(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """The issue's black-box report, as a client sees it: Workspaces created and each deleted
    0-20 ms later through the API. No fault is injected: the race is the informer's own lag
    behind a claim created a moment before the deletion arrives. Every NodeClaim must be gone
    once the Workspaces are (before the fix some outlived them for good). Part of the race is the
    apiserver's: a DELETE that read the Workspace before our finalizer patch deletes it outright,
    finalizer and all, while the reconcile that added the finalizer creates a claim; the
    controller must notice the Workspace is gone and release the claim. The orphan sweep keeps
    its default grace (300 s), so it cannot be what cleans up here."""
    body = yaml.safe_load(SEED.read_text())
    names = [f"burst-{i}" for i in range(30)]
    async with operator(crds.client_configuration()):

        async def create_then_delete(i: int, name: str) -> None:
            ws = {**body, "metadata": {"name": name, "namespace": namespace}}
            await kclient.create(ws)
            await asyncio.sleep((i % 5) * 0.005)  # 0-20 ms, as the report's client did
            await kclient.delete(WORKSPACE, name, namespace)

        await asyncio.gather(*(create_then_delete(i, n) for i, n in enumerate(names)))

        async def all_gone() -> bool:
            return not await kclient.list(WORKSPACE, namespace, cached=False)

        await eventually(all_gone, "every Workspace deleted", timeout=120)

        async def claims_left() -> list[str]:
            claims = await kclient.list(NODECLAIM, label_selector="kaito.sh/workspace", cached=False)
            return [
                f"{c['metadata']['name']} ({c['metadata']['labels']['kaito.sh/workspace']})"
                for c in claims
                if c["metadata"]["labels"].get("kaito.sh/workspacenamespace") == namespace
            ]

        async def none_left() -> bool:
            return not await claims_left()

        # The last Workspace's cleanup may still be running when it is gone from the server.
        with contextlib.suppress(AssertionError):
            await eventually(none_left, "no NodeClaim left", timeout=30)
        left = await claims_left()
        assert left == [], f"{len(left)} NodeClaims outlived their Workspaces: {left}"


async def test_a_workspace_gone_without_its_finalizer_releases_what_the_cache_already_shows(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """The leak a CI run of the burst test above met (2 of 30 claims left): the reconcile that
    created the claim was followed by another that saw the claim in the cache and so stopped
    remembering its name; then the Workspace went without its finalizer. No fault: each backend
    creates for a Workspace that does not exist, waits until its cache shows what it made,
    provisions again (the name leaves its memory), and is told the Workspace is gone. The claim
    and the pool must go (before the fix both stayed: only names still unseen were released)."""
    mgr = new_manager(crds)
    gpu = GPUProvisioner(mgr)
    karpenter = KarpenterProvisioner(mgr)
    async with running(mgr):
        req = request(f"gone-{uuid.uuid4().hex[:5]}", namespace)
        for backend, gvk in ((gpu, NODECLAIM), (karpenter, NODEPOOL)):
            await backend.provision_nodes(req)

            def shown(gvk: GVK = gvk) -> bool:
                if gvk == NODEPOOL:
                    return mgr.cache.get(NODEPOOL, nodepool_name(namespace, req.workspace)) is not None
                return bool(mgr.cache.list(NODECLAIM, label_selector={"kaito.sh/workspace": req.workspace}))

            await eventually(shown, f"the cache shows the {gvk.kind}", timeout=30)
            await backend.provision_nodes(req)  # sees it cached: nothing more to remember
            await backend.release_gone(namespace, req.workspace)

        async def nothing_left() -> bool:
            return not await claims_of(kclient, namespace, req.workspace) and (
                await get_or_none(kclient, NODEPOOL, nodepool_name(namespace, req.workspace)) is None
            )

        await eventually(nothing_left, "the claim and the pool released", timeout=30)


async def test_karpenter_releases_the_pool_of_a_workspace_gone_without_its_finalizer(
    crds: Any, kclient: Client, namespace: str
) -> None:
    """The karpenter backend's half of the race above. Fault: the NodePool watch is held back, so
    the cache never shows the pools the backend creates. Told a Workspace is gone, the backend
    deletes the pool it made for it once the server confirms the Workspace is gone; a pool whose
    Workspace exists (only the cache trailing) is kept."""
    async with karpenter_behind_a_held_nodepool_watch(crds) as (_mgr, backend):
        gone = request(f"kp-gone-{uuid.uuid4().hex[:5]}", namespace)
        live = request(apply_seed(crds, namespace, f"kp-live-{uuid.uuid4().hex[:5]}"), namespace)
        for req in (gone, live):
            await backend.provision_nodes(req)
            await backend.release_gone(namespace, req.workspace)
        assert await get_or_none(kclient, NODEPOOL, nodepool_name(namespace, gone.workspace)) is None
        assert await get_or_none(kclient, NODEPOOL, nodepool_name(namespace, live.workspace)) is not None
        await kclient.delete(NODEPOOL, nodepool_name(namespace, live.workspace))
        await kclient.delete(WORKSPACE, live.workspace, namespace)
