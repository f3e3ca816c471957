"""Reflector/informer against a real apiserver: events, 410 relist with deletes, apiserver restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from faultproxy import Seen, proxied

from kaito.envtest import Cluster, ClusterOptions
from kaito.runtime import (
    CONFIGMAP,
    NAMESPACE,
    Client,
    FuncHandler,
    Informer,
    key_of,
)

pytestmark = pytest.mark.cluster


class Recorder:
    """Rebuilds the world from events alone: what a controller would believe."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, key, resourceVersion)
        self.view: dict[str, str] = {}  # key -> resourceVersion

    def handler(self) -> FuncHandler:
        return FuncHandler(add=self._add, update=self._update, delete=self._delete)

    def _add(self, obj: dict[str, Any]) -> None:
        k, rv = key_of(obj), obj["metadata"]["resourceVersion"]
        self.events.append(("add", k, rv))
        self.view[k] = rv

    def _update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        k, rv = key_of(new), new["metadata"]["resourceVersion"]
        self.events.append(("update", k, rv))
        self.view[k] = rv

    def _delete(self, obj: dict[str, Any]) -> None:
        k = key_of(obj)
        self.events.append(("delete", k, obj["metadata"]["resourceVersion"]))
        self.view.pop(k, None)

    def of(self, etype: str, name: str) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[0] == etype and e[1].endswith(f"/{name}")]


def cm(name: str, ns: str, value: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"v": value}}


