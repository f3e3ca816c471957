"""The informer's watch-list sync (``InformerOptions.watch_list``) against a real apiserver: the
initial state streamed by one watch that goes on as the ordinary watch, the fallback to paged
LISTs where the server refuses it, 410 Gone on it, relists with deletes, a stream cut before
its initial-events-end bookmark."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from faultproxy import Chunks, Cut, Seen, proxied

from kaito.envtest import Cluster, ClusterOptions
from kaito.runtime import CONFIGMAP, Client, FuncHandler, Informer, key_of

pytestmark = pytest.mark.cluster


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, key, resourceVersion)
        self.view: dict[str, str] = {}

    def handler(self) -> FuncHandler:
        return FuncHandler(add=self._add, update=self._update, delete=self._delete)

    def _add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", key_of(obj), obj["metadata"]["resourceVersion"]))
        self.view[key_of(obj)] = obj["metadata"]["resourceVersion"]

    def _update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", key_of(new), new["metadata"]["resourceVersion"]))
        self.view[key_of(new)] = new["metadata"]["resourceVersion"]

    def _delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", key_of(obj), obj["metadata"]["resourceVersion"]))
        self.view.pop(key_of(obj), None)

    def of(self, etype: str, name: str) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[0] == etype and e[1].endswith(f"/{name}")]


def cm(name: str, ns: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns,
            "labels": {"app": "wl"}}, "data": {"v": value}}  # fmt: skip


async def eventually(cond: Callable[[], Any], timeout: float = 30.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def new_namespace(client: Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def api_state(client: Client, ns: str) -> dict[str, str]:
    items = await client.list_from_api(CONFIGMAP, ns)
    return {key_of(o): o["metadata"]["resourceVersion"] for o in items if not _root_ca(o)}


def store_state(inf: Informer) -> dict[str, str]:
    return {key_of(o): o["metadata"]["resourceVersion"] for o in inf.store if not _root_ca(o)}


def _root_ca(obj: dict[str, Any]) -> bool:
    """kube-root-ca.crt is published into every namespace by the controller-manager (if any)."""
    return bool(obj["metadata"]["name"] == "kube-root-ca.crt")


def is_watch_list(seen: Seen) -> bool:
    return bool(seen.is_watch and seen.query.get("sendInitialEvents") == "true") and seen.path.endswith(
        "/configmaps"
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(ClusterOptions()) as c:
        yield c


@pytest.fixture(scope="module")
def no_watch_cache_cluster() -> Iterator[Cluster]:
    """Without the watch cache a watch from a compacted revision reaches etcd and gets 410."""
    with Cluster(ClusterOptions(watch_cache=False)) as c:
        yield c


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(cluster.client_configuration()) as c:
        yield c


async def test_watch_list_syncs_then_watches_on_the_same_stream(
    cluster: Cluster, client: Client
) -> None:
    ns = await new_namespace(client, "wl")
    for i in range(30):
        await client.create(cm(f"pre{i}", ns))
    async with proxied(cluster.client_configuration()) as (proxy, pc):
        inf = Informer(pc, CONFIGMAP, namespace=ns, watch_list=True)
        rec = Recorder()
        inf.add_handler(rec.handler())
        await inf.start()
        try:
            assert await inf.wait_for_sync(20)
            assert store_state(inf) == await api_state(client, ns)
            assert {k for k in rec.view if not k.endswith("kube-root-ca.crt")} == set(store_state(inf))
            assert inf.stats.watch_lists == 1 and inf.stats.lists == 0
            assert not any(s.is_list and s.path.endswith("/configmaps") for s in proxy.seen)  # no LIST
            wl = [s for s in proxy.seen if is_watch_list(s)]
            assert len(wl) == 1 and wl[0].query.get("resourceVersionMatch") == "NotOlderThan"
            assert wl[0].query.get("allowWatchBookmarks") == "true"
            assert inf.last_sync_resource_version
            assert inf.store.resource_version == inf.last_sync_resource_version
            obj = inf.store.get_by(ns, "pre0")
            assert obj is not None and "managedFields" not in obj["metadata"]
            assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"

            # The same stream goes on as the ordinary watch: adds, updates, deletes, no new request.
            await client.create(cm("after", ns))
            changed = await client.get(CONFIGMAP, "pre1", ns)
            changed["data"]["v"] = "2"
            await client.update(changed)
            await client.delete(CONFIGMAP, "pre2", ns)
            await eventually(
                lambda: bool(rec.of("add", "after") and rec.of("update", "pre1") and rec.of("delete", "pre2"))
            )
            assert inf.store.get_by(ns, "pre1")["data"]["v"] == "2"  # type: ignore[index]
            assert inf.stats.watches == 1
            assert len(rec.of("add", "pre3")) == 1
            # A dropped connection re-watches from the last version: no second watch-list.
            inf.force_reconnect()
            await client.create(cm("after2", ns))
            await eventually(lambda: bool(rec.of("add", "after2")))
            assert inf.stats.watch_lists == 1 and inf.stats.watches >= 2
            assert store_state(inf) == await api_state(client, ns)
        finally:
            await inf.stop()


async def test_watch_list_refused_falls_back_to_paged_lists() -> None:
    """An apiserver with the WatchList feature off answers sendInitialEvents with 422 Invalid
    (as apiservers before 1.27 do): the informer lists instead, from then on."""
    with Cluster(ClusterOptions(extra_apiserver_args=["--feature-gates=WatchList=false"])) as c:
        async with Client(c.client_configuration()) as client:
            ns = await new_namespace(client, "wl-off")
            for i in range(5):
                await client.create(cm(f"x{i}", ns))
            inf = Informer(client, CONFIGMAP, namespace=ns, watch_list=True, list_page_size=2)
            rec = Recorder()
            inf.add_handler(rec.handler())
            await inf.start()
            try:
                assert await inf.wait_for_sync(20)
                assert inf.stats.watch_list_refused == 1 and inf.stats.watch_lists == 1
                assert inf.stats.lists == 1 and inf.stats.watch_errors == 0
                assert store_state(inf) == await api_state(client, ns)
                await client.create(cm("after", ns))
                await eventually(lambda: bool(rec.of("add", "after")))
                # A relist (here: forced by a dropped watch that cannot resume) lists again.
                inf.force_reconnect()
                await client.create(cm("after2", ns))
                await eventually(lambda: bool(rec.of("add", "after2")))
                assert inf.stats.watch_lists == 1
            finally:
                await inf.stop()


async def test_410_on_the_watch_list_retries_from_any_version(no_watch_cache_cluster: Cluster) -> None:
    """The first watch-list request is turned (by the proxy) into a watch from a compacted
    revision: the real apiserver answers 410 Gone. The informer counts a 410 relist and syncs
    by watch-list again, asking for any version ("")."""
    async with Client(no_watch_cache_cluster.client_configuration()) as client:
        ns = await new_namespace(client, "wl-gone")
        first = await client.create(cm("a", ns))
        stale = first["metadata"]["resourceVersion"]
        await client.create(cm("b", ns))
        await client.create(cm("c", ns))  # a watch from ``stale`` starts at b's revision: compact past it
        assert no_watch_cache_cluster.compact_etcd() > int(stale) + 1
        rewritten: list[dict[str, str]] = []

        def rewrite(seen: Seen) -> dict[str, str] | None:
            if is_watch_list(seen) and not rewritten:
                q = {k: v for k, v in seen.query.items()
                     if k not in ("sendInitialEvents", "resourceVersionMatch")}  # fmt: skip
                q["resourceVersion"] = stale
                rewritten.append(q)
                return q
            return None

        async with proxied(no_watch_cache_cluster.client_configuration(), rewrite=rewrite) as (proxy, pc):
            inf = Informer(pc, CONFIGMAP, namespace=ns, watch_list=True, backoff_initial=0.1)
            rec = Recorder()
            inf.add_handler(rec.handler())
            await inf.start()
            try:
                assert await inf.wait_for_sync(30)
                assert rewritten
                assert inf.stats.relists_410 == 1 and inf.stats.watch_lists == 2 and inf.stats.lists == 0
                wl = [s for s in proxy.seen if is_watch_list(s)]
                assert [s.query.get("resourceVersion", "") for s in wl] == ["", ""]
                assert store_state(inf) == await api_state(client, ns)
                assert all(len(rec.of("add", n)) == 1 for n in "abc")
            finally:
                await inf.stop()


async def test_relist_by_watch_list_after_410_delivers_deletes(no_watch_cache_cluster: Cluster) -> None:
    async with Client(no_watch_cache_cluster.client_configuration()) as client:
        ns = await new_namespace(client, "wl-relist")
        for name in ("keep", "change", "vanish"):
            await client.create(cm(name, ns))
        async with proxied(no_watch_cache_cluster.client_configuration()) as (proxy, pc):
            inf = Informer(pc, CONFIGMAP, namespace=ns, watch_list=True)
            rec = Recorder()
            inf.add_handler(rec.handler())
            await inf.start()
            assert await inf.wait_for_sync(20)
            await inf.stop()
            stale_rv = inf.last_sync_resource_version
            await client.delete(CONFIGMAP, "vanish", ns)
            changed = await client.get(CONFIGMAP, "change", ns)
            changed["data"]["v"] = "2"
            await client.update(changed)
            await client.create(cm("born", ns))
            assert no_watch_cache_cluster.compact_etcd() > int(stale_rv)

            # Resuming from the stale version gets 410: a watch-list relist, not older than it.
            await inf.start()
            try:
                await eventually(lambda: bool(rec.of("delete", "vanish")))
                assert inf.stats.relists_410 >= 1 and inf.stats.watch_lists == 2 and inf.stats.lists == 0
                relist = [s for s in proxy.seen if is_watch_list(s)][1]
                assert relist.query.get("resourceVersion") == stale_rv
                assert rec.of("add", "born") and rec.of("update", "change")
                assert not rec.of("update", "keep")  # unchanged objects are not re-announced
                assert store_state(inf) == await api_state(client, ns)
                await client.create(cm("after", ns))
                await eventually(lambda: bool(rec.of("add", "after")))
            finally:
                await inf.stop()


async def test_stream_cut_before_the_initial_events_end_is_retried(
    cluster: Cluster, client: Client
) -> None:
    """The first watch-list stream breaks after some of the initial events: not synced; the
    retry (backed off, counted) gathers the whole state and replaces the store with it, so
    objects already added are not added twice and nothing is lost."""
    ns = await new_namespace(client, "wl-cut")
    for i in range(40):
        await client.create(cm(f"o{i:02d}", ns, "v" * 200))
    cuts: list[int] = []

    async def fault(seen: Seen, chunks: Chunks) -> Chunks | None:
        if not is_watch_list(seen) or cuts:
            return None
        cuts.append(1)

        async def stream() -> AsyncIterator[bytes]:
            sent = 0
            async for chunk in chunks:
                # Send the first few complete lines only, then drop the connection.
                lines = chunk.split(b"\n")
                keep = b"\n".join(lines[: max(1, 5 - sent)]) + b"\n"
                sent += keep.count(b"\n")
                yield keep
                if sent >= 5:
                    raise Cut

        return stream()

    async with proxied(cluster.client_configuration(), fault=fault) as (_, pc):
        inf = Informer(pc, CONFIGMAP, namespace=ns, watch_list=True, backoff_initial=0.1)
        rec = Recorder()
        inf.add_handler(rec.handler())
        await inf.start()
        try:
            assert await inf.wait_for_sync(30)
            assert cuts and inf.stats.watch_lists == 2 and inf.stats.watch_errors == 1
            assert store_state(inf) == await api_state(client, ns)
            for i in range(40):
                assert len(rec.of("add", f"o{i:02d}")) == 1
            assert not [e for e in rec.events if e[0] in ("update", "delete")]
        finally:
            await inf.stop()
