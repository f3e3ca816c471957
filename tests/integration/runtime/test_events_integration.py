"""EventRecorder writes core/v1 Events and aggregates identical repeats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito.runtime import EVENT as EVENT_GVK
from kaito.runtime import (
    GVK,
    NORMAL,
    WARNING,
    Client,
    EventRecorder,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        yield c


async def test_repeats_increment_count(namespace: str, kclient: Client) -> None:
    obj = await kclient.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subject", "namespace": namespace}}
    )
    rec = EventRecorder(kclient, "test-component")
    first = await rec.event(obj, WARNING, "Failed", "quota exceeded")
    assert first is not None
    for _ in range(2):
        await rec.event(obj, WARNING, "Failed", "quota exceeded")
    await rec.event(obj, NORMAL, "Created", "made something")
    events = await kclient.list(EVENT_GVK, namespace, cached=False)
    by_reason = {e["reason"]: e for e in events}
    assert len(events) == 2
    failed = by_reason["Failed"]
    assert failed["count"] == 3 and failed["type"] == "Warning"
    assert failed["metadata"]["name"] == first["metadata"]["name"]
    assert failed["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert failed["involvedObject"]["kind"] == "ConfigMap"
    assert failed["source"]["component"] == "test-component"
    assert failed["lastTimestamp"] >= failed["firstTimestamp"]
    assert by_reason["Created"]["count"] == 1
    # an expired/deleted Event starts a new series instead of failing
    await kclient.delete(EVENT_GVK, failed["metadata"]["name"], namespace)
    again = await rec.event(obj, WARNING, "Failed", "quota exceeded")
    assert again is not None and again["count"] == 1


async def test_cluster_scoped_objects_and_bad_type(kclient: Client) -> None:
    ns_obj = await kclient.get(GVK("", "v1", "Namespace"), "default", cached=False)
    rec = EventRecorder(kclient, "test-component")
    ev = await rec.event(ns_obj, NORMAL, "Observed", "cluster-scoped subject")
    assert ev is not None and ev["metadata"]["namespace"] == "default"
    with pytest.raises(ValueError):
        await rec.event(ns_obj, "Info", "X", "y")
    await kclient.delete(EVENT_GVK, ev["metadata"]["name"], "default")