async def eventually(cond: Callable[[], bool], timeout: float = 20.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def api_state(client: Client, ns: str) -> dict[str, str]:
    items = await client.list_from_api(CONFIGMAP, ns)
    return {key_of(o): o["metadata"]["resourceVersion"] for o in items if not _root_ca(o)}


def store_state(inf: Informer) -> dict[str, str]:
    return {key_of(o): o["metadata"]["resourceVersion"] for o in inf.store if not _root_ca(o)}


def _root_ca(obj: dict[str, Any]) -> bool:
    """kube-root-ca.crt is published into every namespace by the controller-manager (if any)."""
    return bool(obj["metadata"]["name"] == "kube-root-ca.crt")


async def make_namespace(client: Client, name: str) -> None:
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


# --------------------------------------------------------------------------- shared cluster


async def test_events_and_store(kube_cluster: Cluster, namespace: str) -> None:
    async with Client(kube_cluster.client_configuration()) as client:
        await client.create(cm("pre", namespace))
        # the LIST path (the fallback); the watch-list path: test_informer_watchlist.py
        inf = Informer(client, CONFIGMAP, namespace=namespace, watch_list=False)
        rec = Recorder()
        inf.add_handler(rec.handler())
        await inf.start()
        try:
            assert await inf.wait_for_sync(10)
            assert rec.of("add", "pre")
            await client.create(cm("a", namespace))
            await eventually(lambda: bool(rec.of("add", "a")))
            obj = await client.get(CONFIGMAP, "a", namespace)
            obj["data"]["v"] = "2"
            await client.update(obj)
            await eventually(lambda: bool(rec.of("update", "a")))
            assert inf.store.get_by(namespace, "a")["data"]["v"] == "2"  # type: ignore[index]
            assert "managedFields" not in inf.store.get_by(namespace, "a")["metadata"]  # type: ignore[index]
            await client.delete(CONFIGMAP, "a", namespace)
            await eventually(lambda: bool(rec.of("delete", "a")))
            assert inf.store.get_by(namespace, "a") is None

            # A handler added late still hears about everything already cached.
            late = Recorder()
            inf.add_handler(late.handler())
            assert late.of("add", "pre")
            assert inf.stats.lists == 1
        finally:
            await inf.stop()


async def test_large_objects_span_many_chunks(kube_cluster: Cluster, namespace: str) -> None:
    """Watch lines are split by hand: a ~900 KB object arrives in many network chunks."""
    async with Client(kube_cluster.client_configuration()) as client:
        inf = Informer(client, CONFIGMAP, namespace=namespace)
        rec = Recorder()
        inf.add_handler(rec.handler())
        await inf.start()
        try:
            assert await inf.wait_for_sync(10)
            big = "x" * 900_000
            await client.create(cm("big", namespace, big))
            await client.create(cm("small", namespace))
            await eventually(lambda: bool(rec.of("add", "small")))
            assert inf.store.get_by(namespace, "big")["data"]["v"] == big  # type: ignore[index]
        finally:
            await inf.stop()


async def test_label_selector_and_cluster_scoped(kube_cluster: Cluster, namespace: str) -> None:
    async with Client(kube_cluster.client_configuration()) as client:
        ns_inf = Informer(client, NAMESPACE, label_selector="kaito.sh/test=true")
        await ns_inf.start()
        try:
            assert await ns_inf.wait_for_sync(10)
            assert ns_inf.store.get(namespace) is not None  # cluster-scoped key: just the name
            assert ns_inf.store.get("default") is None  # filtered out by the selector
        finally:
            await ns_inf.stop()


async def test_forced_reconnect_resumes_without_relist(kube_cluster: Cluster, namespace: str) -> None:
    async with Client(kube_cluster.client_configuration()) as client:
        # the LIST path (the fallback); the watch-list path: test_informer_watchlist.py
        inf = Informer(client, CONFIGMAP, namespace=namespace, watch_list=False)
        rec = Recorder()
        inf.add_handler(rec.handler())
        await inf.start()
        try:
            assert await inf.wait_for_sync(10)
            for i in range(3):
                await eventually(lambda: inf.watching)
                inf.force_reconnect()
                await client.create(cm(f"r{i}", namespace))
                await eventually(lambda i=i: bool(rec.of("add", f"r{i}")))  # type: ignore[misc]
            assert inf.stats.lists == 1
            assert inf.stats.watches >= 4
            assert len([e for e in rec.events if e[0] == "add"]) == len(store_state(inf)) + (
                1 if inf.store.get_by(namespace, "kube-root-ca.crt") else 0
            )
        finally:
            await inf.stop()


# --------------------------------------------------------------------------- own clusters


@pytest.fixture(scope="module")
def no_watch_cache_cluster() -> Iterator[Cluster]:
    """Without the watch cache a watch from a compacted revision reaches etcd and gets 410."""
    with Cluster(ClusterOptions(watch_cache=False)) as c:
        yield c


@pytest.fixture
async def own_client(no_watch_cache_cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(no_watch_cache_cluster.client_configuration()) as c:
        yield c


async def test_410_gone_relists_and_delivers_deletes(
    no_watch_cache_cluster: Cluster, own_client: Client
) -> None:
    client = own_client
    ns = "gone-test"
    await make_namespace(client, ns)
    for name in ("keep", "change", "vanish"):
        await client.create(cm(name, ns))
    # the LIST path (the fallback); the watch-list path: test_informer_watchlist.py
    inf = Informer(client, CONFIGMAP, namespace=ns, watch_list=False)
    rec = Recorder()
    inf.add_handler(rec.handler())
    await inf.start()
    assert await inf.wait_for_sync(10)
    assert {"keep", "change", "vanish"} <= {k.split("/")[1] for k in rec.view}

    # The watch goes down (a network outage, a paused process) ...
    await inf.stop()
    stale_rv = inf.last_sync_resource_version
    # ... the world moves on without us ...
    await client.delete(CONFIGMAP, "vanish", ns)
    changed = await client.get(CONFIGMAP, "change", ns)
    changed["data"]["v"] = "2"
    await client.update(changed)
    await client.create(cm("born", ns))
    # ... and etcd forgets the history we would need to catch up.
    revision = no_watch_cache_cluster.compact_etcd()
    assert revision > int(stale_rv)

    # Resuming the watch from the stale version gets 410 Gone: relist + diff.
    await inf.start()
    try:
        await eventually(lambda: inf.stats.relists_410 >= 1 and inf.stats.lists >= 2)
        await eventually(lambda: bool(rec.of("delete", "vanish")))
        assert rec.of("add", "born")
        assert rec.of("update", "change")
        assert not rec.of("update", "keep")  # unchanged objects are not re-announced
        assert inf.store.get_by(ns, "vanish") is None
        assert store_state(inf) == await api_state(client, ns)
        assert {k: v for k, v in rec.view.items() if not k.endswith("kube-root-ca.crt")} == store_state(inf)
        # And the informer keeps working on a fresh watch afterwards.
        await client.create(cm("after", ns))
        await eventually(lambda: bool(rec.of("add", "after")))
    finally:
        await inf.stop()


async def test_410_as_http_status_on_list_continue(
    own_client: Client, no_watch_cache_cluster: Cluster
) -> None:
    """An expired pagination token is the other face of compaction; the client types it."""
    from kaito.runtime.errors import GoneError

    ns = "gone-list"
    await make_namespace(own_client, ns)
    for i in range(4):
        await own_client.create(cm(f"x{i}", ns))
    info = await own_client.mapper.resource_for(CONFIGMAP)
    page = await own_client.raw_request("GET", info.path(ns), params={"limit": 1})
    token = page["metadata"]["continue"]
    await own_client.create(cm("bump", ns))
    no_watch_cache_cluster.compact_etcd()
    with pytest.raises(GoneError) as err:
        await own_client.raw_request("GET", info.path(ns), params={"limit": 1, "continue": token})
    assert err.value.status == 410


async def test_apiserver_restart_recovers_without_loss_or_duplicates() -> None:
    with Cluster(ClusterOptions()) as cluster:
        async with Client(cluster.client_configuration()) as client:
            ns = "restart-test"
            await make_namespace(client, ns)
            for i in range(20):
                await client.create(cm(f"o{i}", ns))
            inf = Informer(client, CONFIGMAP, namespace=ns, backoff_initial=0.2, backoff_max=2.0)
            rec = Recorder()
            inf.add_handler(rec.handler())
            await inf.start()
            try:
                assert await inf.wait_for_sync(10)
                before_events = len(rec.events)
                await asyncio.to_thread(cluster.restart_apiserver)

                # restart_apiserver() returns once /readyz is ok; then change the world.
                await client.create(cm("new", ns))
                o = await client.get(CONFIGMAP, "o1", ns)
                o["data"]["v"] = "changed"
                await client.update(o)
                await client.delete(CONFIGMAP, "o2", ns)
                expected = await api_state(client, ns)
                await eventually(lambda: store_state(inf) == expected, timeout=60)
                assert {k: v for k, v in rec.view.items() if not k.endswith("kube-root-ca.crt")} == expected
                after = rec.events[before_events:]
                touched = {f"{ns}/new", f"{ns}/o1", f"{ns}/o2"}
                # Untouched objects were not re-delivered; touched ones exactly once each.
                assert {e[1] for e in after if not e[1].endswith("kube-root-ca.crt")} == touched, after
                assert [e[0] for e in after if e[1] == f"{ns}/new"] == ["add"]
                assert [e[0] for e in after if e[1] == f"{ns}/o1"] == ["update"]
                assert [e[0] for e in after if e[1] == f"{ns}/o2"] == ["delete"]
                # The restart really cut the watch: a new one was opened after it.
                assert inf.stats.watches >= 2, inf.stats
            finally:
                await inf.stop()


async def test_expired_continue_token_falls_back_to_one_full_list(no_watch_cache_cluster: Cluster) -> None:
    """Before every continue request the proxy has etcd compacted past the token's revision, so
    the real apiserver answers 410 to each one: paging can never finish. The client must fall
    back to one unpaginated LIST (client-go's pager does the same), so LISTs and informers
    still complete."""
    cluster = no_watch_cache_cluster
    ns = "expired-continue"
    async with Client(cluster.client_configuration()) as direct:
        await direct.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(6):
            await direct.create(cm(f"p{i}", ns))
        bumps = 0

        async def expire_tokens(seen: Seen) -> None:
            nonlocal bumps
            if "continue" in seen.query:
                bumps += 1
                await direct.create(cm(f"bump{bumps}", ns))  # a newer revision to compact to
                await asyncio.to_thread(cluster.compact_etcd)

        async with proxied(cluster.client_configuration(), before=expire_tokens) as (proxy, pc):
            items = await pc.list_from_api(CONFIGMAP, ns, limit=2)
            assert {f"p{i}" for i in range(6)} <= {o["metadata"]["name"] for o in items}
            assert bumps >= 1
            lists = [s for s in proxy.seen if s.is_list and s.path.endswith("/configmaps")]
            assert "continue" not in lists[-1].query and "limit" not in lists[-1].query

            inf = Informer(pc, CONFIGMAP, namespace=ns, list_page_size=2, backoff_max=1.0)
            await inf.start()
            try:
                assert await inf.wait_for_sync(60)
                assert {f"{ns}/p{i}" for i in range(6)} <= set(inf.store.keys())
            finally:
                await inf.stop()


async def test_repeated_410_backs_off_and_relists_from_the_last_synced_version(
    no_watch_cache_cluster: Cluster, own_client: Client
) -> None:
    """Issue 8, bug 7: every watch here starts from version 1, compacted away in etcd, so each
    gets a real 410. The informer must relist from its last synced version (the watch cache
    answers that; no quorum read) and back off as the 410s repeat."""
    client, namespace = own_client, "repeated-gone"
    await make_namespace(client, namespace)
    await client.create(cm("history", namespace))
    await asyncio.to_thread(no_watch_cache_cluster.compact_etcd)
    lists: list[tuple[float, dict[str, str]]] = []

    def rewrite(seen: Seen) -> dict[str, str] | None:
        if seen.is_list and seen.path.endswith("/configmaps"):
            lists.append((time.monotonic(), dict(seen.query)))
        if seen.is_watch and seen.path.endswith("/configmaps"):
            return {**seen.query, "resourceVersion": "1"}
        return None

    async with proxied(no_watch_cache_cluster.client_configuration(), rewrite=rewrite) as (_, pc):
        # the LIST path (the fallback); the watch-list path: test_informer_watchlist.py
        inf = Informer(
            pc, CONFIGMAP, namespace=namespace, backoff_initial=0.5, backoff_max=4.0, watch_list=False,
        )
        await inf.start()
        try:
            assert await inf.wait_for_sync(30)
            await eventually(lambda: len(lists) >= 4, 60)
        finally:
            await inf.stop()
    first_rv = lists[0][1].get("resourceVersion")
    assert first_rv is None  # the first LIST: a consistent read, in pages
    relist_rvs = [q.get("resourceVersion") for _, q in lists[1:]]
    assert all(rv not in (None, "", "0") for rv in relist_rvs), relist_rvs  # never a quorum read
    # in pages, and "not older than" that version: where a watch cache runs it answers them
    # (a version with a limit but no match would mean exactly that version: etcd)
    assert all(q.get("resourceVersionMatch") == "NotOlderThan" and q.get("limit") for _, q in lists[1:])
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(lists)]
    assert gaps[2] >= 0.5, gaps  # the third 410 in a row waits at least backoff_initial
