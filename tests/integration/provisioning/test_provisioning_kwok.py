"""kaito's node-provisioner with the kwok cloud against the real control plane: NodeClaim ->
Node -> Ready, the finalizer order, a Node deleted by hand, scaling through the gpu-provisioner
backend, garbage collection of an instance whose claim is gone, and ``--local-nodes`` handing
the claims it selects to kaito's local node agent (kwok leaves those nodes alone). The agent
running such a node's pod is shown in tests/integration/localnode/test_workspace.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from provisioning_helpers import (
    claim_ready,
    condition,
    delete_claims_and_wait,
    eventually,
    fast_options,
    get_or_none,
    node_of,
    node_provisioner,
)

from kaito.api.nodeclaim import NODECLAIM
from kaito.nodes import NODE, NodeRequest
from kaito.provisioners.cloud.kwok import KwokCloudProvider, LocalNodes
from kaito.provisioners.gpu_provisioner import GPUProvisioner, nodeclaim_manifest
from kaito.runtime import Client, Manager, NotFoundError

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]


def kwok(mgr: Manager) -> KwokCloudProvider:
    return KwokCloudProvider(mgr.client)


def request(
    ws: str, count: int = 1, instance_type: str = "Standard_NC24ads_A100_v4"
) -> NodeRequest:
    return NodeRequest(
        workspace=ws,
        namespace="default",
        uid=uuid.uuid4().hex,
        instance_type=instance_type,
        count=count,
        label_selector={"matchLabels": {"apps": ws}},
    )


async def test_claim_becomes_a_ready_gpu_node(crds: Any, kclient: Client) -> None:
    claim = nodeclaim_manifest(request("kwok-ready"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, kwok, fast_options()):
        await kclient.create(claim)
        ready = await eventually(lambda: claim_ready(kclient, name), 60, "claim Ready")
        status = ready["status"]
        assert status["providerID"] == f"kwok://{name}"
        assert status["nodeName"] == name
        assert status["capacity"]["nvidia.com/gpu"] == "1"
        for t in ("Launched", "Registered", "Initialized", "Ready"):
            assert condition(ready, t)["status"] == "True", t
        assert "karpenter.sh/termination" in ready["metadata"]["finalizers"]
        node = await kclient.get(NODE, name, cached=False)
        labels = node["metadata"]["labels"]
        assert labels["kaito.sh/workspace"] == "kwok-ready"
        assert labels["apps"] == "kwok-ready"
        assert labels["karpenter.sh/nodepool"] == "kaito"
        assert labels["karpenter.sh/initialized"] == "true"
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert node["metadata"]["ownerReferences"][0]["uid"] == ready["metadata"]["uid"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"

        # Deleting the claim takes the node first, then the claim.
        await delete_claims_and_wait(kclient, [name])
        assert await get_or_none(kclient, NODE, name) is None


async def test_node_deleted_by_hand_deletes_its_claim(crds: Any, kclient: Client) -> None:
    claim = nodeclaim_manifest(request("kwok-hand"))
    name = claim["metadata"]["name"]
    async with node_provisioner(crds, kwok, fast_options()):
        await kclient.create(claim)
        await eventually(lambda: claim_ready(kclient, name), 60, "claim Ready")
        await kclient.delete(NODE, name)

        async def claim_gone() -> bool:
            return await get_or_none(kclient, NODECLAIM, name) is None

        await eventually(claim_gone, 60, "claim deleted after its node")


async def test_backend_scales_claims_up_and_down(
    crds: Any, kclient: Client, kube_cluster: Any
) -> None:
    async with node_provisioner(crds, kwok, fast_options()) as (mgr, _ctrl):
        backend = GPUProvisioner(mgr, cloud="azure")
        req = request("kwok-scale", count=2)
        await backend.provision_nodes(req)

        async def two_ready() -> Any:
            status = await backend.ensure_nodes_ready(req)
            return status if status.ready and len(status.nodes) == 2 else None

        status = await eventually(two_ready, 90, "two nodes ready")
        assert status.conditions[0]["type"] == "NodeClaimReady"
        # Level-triggered: calling again with nothing changed creates nothing.
        await backend.provision_nodes(req)
        claims = await kclient.list(
            NODECLAIM, label_selector={"kaito.sh/workspace": "kwok-scale"}, cached=False
        )
        assert len(claims) == 2

        one = request("kwok-scale", count=1)

        async def one_claim() -> bool:
            await backend.provision_nodes(one)
            live = await kclient.list(
                NODECLAIM, label_selector={"kaito.sh/workspace": "kwok-scale"}, cached=False
            )
            return len(live) == 1

        await eventually(one_claim, 60, "scaled down to one claim")
        one_status = await eventually(
            lambda: _ready_status(backend, one), 30, "one node ready after scale-down"
        )
        assert len(one_status.nodes) == 1

        async def all_deleted() -> bool:
            return await backend.delete_nodes(one)

        await eventually(all_deleted, 90, "everything deleted")
        nodes = await kclient.list(
            NODE, label_selector={"kaito.sh/workspace": "kwok-scale"}, cached=False
        )
        assert nodes == []


async def test_back_to_back_reconciles_create_one_claim(crds: Any, kclient: Client) -> None:
    """The Workspace's own status write triggers a reconcile at once, often before the informer
    has seen the claim just created; the backend must not create a second one (make run did, for
    every Workspace, before the backend remembered its creates). 20 Workspaces widen the window."""
    async with node_provisioner(crds, kwok, fast_options()) as (mgr, _ctrl):
        backend = GPUProvisioner(mgr, cloud="azure")
        reqs = [request(f"kwok-twice-{i}") for i in range(20)]
        for req in reqs:
            await backend.provision_nodes(req)
            await backend.provision_nodes(req)
        claims = await kclient.list(NODECLAIM, label_selector="kaito.sh/workspace", cached=False)
        per_ws: dict[str, int] = {}
        for c in claims:
            ws = c["metadata"]["labels"]["kaito.sh/workspace"]
            if ws.startswith("kwok-twice-"):
                per_ws[ws] = per_ws.get(ws, 0) + 1
        assert per_ws == {r.workspace: 1 for r in reqs}

        async def all_deleted() -> bool:
            return all([await backend.delete_nodes(r) for r in reqs])

        await eventually(all_deleted, 120, "claims deleted")


async def _ready_status(backend: GPUProvisioner, req: NodeRequest) -> Any:
    status = await backend.ensure_nodes_ready(req)
    return status if status.ready else None


async def test_orphan_kwok_node_is_collected(crds: Any, kclient: Client) -> None:
    ghost = nodeclaim_manifest(request("kwok-orphan"))
    name = ghost["metadata"]["name"]
    # A node made for a claim that no longer exists (the claim was force-deleted while the
    # controller was down): it must not survive.
    node = KwokCloudProvider(kclient).node_manifest(ghost)
    await kclient.create(node)
    async with node_provisioner(crds, kwok, fast_options(gc_grace=1.0)) as (_mgr, ctrl):

        async def gone() -> bool:
            return await node_of(kclient, name) is None

        await eventually(gone, 60, "orphan node collected")
        assert name in ctrl.collector.collected
    with pytest.raises(NotFoundError):
        await kclient.get(NODE, name, cached=False)


def test_local_nodes_selector_parses_terms_and_names_bad_ones() -> None:
    sel = LocalNodes.parse("apps=phi-3,kaito.sh/workspace,tier!=x,!gone")
    assert sel.selector == {
        "matchLabels": {"apps": "phi-3"},
        "matchExpressions": [
            {"key": "kaito.sh/workspace", "operator": "Exists"},
            {"key": "tier", "operator": "NotIn", "values": ["x"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    }
    assert LocalNodes.parse("all").selector == {}
    claim = nodeclaim_manifest(request("phi-3"))
    assert sel.matches(claim)  # absent "tier" is not "x" (Kubernetes' NotIn)
    assert not LocalNodes.parse("apps=phi-3,!kaito.sh/workspace").matches(claim)
    assert LocalNodes.parse("apps=phi-3").matches(claim)
    # the node's labels count, not only the claim's: the instance type comes from a requirement
    assert LocalNodes.parse("node.kubernetes.io/instance-type=Standard_NC24ads_A100_v4").matches(claim)
    assert not LocalNodes.parse("apps=other").matches(claim)
    for bad in ("apps in (x)", "apps=", "=x", ""):
        with pytest.raises(ValueError, match="--local-nodes"):
            LocalNodes.parse(bad)


async def test_local_nodes_go_to_the_node_agent_and_kwok_leaves_them(crds: Any, kclient: Client) -> None:
    local = nodeclaim_manifest(request("kwok-local"))
    fake = nodeclaim_manifest(request("kwok-fake"))
    selector = LocalNodes.parse("apps=kwok-local")

    def cloud(mgr: Manager) -> KwokCloudProvider:
        return KwokCloudProvider(mgr.client, local_nodes=selector)

    async with node_provisioner(crds, cloud, fast_options()):
        await kclient.create(local)
        await kclient.create(fake)
        await eventually(lambda: claim_ready(kclient, fake["metadata"]["name"]), 60, "kwok claim Ready")
        agent_node = await eventually(lambda: node_of(kclient, local["metadata"]["name"]), 30, "local node")
        fake_node = await kclient.get(NODE, fake["metadata"]["name"], cached=False)

        labels = agent_node["metadata"]["labels"]
        assert labels["kaito.sh/node-agent"] == "local"
        assert "type" not in labels
        assert "kwok.x-k8s.io/node" not in agent_node["metadata"]["annotations"]
        assert labels["kaito.sh/kwok-cloud"] == "true"  # still this cloud's instance (GC, delete)
        assert agent_node["status"]["capacity"]["nvidia.com/gpu"] == "1"
        assert fake_node["metadata"]["labels"]["type"] == "kwok"
        assert "kaito.sh/node-agent" not in fake_node["metadata"]["labels"]
        # kwok made the other node Ready by now; it never played this one's kubelet (when a
        # node agent runs in this test session it may own the node, which is its job)
        fresh = await kclient.get(NODE, local["metadata"]["name"], cached=False)
        kubelet = ((fresh.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
        assert not kubelet.startswith("kwok"), kubelet
        assert fake_node["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok")

        await delete_claims_and_wait(kclient, [local["metadata"]["name"], fake["metadata"]["name"]])
        assert await node_of(kclient, local["metadata"]["name"]) is None
