"""The NodeClaim is served by a real node (issue 19): kaito's node-provisioner with the kwok cloud
and ``--real-nodes`` adopts an idle real node (a kubelet that registered itself, label
``kaito.sh/kubelet=real``) instead of making a Node, and releases it when the claim goes.

Nothing is faked: a real control plane (apiserver, scheduler, controller-manager with its garbage
collector), one real node (containerd, kubelet, kube-proxy), and the NodeClaim controller with the
cloud as ``kaito node-provisioner --cloud kwok --real-nodes real=yes`` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaito.api.nodeclaim import NODECLAIM
from kaito.controllers.nodeclaim import setup_nodeclaim_controller
from kaito.envtest import Cluster
from kaito.envtest.cluster import ClusterOptions
from kaito.envtest.realnode import (
    HELLO_IMAGE,
    NodeNetwork,
    RealNode,
    RealNodeOptions,
    cluster_options,
    missing_requirements,
)
from kaito.nodes import NODE, NodeRequest, claim_node_labels, node_shape
from kaito.provisioners.cloud.kwok import ClaimSelector, KwokCloudProvider
from kaito.provisioners.gpu_provisioner import nodeclaim_manifest
from kaito.runtime import GVK, Client, Manager, NotFoundError

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT / "tests" / "integration" / "provisioning") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "provisioning"))

from provisioning_helpers import crd_files, fast_options  # noqa: E402

pytestmark = [pytest.mark.cluster]

T = TypeVar("T")
POD = GVK("", "v1", "Pod")
NODE_NAME = "real-adopt"
#: The kubelet's own taint: adoption adds the claim's beside it and release leaves it.
OWN_TAINT = {"key": "kaito.sh/own", "value": "yes", "effect": "PreferNoSchedule"}
INSTANCE_TYPE = "Standard_NC24ads_A100_v4"


@pytest.fixture(scope="module")
def real() -> Iterator[tuple[Cluster, RealNode]]:
    missing = missing_requirements()
    assert not missing, "a real node needs: " + "; ".join(missing)
    network = NodeNetwork.create()
    try:
        with (
            Cluster(cluster_options(network, ClusterOptions())) as cluster,
            RealNode(
                cluster,
                network,
                RealNodeOptions(name=NODE_NAME, taints=["kaito.sh/own=yes:PreferNoSchedule"]),
            ) as node,
        ):
            for f in crd_files():
                cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd/nodeclaims.karpenter.sh"
            )
            yield cluster, node
    finally:
        network.delete()


async def eventually(fn: Callable[[], Awaitable[T]], limit: float, what: str) -> T:
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        last = await fn()
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {limit:.0f}s; last: {last!r}")
        await asyncio.sleep(0.2)


def claim(ws: str) -> dict[str, Any]:
    """The NodeClaim kaito's gpu-provisioner backend writes for Workspace ``ws``, selected for a
    real node by its Workspace's matchLabels (``real=yes``)."""
    req = NodeRequest(
        workspace=ws,
        namespace="default",
        uid=f"uid-{ws}",
        instance_type=INSTANCE_TYPE,
        count=1,
        label_selector={"matchLabels": {"apps": ws, "real": "yes"}},
    )
    return nodeclaim_manifest(req, name=ws)


def cond(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


async def get(client: Client, gvk: GVK, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    try:
        return await client.get(gvk, name, namespace, cached=False)
    except NotFoundError:
        return None


@contextlib.asynccontextmanager
async def node_provisioner(cluster: Cluster) -> AsyncIterator[Manager]:
    """``kaito node-provisioner --cloud kwok --real-nodes real=yes`` in this process."""
    mgr = Manager(
        cluster.client_configuration(),
        handle_signals=False,
        metrics_bind_address="0",
        health_probe_bind_address="0",
    )
    cloud = KwokCloudProvider(mgr.client, real_nodes=ClaimSelector.parse("real=yes", "--real-nodes"))
    setup_nodeclaim_controller(mgr, cloud, fast_options())
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 60)
        yield mgr
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 60)


