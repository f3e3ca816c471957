"""The ``karpenter`` backend proven with real Karpenter (its kwok provider, built from its Go
module through kaito's asset cache): a per-Workspace static NodePool gets Ready GPU nodes with the
Workspace's labels and the GPU taint, scales down with ``replicas``, and is deleted cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from provisioning_helpers import (
    ROOT,
    condition,
    crd_files,
    eventually,
    get_or_none,
    new_manager,
    running,
)

from kaito.api.names import ANNOTATION_NODE_CLASS_NAME
from kaito.api.nodeclaim import NODECLAIM, NODEPOOL
from kaito.envtest.karpenter import InstanceTypeSpec, KarpenterProcess, ensure_karpenter
from kaito.nodes import NODE, NodeRequest, node_shape
from kaito.operator import OperatorOptions, build_operator
from kaito.operator.options import ProvisionerOptions
from kaito.presets import list_skus
from kaito.provisioners.karpenter import (
    KarpenterProvisioner,
    NodeClassError,
    NodeClassSetup,
    nodepool_name,
)
from kaito.provisioners.options import NODE_CLASS_APIS, KarpenterOptions, parse_node_classes
from kaito.runtime import GVK, Client

pytestmark = [pytest.mark.cluster, pytest.mark.full_cluster]
KWOK_CLASS = GVK("karpenter.kwok.sh", "v1alpha1", "KWOKNodeClass")

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


async def test_node_classes_made_at_start_and_the_annotation_picks_the_pools_class(
    crds: Any, karpenter: KarpenterProcess, kclient: Client, namespace: str
) -> None:
    """``--karpenter-node-classes`` on the real control plane with Karpenter's kwok provider: at
    start kaito creates the classes with upstream's labels, puts its own drifted class back and
    adopts an existing one untouched; a Workspace annotated ``kaito.sh/node-class-name`` with the
    non-default class gets a NodePool whose ``nodeClassRef`` names it, and Karpenter launches
    the pool's NodeClaim from that class."""
    suffix = uuid.uuid4().hex[:6]
    default, other = f"kaito-default-{suffix}", f"kaito-other-{suffix}"
    entries = parse_node_classes(
        json.dumps(
            [
                {"name": default, "default": True, "spec": {"nodeRegistrationDelay": "1s"}},
                {"name": other, "spec": {"nodeRegistrationDelay": "2s"}},
                {"name": "default"},  # the fixture's class, adopted as it is
            ]
        )
    )
    options = KarpenterOptions(node_classes=entries, node_class_api=NODE_CLASS_APIS["kwok"])
    # kaito's own class, drifted (as after a chart change): put back to the configured spec.
    await kclient.create(
        {
            "apiVersion": KWOK_CLASS.api_version,
            "kind": KWOK_CLASS.kind,
            "metadata": {"name": default, "labels": {"karpenter.kaito.sh/managed-by": "kaito"}},
            "spec": {"nodeRegistrationDelay": "30s"},
        }
    )
    op = build_operator(
        crds.client_configuration(),
        OperatorOptions(
            provisioner=ProvisionerOptions(name="karpenter", karpenter=options),
            metrics_bind_address="0",
            health_probe_bind_address="0",
        ),
        handle_signals=False,
    )
    task = asyncio.create_task(op.start())
    name = "workspace-phi-3-mini"
    pool = nodepool_name(namespace, name)
    try:
        await asyncio.wait_for(op.manager.elected.wait(), 60)

        async def classes() -> Any:
            got = [await get_or_none(kclient, KWOK_CLASS, n) for n in (default, other)]
            if None in got or got[0]["spec"].get("nodeRegistrationDelay") != "1s":
                return None
            return got

        made_default, made_other = await eventually(classes, 60, "the node classes in place")
        assert made_default["metadata"]["labels"] == {
            "karpenter.kaito.sh/managed-by": "kaito",
            "karpenter.kaito.sh/default": "true",
        }
        assert made_other["metadata"]["labels"] == {"karpenter.kaito.sh/managed-by": "kaito"}
        adopted = await kclient.get(KWOK_CLASS, "default", cached=False)
        assert "karpenter.kaito.sh/managed-by" not in (adopted["metadata"].get("labels") or {})

        ws = yaml.safe_load(SEED.read_text())
        ws["metadata"]["namespace"] = namespace
        ws["metadata"].setdefault("annotations", {})[ANNOTATION_NODE_CLASS_NAME] = other
        await kclient.create(ws)

        async def nodepool() -> Any:
            return await get_or_none(kclient, NODEPOOL, pool)

        made = await eventually(nodepool, 60, "the Workspace's NodePool")
        assert made["spec"]["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.kwok.sh",
            "kind": "KWOKNodeClass",
            "name": other,
        }

        async def claim() -> Any:
            claims = await kclient.list(
                NODECLAIM, label_selector={"karpenter.sh/nodepool": pool}, cached=False
            )
            return claims[0] if claims else None

        launched = await eventually(claim, 120, f"Karpenter's NodeClaim ({karpenter.log_tail()})")
        assert launched["spec"]["nodeClassRef"]["name"] == other

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
        for n in (default, other):
            await kclient.delete(KWOK_CLASS, n, ignore_not_found=True)


async def test_someone_elses_class_is_refused_by_name(
    crds: Any, karpenter: KarpenterProcess, kclient: Client
) -> None:
    """A class kaito does not manage, under a name an entry with a spec claims: start-up stops
    with a message naming it and the ways out, and the class is left as it was. A node class
    type the server does not serve is named too."""
    name = f"theirs-{uuid.uuid4().hex[:6]}"
    await kclient.create(
        {
            "apiVersion": KWOK_CLASS.api_version,
            "kind": KWOK_CLASS.kind,
            "metadata": {"name": name},
            "spec": {},
        }
    )
    try:
        options = KarpenterOptions(
            node_classes=parse_node_classes(json.dumps([{"name": name, "default": True, "spec": {}}])),
            node_class_api=NODE_CLASS_APIS["kwok"],
        )
        mgr = new_manager(crds)
        async with running(mgr):
            setup = NodeClassSetup(mgr, options)
            refused = f"KWOKNodeClass '{name}' exists but kaito does not manage it"
            with pytest.raises(NodeClassError, match=refused):
                await setup.ensure(options.node_classes[0])
            # A type the server does not serve (the provider not installed): named at start.
            missing = NodeClassSetup(
                mgr,
                KarpenterOptions(
                    node_classes=options.node_classes,
                    node_class_api=NODE_CLASS_APIS["azure"],
                ),
            )
            with pytest.raises(NodeClassError, match="the cluster has no AKSNodeClass"):
                await missing.check_api()
        assert "labels" not in (await kclient.get(KWOK_CLASS, name, cached=False))["metadata"]
    finally:
        await kclient.delete(KWOK_CLASS, name, ignore_not_found=True)
