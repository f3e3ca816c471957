"""Helpers shared by the provisioning tests: polling, a running node-provisioner, the AKS emulator."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaito.api.nodeclaim import NODECLAIM
from kaito.controllers.nodeclaim import (
    NodeClaimController,
    NodeClaimOptions,
    setup_nodeclaim_controller,
)
from kaito.envtest.aks import AksEmulator, VmSize
from kaito.nodes import NODE, CloudProvider, node_shape
from kaito.presets import list_skus
from kaito.runtime import Client, Manager, NotFoundError

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "config" / "crd"
T = TypeVar("T")

# The loopback fault proxy of the runtime tests (tests/integration/runtime/faultproxy.py): the
# provisioning fault tests import it as ``faultproxy``.
if str(ROOT / "tests" / "integration" / "runtime") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "runtime"))


def crd_files(prefix: str = "") -> list[Path]:
    """kaito's CRD manifests (config/crd also holds a kustomization, which is not a resource)."""
    return [
        f
        for f in sorted(CRDS.glob(f"{prefix}*.yaml"))
        if "kind: CustomResourceDefinition" in f.read_text()
    ]


@pytest.fixture(scope="session")
def crds(kube_cluster: Any) -> Any:
    for f in crd_files():
        kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workspaces.kaito.sh",
        "crd/nodeclaims.karpenter.sh",
        "crd/nodepools.karpenter.sh",
    )
    return kube_cluster


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        yield c


async def eventually(
    fn: Callable[[], Awaitable[T]], limit: float = 60.0, what: str = "condition"
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        last = await fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {limit:.0f}s; last: {last!r}")
        await asyncio.sleep(0.2)


def fast_options(**kw: Any) -> NodeClaimOptions:
    base: dict[str, Any] = {
        "poll_interval": 0.3,
        "error_retry": 0.5,
        "gc_interval": 0.5,
        "gc_grace": 2.0,
    }
    base.update(kw)
    return NodeClaimOptions(**base)


def new_manager(kube_cluster: Any) -> Manager:
    return Manager(
        kube_cluster.client_configuration(),
        handle_signals=False,
        metrics_bind_address="0",
        health_probe_bind_address="0",
    )


@contextlib.asynccontextmanager
async def running(mgr: Manager) -> AsyncIterator[Manager]:
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 60)
        yield mgr
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def node_provisioner(
    kube_cluster: Any, make_cloud: Callable[[Manager], CloudProvider], options: NodeClaimOptions
) -> AsyncIterator[tuple[Manager, NodeClaimController]]:
    mgr = new_manager(kube_cluster)
    cloud = make_cloud(mgr)
    ctrl = setup_nodeclaim_controller(mgr, cloud, options)
    try:
        async with running(mgr):
            yield mgr, ctrl
    finally:
        close = getattr(cloud, "close", None)
        if close is not None:
            await close()


async def get_or_none(client: Client, gvk: Any, name: str, namespace: str | None = None) -> Any:
    try:
        return await client.get(gvk, name, namespace, cached=False)
    except NotFoundError:
        return None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


async def claim_ready(client: Client, name: str) -> dict[str, Any] | None:
    claim = await get_or_none(client, NODECLAIM, name)
    return claim if condition(claim, "Ready").get("status") == "True" else None


async def delete_claims_and_wait(client: Client, names: list[str], limit: float = 90.0) -> None:
    for n in names:
        with contextlib.suppress(NotFoundError):
            await client.delete(NODECLAIM, n)

    async def all_gone() -> bool:
        return all([await get_or_none(client, NODECLAIM, n) is None for n in names])

    await eventually(all_gone, limit, "claims deleted")


async def node_of(client: Client, claim: str) -> dict[str, Any] | None:
    nodes = await client.list(NODE, label_selector={"kaito.sh/nodeclaim": claim}, cached=False)
    return nodes[0] if nodes else None


def azure_vm_sizes() -> dict[str, VmSize]:
    out = {}
    for sku in list_skus("azure"):
        shape = node_shape(sku.name)
        out[sku.name] = VmSize(shape.gpus, shape.cpu, shape.memory_gib, shape.gpu_product)
    return out


@pytest.fixture
async def aks(kube_cluster: Any) -> AsyncIterator[AksEmulator]:
    async with AksEmulator(kube_cluster, azure_vm_sizes()) as emu:
        try:
            yield emu
        finally:
            await emu.remove_all()


def aks_credential(emu: AksEmulator) -> Any:
    from azure.identity.aio import ClientSecretCredential

    return ClientSecretCredential(
        "tenant-1",
        "client-1",
        "secret-1",
        authority=emu.endpoint,
        connection_verify=str(emu.ca_cert),
    )


def aks_cloud(emu: AksEmulator) -> Callable[[Manager], CloudProvider]:
    from kaito.provisioners.cloud.aks import AksCloudProvider, AksOptions

    def make(mgr: Manager) -> CloudProvider:
        settings = AksOptions(
            subscription_id=emu.subscription,
            resource_group=emu.resource_group,
            cluster_name=emu.cluster_name,
            arm_endpoint=emu.endpoint,
            ca_bundle=str(emu.ca_cert),
            polling_interval=0.2,
            retry_backoff=0.1,
        )
        return AksCloudProvider(mgr.client, settings, aks_credential(emu))

    return make