def heartbeat(node: dict[str, Any]) -> float:
    ts = cond(node, "Ready").get("lastHeartbeatTime") or "1970-01-01T00:00:00Z"
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def gpu_pod(ws: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{ws}-gpu", "namespace": "default"},
        "spec": {
            "nodeSelector": {"apps": ws, "real": "yes"},
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "hello",
                    "image": HELLO_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["serve", "8080"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


async def test_claims_are_served_by_adopting_the_real_node_and_releasing_it(
    real: tuple[Cluster, RealNode],
) -> None:
    cluster, _ = real
    first, second = claim("adopt-a"), claim("adopt-b")
    shape = node_shape(INSTANCE_TYPE)
    async with Client(cluster.client_configuration()) as kc, node_provisioner(cluster):
        before = await kc.get(NODE, NODE_NAME, cached=False)
        assert not before["spec"].get("providerID")
        assert "nvidia.com/gpu" not in before["status"]["capacity"]

        # -- the claim gets the real node ---------------------------------------------------
        await kc.create(first)

        async def ready(name: str) -> dict[str, Any] | None:
            got = await get(kc, NODECLAIM, name)
            return got if cond(got, "Ready").get("status") == "True" else None

        got = await eventually(lambda: ready("adopt-a"), 60, "claim adopt-a Ready")
        assert got["status"]["nodeName"] == NODE_NAME
        assert got["status"]["providerID"] == f"kaito-real://{NODE_NAME}"
        assert got["status"]["capacity"]["nvidia.com/gpu"] == str(shape.gpus)
        n = await kc.get(NODE, NODE_NAME, cached=False)
        labels = n["metadata"]["labels"]
        for k, v in {**claim_node_labels(first), **shape.gpu_labels()}.items():
            assert labels.get(k) == v, k
        assert labels["node.kubernetes.io/instance-type"] == INSTANCE_TYPE
        assert labels["kaito.sh/nodeclaim"] == "adopt-a"
        assert labels["kaito.sh/kubelet"] == "real"
        assert "kaito.sh/kwok-cloud" not in labels
        taints = n["spec"]["taints"]
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in taints
        assert OWN_TAINT in taints  # the kubelet's own taint is kept
        assert n["spec"]["providerID"] == f"kaito-real://{NODE_NAME}"
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == str(shape.gpus)
        assert n["status"]["capacity"]["nvidia.com/gpu"] == str(shape.gpus)
        # no owner reference: the garbage collector must not delete the machine with its claim
        assert not n["metadata"].get("ownerReferences")

        # -- the kubelet keeps the extended resource across its own status updates ----------
        adopted_at = time.time()

        async def heartbeat_after() -> dict[str, Any] | None:
            fresh = await kc.get(NODE, NODE_NAME, cached=False)
            return fresh if heartbeat(fresh) > adopted_at + 1 else None

        fresh = await eventually(heartbeat_after, 40, "a kubelet status update after adoption")
        assert fresh["status"]["allocatable"].get("nvidia.com/gpu") == str(shape.gpus)
        assert fresh["status"]["capacity"].get("nvidia.com/gpu") == str(shape.gpus)

        # -- a second claim finds no idle real node and does not steal this one ------------
        await kc.create(second)

        async def refused() -> dict[str, Any] | None:
            got = await get(kc, NODECLAIM, "adopt-b")
            return got if cond(got, "Launched").get("reason") == "InsufficientCapacity" else None

        waiting = await eventually(refused, 30, "claim adopt-b refused for capacity")
        launched = cond(waiting, "Launched")
        assert launched["status"] == "False"
        assert "no idle real node (label kaito.sh/kubelet=real)" in launched["message"]
        assert f"{NODE_NAME} held by NodeClaim adopt-a" in launched["message"]
        assert "kaito local up --node real" in launched["message"]
        assert cond(waiting, "Ready")["reason"] == "InsufficientCapacity"

        # -- a pod needing a GPU, tolerating the claim's taint, runs on the real node -------
        await kc.create(gpu_pod("adopt-a"))

        async def running() -> dict[str, Any] | None:
            pod = await get(kc, POD, "adopt-a-gpu", "default")
            return pod if (pod or {}).get("status", {}).get("phase") == "Running" else None

        pod = await eventually(running, 90, "the GPU pod Running")
        assert pod["spec"]["nodeName"] == NODE_NAME
        # adopt-b was retried all along (every 0.5 s) and is still refused; the node is adopt-a's
        n = await kc.get(NODE, NODE_NAME, cached=False)
        assert n["metadata"]["labels"]["kaito.sh/nodeclaim"] == "adopt-a"
        waiting = await kc.get(NODECLAIM, "adopt-b", cached=False)
        assert cond(waiting, "Launched")["reason"] == "InsufficientCapacity"
        assert not waiting["status"].get("nodeName")
        await kc.delete(POD, "adopt-a-gpu", "default", grace_period_seconds=0)
        await eventually(lambda: _gone(kc, POD, "adopt-a-gpu", "default"), 60, "the GPU pod deleted")

        # -- deleting the first claim releases the node; the waiting claim gets it ----------
        await kc.delete(NODECLAIM, "adopt-a")
        await eventually(lambda: _gone(kc, NODECLAIM, "adopt-a"), 60, "claim adopt-a deleted")
        got = await eventually(lambda: ready("adopt-b"), 60, "claim adopt-b Ready on the released node")
        assert got["status"]["nodeName"] == NODE_NAME
        n = await kc.get(NODE, NODE_NAME, cached=False)
        labels = n["metadata"]["labels"]
        assert labels["kaito.sh/nodeclaim"] == "adopt-b"
        assert labels["apps"] == "adopt-b"  # adopt-a's labels went with its release
        assert labels["kaito.sh/workspace"] == "adopt-b"
        assert [t for t in n["spec"]["taints"] if t["key"] == "sku"] == [
            {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
        ]
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == str(shape.gpus)

        # -- deleting the last claim leaves the node idle, not deleted ----------------------
        await kc.delete(NODECLAIM, "adopt-b")
        await eventually(lambda: _gone(kc, NODECLAIM, "adopt-b"), 60, "claim adopt-b deleted")
        n = await kc.get(NODE, NODE_NAME, cached=False)
        labels = n["metadata"]["labels"]
        for key in (*claim_node_labels(second), *shape.gpu_labels(), "node.kubernetes.io/instance-type"):
            if key in before["metadata"]["labels"]:
                assert labels[key] == before["metadata"]["labels"][key], key
            else:
                assert key not in labels, key
        assert "karpenter.sh/registered" not in labels
        assert "karpenter.sh/initialized" not in labels
        assert n["spec"]["taints"] == [OWN_TAINT]
        assert "nvidia.com/gpu" not in n["status"]["capacity"]
        assert "nvidia.com/gpu" not in n["status"]["allocatable"]
        assert "kaito.sh/adoption" not in n["metadata"]["annotations"]
        # what stays: the providerID (immutable once set) and the adopted mark
        assert n["spec"]["providerID"] == f"kaito-real://{NODE_NAME}"
        assert n["metadata"]["annotations"]["kaito.sh/adopted"] == "true"
        assert n["metadata"]["uid"] == before["metadata"]["uid"]
        assert cond(n, "Ready")["status"] == "True"
        # and it stays: the kubelet does not bring the GPU back, no sweep deletes the Node
        released_at = time.time()

        async def quiet() -> dict[str, Any] | None:
            fresh = await kc.get(NODE, NODE_NAME, cached=False)
            return fresh if heartbeat(fresh) > released_at + 1 else None

        fresh = await eventually(quiet, 40, "a kubelet status update after release")
        assert "nvidia.com/gpu" not in fresh["status"]["allocatable"]
        assert fresh["metadata"]["uid"] == before["metadata"]["uid"]


async def _gone(client: Client, gvk: GVK, name: str, namespace: str | None = None) -> bool:
    return await get(client, gvk, name, namespace) is None
