"""Fixtures and helpers for the workspace controller tests: the CRDs, a running operator,
AKS-like GPU nodes for kwok, and polling with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster, eventually
from kaito.operator import Operator, OperatorOptions, build_operator
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import GVK, Client, NotFoundError

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "tests" / "unit" / "api" / "seed"
NODE = GVK("", "v1", "Node")
POD = GVK("", "v1", "Pod")
STS = GVK("apps", "v1", "StatefulSet")
SVC = GVK("", "v1", "Service")
CM = GVK("", "v1", "ConfigMap")
REV = GVK("apps", "v1", "ControllerRevision")
EVENT = GVK("", "v1", "Event")
T = TypeVar("T")
TIMEOUT = 120.0


@pytest.fixture(scope="session")
def crds(kube_cluster: Cluster) -> Cluster:
    for crd in sorted((REPO / "config" / "crd").glob("*.yaml")):
        if crd.name != "kustomization.yaml":
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
    return kube_cluster


@pytest.fixture
async def kclient(kube_cluster: Cluster) -> AsyncIterator[Client]:
    """A plain (uncached) client for the test's own reads and writes."""
    async with Client(kube_cluster.client_configuration(), user_agent="kaito-tests") as client:
        yield client


class Running:
    """An operator running in this event loop; ``restart`` stops it and starts a fresh one."""

    def __init__(self, cluster: Cluster, options: OperatorOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.op: Operator | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Operator:
        op = build_operator(self.cluster.client_configuration(), self.options, handle_signals=False)
        self.op = op
        self._task = asyncio.create_task(op.start())
        ctrl = op.workspace.controller
        assert ctrl is not None
        await wait_for(lambda: _started(ctrl, self._task), "operator started", timeout=60)
        return op

    async def stop(self) -> None:
        if self.op is not None and self._task is not None:
            self.op.stop()
            await asyncio.wait_for(self._task, 60)
            self.op = None
            self._task = None

    async def restart(self) -> Operator:
        await self.stop()
        return await self.start()

    def writes(self) -> float:
        """Write requests (non-GET) this operator's client made, from its own metrics."""
        assert self.op is not None
        total = 0.0
        for metric in self.op.manager.metrics.rest_client_requests_total.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("method") not in ("GET", None):
                    total += sample.value
        return total

    def reconciles(self) -> float:
        """Reconciles the Workspace controller finished (every result), from its metrics."""
        assert self.op is not None
        total = 0.0
        for metric in self.op.manager.metrics.reconcile_total.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("controller") == "workspace":
                    total += sample.value
        return total


async def _started(ctrl: Any, task: asyncio.Task[None] | None) -> bool:
    if task is not None and task.done():
        task.result()  # surface the start-up error
    return bool(ctrl.started.is_set())


@pytest.fixture
async def operator(crds: Cluster, namespace: str) -> AsyncIterator[Running]:
    running = Running(crds, OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0"))
    await running.start()
    try:
        yield running
    finally:
        # The session cluster is shared: finish this test's Workspaces (finalizers included)
        # while the operator still runs, so the next test's operator does not inherit their
        # deletion writes and the namespace does not hang in Terminating.
        if running.op is not None:
            client = running.op.manager.client
            for ws in await client.list(WORKSPACE, namespace, cached=False):
                with contextlib.suppress(NotFoundError):
                    await client.delete(WORKSPACE, ws["metadata"]["name"], namespace)

            async def _gone() -> bool:
                # A test's kwok nodes are often gone by now, and no kubelet finishes a graceful
                # pod delete on a missing node: the pod GC would after about a minute. Force
                # those (as for a lost node) so the StatefulSet's foreground deletion completes.
                for pod in await client.list(POD, namespace, cached=False):
                    if pod["metadata"].get("deletionTimestamp"):
                        await client.delete(
                            POD,
                            pod["metadata"]["name"],
                            namespace,
                            grace_period_seconds=0,
                            ignore_not_found=True,
                        )
                return not await client.list(WORKSPACE, namespace, cached=False)

            with contextlib.suppress(AssertionError):
                await wait_for(_gone, "the test's Workspaces to be deleted", timeout=60)
        await running.stop()


async def wait_for(
    check: Callable[[], Awaitable[T] | T],
    what: str,
    *,
    timeout: float = TIMEOUT,  # noqa: ASYNC109
    interval: float = 0.2,
) -> T:
    """Poll ``check`` until it returns something truthy (kaito.envtest.eventually)."""
    return await eventually(check, what, timeout=timeout, interval=interval)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@contextlib.asynccontextmanager
async def gpu_nodes(
    client: Client, count: int, labels: dict[str, str], instance_type: str = "Standard_NC6s_v3"
) -> AsyncIterator[list[str]]:
    """``count`` kwok GPU nodes labelled like AKS ones plus ``labels``; deleted afterwards."""
    names = [uniq("gpu") for _ in range(count)]
    for name in names:
        await client.create(gpu_node_manifest(name, instance_type, labels))
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(NotFoundError):
                node = await client.get(NODE, name, cached=False)
                if node["metadata"].get("finalizers"):
                    await client.patch(NODE, name, {"metadata": {"finalizers": None}})
                await client.delete(NODE, name)


async def add_node(client: Client, labels: dict[str, str], instance_type: str = "Standard_NC6s_v3") -> str:
    name = uniq("gpu")
    await client.create(gpu_node_manifest(name, instance_type, labels))
    return name


async def get_ws(client: Client, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return await client.get(WORKSPACE, name, ns, cached=False)
    except NotFoundError:
        return None


def cond(ws: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((ws or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


async def wait_condition(
    client: Client,
    ns: str,
    name: str,
    type_: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = TIMEOUT,  # noqa: ASYNC109
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        ws = await get_ws(client, ns, name)
        c = cond(ws, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return ws
        return None

    return await wait_for(check, f"{ns}/{name} {type_}={status} reason={reason}", timeout=timeout)


def seed_path(name: str) -> Path:
    return SEED / name


def kubectl_apply(cluster: Cluster, ns: str, path: Path | str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", str(path))


def workspace_yaml(name: str, labels: dict[str, str], **inference: Any) -> str:
    import yaml

    body: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": labels}},
        "inference": inference or {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    return yaml.safe_dump(body)


def apply_text(cluster: Cluster, ns: str, text: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=text)
