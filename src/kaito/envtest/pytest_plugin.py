"""pytest fixtures over :class:`~kaito.envtest.Cluster`.

One cluster per test session (start-up costs seconds; a namespace per test keeps tests apart),
with the controller-manager, scheduler and kwok running, so Deployments get Pods and fake GPU
Nodes go Ready. Tests that break the cluster on purpose make their own ``Cluster``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kaito.envtest.cluster import Cluster, ClusterOptions


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[Cluster]:
    cluster = Cluster(ClusterOptions(controller_manager=True, scheduler=True, kwok=True))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def api_client(kube_cluster: Cluster) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient with admin rights on the session cluster."""
    from kubernetes_asyncio.client import ApiClient

    client = ApiClient(kube_cluster.client_configuration())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def namespace(api_client: Any, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for finalization)."""
    from kubernetes_asyncio.client import CoreV1Api, V1Namespace, V1ObjectMeta

    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-") or "test"
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    core = CoreV1Api(api_client)
    await core.create_namespace(
        V1Namespace(metadata=V1ObjectMeta(name=name, labels={"kaito.sh/test": "true"}))
    )
    try:
        yield name
    finally:
        await core.delete_namespace(name)
