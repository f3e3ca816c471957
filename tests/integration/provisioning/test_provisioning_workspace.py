"""End to end: the seed's Workspace with no GPU nodes in the cluster -> the workspace controller
(``--node-provisioner gpu-provisioner``) writes a NodeClaim -> kaito's node-provisioner makes the
node (kwok cloud, or an agent pool in the AKS emulator) -> WorkspaceReady; quota refusals reach
the Workspace; count changes add and remove claims; deleting the Workspace leaves nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from provisioning_helpers import (
    ROOT,
    aks_cloud,
    condition,
    eventually,
    fast_options,
    get_or_none,
    new_manager,
    running,
)

from kaito.api.nodeclaim import NODECLAIM
from kaito.controllers.nodeclaim import setup_nodeclaim_controller
from kaito.envtest.aks import AksEmulator
from kaito.nodes import NODE, CloudProvider
from kaito.operator import OperatorOptions, build_operator
from kaito.operator.options import ProvisionerOptions
from kaito.provisioners.cloud.kwok import KwokCloudProvider
from kaito.runtime import GVK, Client, Manager

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]

SEED = ROOT / "tests" / "unit" / "api" / "seed" / "phi3_inference.yaml"
WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
POD = GVK("", "v1", "Pod")


@contextlib.asynccontextmanager
async def stack(
    cluster: Any, make_cloud: Callable[[Manager], CloudProvider]
) -> AsyncIterator[None]:
    """The workspace controller (gpu-provisioner backend) and kaito's node-provisioner, as two
    managers in this loop (they are two Deployments in a cluster)."""
    op = build_operator(
        cluster.client_configuration(),
        OperatorOptions(
            provisioner=ProvisionerOptions(name="gpu-provisioner"),
            metrics_bind_address="0",
            health_probe_bind_address="0",
        ),
        handle_signals=False,
    )
    np = new_manager(cluster)
    cloud = make_cloud(np)
    setup_nodeclaim_controller(np, cloud, fast_options())
    task = asyncio.create_task(op.start())
    try:
        async with running(np):
            await asyncio.wait_for(op.manager.elected.wait(), 60)
            yield
    finally:
        op.stop()
        await asyncio.wait_for(task, 60)
        close = getattr(cloud, "close", None)
        if close is not None:
            await close()


def apply_seed(cluster: Any, namespace: str, path: Path = SEED) -> str:
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    return "workspace-phi-3-mini"


async def ws_condition(client: Client, ns: str, name: str, type_: str) -> dict[str, Any]:
    return condition(await get_or_none(client, WORKSPACE, name, ns), type_)


async def workspace_ready(client: Client, ns: str, name: str) -> Any:
    cond = await ws_condition(client, ns, name, "WorkspaceReady")
    return cond if cond.get("status") == "True" else None


async def claims_of(client: Client, ns: str, name: str) -> list[dict[str, Any]]:
    return await client.list(
        NODECLAIM,
        label_selector={"kaito.sh/workspace": name, "kaito.sh/workspacenamespace": ns},
        cached=False,
    )


async def delete_workspace_and_wait(client: Client, ns: str, name: str) -> None:
    await client.delete(WORKSPACE, name, ns)

    async def gone() -> bool:
        return await get_or_none(client, WORKSPACE, name, ns) is None and not await claims_of(
            client, ns, name
        )

    await eventually(gone, 120, "Workspace and its NodeClaims deleted")


def kwok(mgr: Manager) -> CloudProvider:
    return KwokCloudProvider(mgr.client)


async def test_seed_workspace_gets_its_node_from_the_kwok_cloud(
    crds: Any, kclient: Client, namespace: str
) -> None:
    async with stack(crds, kwok):
        name = apply_seed(crds, namespace)
        await eventually(lambda: workspace_ready(kclient, namespace, name), 180, "WorkspaceReady")
        claims = await claims_of(kclient, namespace, name)
        assert len(claims) == 1
        node = await kclient.get(NODE, claims[0]["status"]["nodeName"], cached=False)
        assert node["metadata"]["labels"]["apps"] == "phi-3"
        assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
        node_name = node["metadata"]["name"]
        await delete_workspace_and_wait(kclient, namespace, name)
        assert await get_or_none(kclient, NODE, node_name) is None


async def test_seed_workspace_through_aks_quota_then_delete(
    crds: Any, kclient: Client, namespace: str, aks: AksEmulator
) -> None:
    aks.quota_gpus = 0
    async with stack(crds, aks_cloud(aks)):
        name = apply_seed(crds, namespace)

        async def quota_shown() -> Any:
            cond = await ws_condition(kclient, namespace, name, "ResourceReady")
            return cond if "QuotaExceeded" in cond.get("message", "") else None

        cond = await eventually(quota_shown, 10, "QuotaExceeded in ResourceReady")
        assert cond["status"] == "False"

        aks.quota_gpus = 4  # the quota request was approved; nothing restarts
        await eventually(lambda: workspace_ready(kclient, namespace, name), 180, "WorkspaceReady")
        claims = await claims_of(kclient, namespace, name)
        assert [c["metadata"]["name"] for c in claims] == aks.pool_names()
        node_name = claims[0]["status"]["nodeName"]
        assert (await kclient.get(NODE, node_name, cached=False))["metadata"]["labels"][
            "kubernetes.azure.com/agentpool"
        ] == aks.pool_names()[0]

        await delete_workspace_and_wait(kclient, namespace, name)

        async def emulator_empty() -> bool:
            return aks.pool_names() == [] and await get_or_none(kclient, NODE, node_name) is None

        await eventually(emulator_empty, 60, "agent pools and nodes gone")


async def test_count_two_then_one(
    crds: Any, kclient: Client, namespace: str, tmp_path: Path
) -> None:
    seed = tmp_path / "two.yaml"
    seed.write_text(SEED.read_text().replace("  instanceType:", "  count: 2\n  instanceType:"))
    async with stack(crds, kwok):
        name = apply_seed(crds, namespace, seed)
        await eventually(
            lambda: workspace_ready(kclient, namespace, name), 180, "WorkspaceReady with 2 nodes"
        )

        async def two_ready_claims() -> Any:
            claims = await claims_of(kclient, namespace, name)
            ready = [c for c in claims if condition(c, "Ready").get("status") == "True"]
            return ready if len(ready) == 2 else None

        two = await eventually(two_ready_claims, 120, "two Ready claims")
        nodes = {c["status"]["nodeName"] for c in two}
        assert len(nodes) == 2

        async def pod_zero_node() -> Any:
            pod = await get_or_none(kclient, POD, f"{name}-0", namespace)
            return ((pod or {}).get("spec") or {}).get("nodeName")

        leader_node = await eventually(pod_zero_node, 60, "pod-0 scheduled")
        await kclient.patch(WORKSPACE, name, {"resource": {"count": 1}}, namespace)

        async def one_claim() -> Any:
            claims = await claims_of(kclient, namespace, name)
            return claims if len(claims) == 1 else None

        left = await eventually(one_claim, 120, "one claim after count 1")
        # Scale-down removes pod-1's node; pod-0 (and its loaded model) keeps its own.
        assert left[0]["status"]["nodeName"] == leader_node
        await eventually(
            lambda: workspace_ready(kclient, namespace, name), 120, "still WorkspaceReady"
        )
        await delete_workspace_and_wait(kclient, namespace, name)
