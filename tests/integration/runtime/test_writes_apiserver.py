"""kaito.runtime.Writer against a real apiserver and a real informer cache: a converged object
costs no request, a value the apiserver canonicalises is not drift, a hand edit is put back, and
our own write is read back before the watch delivers it."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kaito.envtest import Cluster, eventually
from kaito.runtime import CONFIGMAP, GVK, Client, InformerCache, Writer, WriterOptions

pytestmark = pytest.mark.cluster

LIMITRANGE = GVK("", "v1", "LimitRange")


class Writes:
    """Counts the write requests (anything but GET) the client sends, via an aiohttp trace."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._start)

    async def _start(self, session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        if params.method != "GET":
            self.sent.append((params.method, params.url.path))


@pytest.fixture
def writes() -> Writes:
    return Writes()


@pytest.fixture
async def client(kube_cluster: Cluster, writes: Writes) -> AsyncIterator[Client]:
    c = Client(kube_cluster.client_configuration(), trace_configs=[writes.trace])
    try:
        yield c
    finally:
        await c.close()


async def _wait(cond: Any, what: str, limit_s: float = 30.0) -> None:
    await eventually(cond, what, timeout=limit_s, interval=0.02)


def _rv(obj: dict[str, Any] | None) -> str | None:
    return (obj or {}).get("metadata", {}).get("resourceVersion")


def _limits(ns: str, cpu: str) -> dict[str, Any]:
    """A LimitRange: the apiserver stores its quantities canonically (``0.5`` as ``500m``)."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": cpu}}]},
    }


async def test_writer_writes_only_what_changed(client: Client, writes: Writes, namespace: str) -> None:
    cache = InformerCache(client)
    for gvk in (CONFIGMAP, LIMITRANGE):
        cache.get_informer(gvk, namespace)
    await cache.start()
    try:
        assert await cache.wait_for_sync(30)
        writer = Writer(client, cache, WriterOptions(field_manager="writes-test"))
        for gvk in (CONFIGMAP, LIMITRANGE):
            writer.track(gvk, cache.get_informer(gvk, namespace))

        desired = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": namespace},
            "data": {"k": "1"},
        }
        written = await writer.apply(CONFIGMAP, copy.deepcopy(desired))
        assert len(writes.sent) == 1
        # Read back at once: our write, whether or not the watch has delivered it.
        assert writer.get(CONFIGMAP, "c", namespace) is not None
        await writer.apply(CONFIGMAP, copy.deepcopy(desired))
        assert len(writes.sent) == 1, writes.sent
        rv = written["metadata"]["resourceVersion"]
        await _wait(lambda: _rv(cache.get(CONFIGMAP, "c", namespace)) == rv, "the cache to show our write")
        await _wait(lambda: len(writer.recent) == 0, "the informer to retire the remembered write")
        await writer.apply(CONFIGMAP, copy.deepcopy(desired))
        assert len(writes.sent) == 1, writes.sent  # converged: no request

        # A hand edit of a field we set is put back with one merge patch.
        edited = await client.get(CONFIGMAP, "c", namespace, cached=False)
        edited["data"]["k"] = "by hand"
        edited = await client.update(edited)
        before = len(writes.sent)
        await _wait(
            lambda: (cache.get(CONFIGMAP, "c", namespace) or {}).get("data", {}).get("k") == "by hand",
            "the cache to show the edit",
        )
        await writer.apply(CONFIGMAP, copy.deepcopy(desired))
        assert [m for m, _ in writes.sent[before:]] == ["PATCH"]
        assert (await client.get(CONFIGMAP, "c", namespace, cached=False))["data"] == {"k": "1"}

        # The apiserver stores 0.5 as 500m: after one write the object is converged anyway.
        first = await writer.apply(LIMITRANGE, _limits(namespace, "0.5"))
        assert first["spec"]["limits"][0]["default"]["cpu"] == "500m"
        before = len(writes.sent)
        rv = first["metadata"]["resourceVersion"]
        await _wait(lambda: _rv(cache.get(LIMITRANGE, "limits", namespace)) == rv, "the cache to catch up")
        await writer.apply(LIMITRANGE, _limits(namespace, "0.5"))
        assert writes.sent[before:] == []
    finally:
        await cache.stop()
