"""The ``karpenter`` backend proven with real Karpenter (its kwok provider, built from its Go
module through kaito's asset cache): a per-Workspace static NodePool gets Ready GPU nodes with the
Workspace's labels and the GPU taint, scales down with ``replicas``, and is deleted cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from provisioning_helpers import (
    ROOT,
    condition,
    crd_files,
    eventually,
    get_or_none,
    new_manager,
    running,
)

from kaito.api.nodeclaim import NODECLAIM, NODEPOOL
from kaito.envtest.karpenter import InstanceTypeSpec, KarpenterProcess, ensure_karpenter
from kaito.nodes import NODE, NodeRequest, node_shape
from kaito.operator import OperatorOptions, build_operator
from kaito.operator.options import ProvisionerOptions
from kaito.presets import list_skus
from kaito.provisioners.karpenter import KarpenterProvisioner, nodepool_name
from kaito.runtime import GVK, Client

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]

SEED = ROOT / "tests" / "unit" / "api" / "seed" / "phi3_inference.yaml"
WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")


def gpu_instance_types() -> list[InstanceTypeSpec]:
    out = []
    for sku in list_skus("azure"):
        shape = node_shape(sku.name)
        out.append(
            InstanceTypeSpec(
                sku.name, shape.cpu, shape.memory_gib, shape.gpus, sku.price_per_hour or 1.0
            )
        )
    return out


def start_karpenter(cluster: Any, workdir: Path) -> KarpenterProcess:
    """Apply Karpenter's own CRDs (they replace kaito's copies of NodeClaim/NodePool while it
    runs), a KWOKNodeClass, and start the controller out of cluster."""
    folder = ensure_karpenter(
        progress=print
    )  # builds into the asset cache when missing; never skips
    proc = KarpenterProcess(
        cluster.kubeconfig, gpu_instance_types(), workdir=workdir, folder=folder
    )
    for f in proc.crd_files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/kwoknodeclasses.karpenter.kwok.sh",
    )
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input="apiVersion: karpenter.kwok.sh/v1alpha1\nkind: KWOKNodeClass\nmetadata:\n  name: default\n",
    )
    proc.start()
    return proc


def restore_kaito_crds(cluster: Any) -> None:
    for f in crd_files("karpenter.sh_"):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))


@pytest.fixture(scope="module")
def karpenter(crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KarpenterProcess]:
    proc = start_karpenter(crds, tmp_path_factory.mktemp("karpenter"))
    try:
        yield proc
    finally:
        proc.stop()
        restore_kaito_crds(crds)


async def test_static_nodepool_gets_ready_gpu_nodes_and_scales(
    crds: Any, karpenter: KarpenterProcess, kclient: Client
) -> None:
    ws = "karp-ws"
    req = NodeRequest(
        workspace=ws,
        namespace="default",
        uid=uuid.uuid4().hex,
        instance_type="Standard_NC24ads_A100_v4",
        count=2,
        label_selector={"matchLabels": {"apps": "karp"}},
    )
    pool = nodepool_name("default", ws)
    mgr = new_manager(crds)
    backend = KarpenterProvisioner(mgr)
    async with running(mgr):
        await backend.provision_nodes(req)

        async def ready(count: int) -> Any:
            status = await backend.ensure_nodes_ready(dataclasses.replace(req, count=count))
            return status if status.ready and len(status.nodes) == count else None

        status = await eventually(
            lambda: ready(2), 120, f"2 Karpenter nodes ({karpenter.log_tail()})"
        )
        node = await kclient.get(NODE, status.nodes[0], cached=False)
        labels = node["metadata"]["labels"]
        assert labels["karpenter.sh/nodepool"] == pool
        assert labels["kaito.sh/workspace"] == ws and labels["apps"] == "karp"
        assert labels["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"

        one = dataclasses.replace(req, count=1)

        async def one_claim() -> bool:
            await backend.provision_nodes(one)
            claims = await kclient.list(
                NODECLAIM, label_selector={"karpenter.sh/nodepool": pool}, cached=False
            )
            return len(claims) == 1

        await eventually(one_claim, 120, "Karpenter scaled the pool to one node")

        async def gone() -> bool:
            return await backend.delete_nodes(one)

        await eventually(gone, 120, "NodePool and its claims deleted")

        async def nodes_gone() -> bool:
            return not await kclient.list(
                NODE, label_selector={"karpenter.sh/nodepool": pool}, cached=False
            )

        await eventually(nodes_gone, 120, "Karpenter's nodes deleted")


async def test_seed_workspace_ready_through_karpenter(
    crds: Any, karpenter: KarpenterProcess, kclient: Client, namespace: str
) -> None:
    """The seed's YAML, no nodes beforehand, ``--node-provisioner karpenter``: Karpenter makes the
    node for the Workspace's NodePool and the Workspace goes Ready; deleting it removes the pool."""
    op = build_operator(
        crds.client_configuration(),
        OperatorOptions(
            provisioner=ProvisionerOptions(name="karpenter"),
            metrics_bind_address="0",
            health_probe_bind_address="0",
        ),
        handle_signals=False,
    )
    task = asyncio.create_task(op.start())
    try:
        await asyncio.wait_for(op.manager.elected.wait(), 60)
        crds.kubectl("apply", "-n", namespace, "-f", str(SEED))
        name = "workspace-phi-3-mini"

        async def ready() -> Any:
            cond = condition(
                await get_or_none(kclient, WORKSPACE, name, namespace), "WorkspaceReady"
            )
            return cond if cond.get("status") == "True" else None

        await eventually(ready, 180, f"WorkspaceReady via Karpenter ({karpenter.log_tail()})")
        pool = nodepool_name(namespace, name)
        nodepool = await kclient.get(NODEPOOL, pool, cached=False)
        assert nodepool["spec"]["replicas"] == 1
        nodes = await kclient.list(
            NODE, label_selector={"karpenter.sh/nodepool": pool}, cached=False
        )
        assert len(nodes) == 1
        assert (
            nodes[0]["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
        )

        await kclient.delete(WORKSPACE, name, namespace)

        async def all_gone() -> bool:
            return (
                await get_or_none(kclient, WORKSPACE, name, namespace) is None
                and await get_or_none(kclient, NODEPOOL, pool) is None
                and not await kclient.list(
                    NODE, label_selector={"karpenter.sh/nodepool": pool}, cached=False
                )
            )

        await eventually(all_gone, 180, "Workspace, NodePool and nodes deleted")
    finally:
        op.stop()
        await asyncio.wait_for(task, 60)
