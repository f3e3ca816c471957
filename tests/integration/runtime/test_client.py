"""Client against a real kube-apiserver: CRUD, patch kinds, SSA, status, typed errors, cache reads."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from faultproxy import user_flow_schema

from kaito.envtest import Cluster
from kaito.runtime import (
    CONFIGMAP,
    CRD,
    DEPLOYMENT,
    GVK,
    NAMESPACE,
    NODE,
    AlreadyExistsError,
    Client,
    ConflictError,
    ForbiddenError,
    InformerCache,
    InvalidError,
    NotFoundError,
    load_configuration,
    retry_on_conflict,
)

pytestmark = pytest.mark.cluster

WIDGET = GVK("test.kaito.sh", "v1", "Widget")


class RequestLog:
    """Counts real HTTP requests (and keeps their headers) via an aiohttp TraceConfig."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._start)
        self.trace.on_request_end.append(self._end)

    async def _start(self, session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        self.requests.append((params.method, params.url.path))

    async def _end(self, session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        self.headers.append(dict(params.response.request_info.headers))


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
async def client(kube_cluster: Cluster, request_log: RequestLog) -> AsyncIterator[Client]:
    c = Client(
        kube_cluster.client_configuration(), trace_configs=[request_log.trace], field_manager="kaito-test"
    )
    try:
        yield c
    finally:
        await c.close()


def configmap(name: str, ns: str, data: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": data or {"a": "1"},
    }


async def test_crud_and_typed_errors(client: Client, namespace: str) -> None:
    created = await client.create(configmap("one", namespace, app="x"))
    assert created["metadata"]["uid"]
    with pytest.raises(AlreadyExistsError):
        await client.create(configmap("one", namespace))

    got = await client.get(CONFIGMAP, "one", namespace)
    assert got["data"] == {"a": "1"}

    got["data"]["a"] = "2"
    updated = await client.update(got)
    assert updated["data"]["a"] == "2"
    # The first read's resourceVersion is stale now: optimistic concurrency says Conflict.
    with pytest.raises(ConflictError):
        await client.update(got)

    await client.create(configmap("two", namespace, app="y"))
    names = sorted(o["metadata"]["name"] for o in await client.list(CONFIGMAP, namespace))
    assert "one" in names and "two" in names
    listed = await client.list(CONFIGMAP, namespace, label_selector="app=x")
    assert [o["metadata"]["name"] for o in listed] == ["one"]
    assert listed[0]["kind"] == "ConfigMap" and listed[0]["apiVersion"] == "v1"

    await client.delete(CONFIGMAP, "one", namespace)
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAP, "one", namespace)
    with pytest.raises(NotFoundError):
        await client.delete(CONFIGMAP, "one", namespace)
    assert await client.delete(CONFIGMAP, "one", namespace, ignore_not_found=True) is None

    with pytest.raises(InvalidError):
        await client.create(configmap("Bad_Name", namespace))


async def test_pagination(client: Client, namespace: str) -> None:
    for i in range(7):
        await client.create(configmap(f"p{i}", namespace))
    items = await client.list_from_api(CONFIGMAP, namespace, limit=3)
    assert len([o for o in items if o["metadata"]["name"].startswith("p")]) == 7


async def test_patch_kinds(client: Client, namespace: str) -> None:
    await client.create(configmap("p", namespace, {"a": "1", "b": "2"}))
    merged = await client.patch(CONFIGMAP, "p", {"data": {"a": "10", "b": None}}, namespace)
    assert merged["data"] == {"a": "10"}
    jsonp = await client.patch(
        CONFIGMAP, "p", [{"op": "add", "path": "/data/c", "value": "3"}], namespace, patch_type="json"
    )
    assert jsonp["data"] == {"a": "10", "c": "3"}

    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]
                },
            },
        },
    }
    await client.create(deploy)
    # Strategic merge merges the containers list by name instead of replacing it.
    container = {"name": "main", "env": [{"name": "B", "value": "2"}]}
    smp = {"spec": {"template": {"spec": {"containers": [container]}}}}
    out = await client.patch(DEPLOYMENT, "d", smp, namespace, patch_type="strategic")
    env = {e["name"] for e in out["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"A", "B"}
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"


async def test_server_side_apply_field_managers(client: Client, namespace: str) -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": namespace},
        "data": {"owned": "by-a"},
    }
    out = await client.apply(desired, field_manager="manager-a")
    assert out["data"] == {"owned": "by-a"}
    managers = {m["manager"] for m in out["metadata"]["managedFields"]}
    assert "manager-a" in managers

    # A second manager touching the same field conflicts unless it forces.
    other = {**desired, "data": {"owned": "by-b"}}
    with pytest.raises(ConflictError):
        await client.apply(other, field_manager="manager-b")
    forced = await client.apply(other, field_manager="manager-b", force=True)
    assert forced["data"] == {"owned": "by-b"}

    # Dropping a field from manager-a's next apply removes only what manager-a still owns.
    both = await client.apply({**desired, "data": {"extra": "x"}}, field_manager="manager-a")
    assert both["data"] == {"owned": "by-b", "extra": "x"}

    with pytest.raises(ValueError):
        await client.patch(CONFIGMAP, "ssa", {"data": {}}, namespace, patch_type="merge", force=True)


async def _install_widget_crd(client: Client) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.kaito.sh"},
        "spec": {
            "group": "test.kaito.sh",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }
    with contextlib.suppress(AlreadyExistsError):
        await client.create(crd)
    for _ in range(200):
        got = await client.get(CRD, "widgets.test.kaito.sh", cached=False)
        conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
        if conds.get("Established") == "True":
            break
        await asyncio.sleep(0.05)
    # Discovery lags CRD establishment a little; the mapper re-discovers on a miss.
    for _ in range(100):
        try:
            await client.mapper.resource_for(WIDGET)
            return
        except NotFoundError:
            await asyncio.sleep(0.1)
    raise AssertionError("Widget never appeared in discovery")


async def test_crd_and_status_subresource(client: Client, namespace: str) -> None:
    await _install_widget_crd(client)
    info = await client.mapper.resource_for(WIDGET)
    assert info.plural == "widgets" and info.namespaced and "status" in info.subresources

    w = await client.create(
        {
            "apiVersion": "test.kaito.sh/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": namespace},
            "spec": {"size": 1},
        }
    )
    # With a status subresource the main endpoint ignores status ...
    w["status"] = {"phase": "Ready"}
    w = await client.update(w)
    assert "status" not in w or w["status"] == {}
    # ... and the status endpoint ignores everything but status.
    w["status"] = {"phase": "Ready"}
    w["spec"] = {"size": 99}
    w = await client.update_status(w)
    assert w["status"] == {"phase": "Ready"} and w["spec"] == {"size": 1}
    patched = await client.patch(WIDGET, "w", {"status": {"phase": "Done"}}, namespace, subresource="status")
    assert patched["status"]["phase"] == "Done"
    applied = await client.apply(
        {
            "apiVersion": "test.kaito.sh/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": namespace},
            "status": {"phase": "Applied"},
        },
        field_manager="status-owner",
        subresource="status",
        force=True,
    )
    assert applied["status"]["phase"] == "Applied"


async def test_discovery_scope(client: Client) -> None:
    assert await client.is_namespaced(CONFIGMAP)
    assert not await client.is_namespaced(NAMESPACE)
    assert not await client.is_namespaced(NODE)
    assert await client.is_namespaced(DEPLOYMENT)
    assert (await client.mapper.resource_for(DEPLOYMENT)).path("ns", "d", "scale") == (
        "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    )
    with pytest.raises(NotFoundError):
        await client.mapper.resource_for(GVK("nope.kaito.sh", "v1", "Nothing"))
    nss = await client.list(NAMESPACE)
    assert any(n["metadata"]["name"] == "default" for n in nss)


async def test_forbidden_for_unprivileged_user(kube_cluster: Cluster) -> None:
    cfg = await load_configuration(str(kube_cluster.user_kubeconfig(f"nobody-{uuid.uuid4().hex[:4]}")))
    async with Client(cfg) as c:
        with pytest.raises(ForbiddenError) as info:
            await c.list_from_api(CONFIGMAP, "default")
        assert info.value.status == 403 and info.value.reason == "Forbidden"


async def test_user_agent_and_timeout(client: Client, request_log: RequestLog) -> None:
    await client.list(NAMESPACE)
    ua = request_log.headers[-1]["User-Agent"]
    assert ua.startswith("kaito/v") and "kaito.runtime" in ua
    assert client.session.timeout.total == 30.0


async def test_retry_on_conflict(client: Client, namespace: str) -> None:
    await client.create(configmap("counter", namespace, {"n": "0"}))

    async def increment() -> dict[str, Any]:
        obj = await client.get(CONFIGMAP, "counter", namespace, cached=False)
        await asyncio.sleep(0.01)  # widen the race window
        obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
        return await client.update(obj)

    await asyncio.gather(*(retry_on_conflict(increment, attempts=30) for _ in range(5)))
    final = await client.get(CONFIGMAP, "counter", namespace, cached=False)
    assert final["data"]["n"] == "5"

    calls = 0

    async def always_conflicts() -> None:
        nonlocal calls
        calls += 1
        raise ConflictError(409, "Conflict", "x")

    with pytest.raises(ConflictError):
        await retry_on_conflict(always_conflicts, attempts=3)
    assert calls == 3


async def test_reads_from_cache_make_zero_requests(
    client: Client, namespace: str, request_log: RequestLog
) -> None:
    for i in range(5):
        await client.create(configmap(f"c{i}", namespace, app="cached" if i % 2 else "other"))
    cache = InformerCache(client)
    client.cache = cache
    informer = cache.get_informer(CONFIGMAP, namespace)
    await cache.start()
    try:
        assert await cache.wait_for_sync(10)
        assert cache.can_serve(CONFIGMAP, namespace)
        assert not cache.can_serve(CONFIGMAP, "other-namespace")
        # Wait for all five in the store (no requests) before counting (the first LIST is a
        # consistent read now; waiting keeps this test independent of that).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while any(informer.store.get_by(namespace, f"c{i}") is None for i in range(5)):
            assert loop.time() < deadline, "the informer never saw all five ConfigMaps"
            await asyncio.sleep(0.05)
        before = len(request_log.requests)
        obj = await client.get(CONFIGMAP, "c1", namespace)
        assert obj["metadata"]["name"] == "c1"
        assert "managedFields" not in obj["metadata"]
        obj["data"]["a"] = "mutated"  # a copy by default: the cache must not change
        assert informer.store.get_by(namespace, "c1")["data"]["a"] == "1"  # type: ignore[index]
        view = await client.get(CONFIGMAP, "c1", namespace, copy=False)
        assert view is informer.store.get_by(namespace, "c1")
        # (the controller-manager may add kube-root-ca.crt to every namespace)
        mine = [o for o in await client.list(CONFIGMAP, namespace) if o["metadata"]["name"].startswith("c")]
        assert len(mine) == 5
        assert len(await client.list(CONFIGMAP, namespace, label_selector="app=cached")) == 2
        with pytest.raises(NotFoundError):
            await client.get(CONFIGMAP, "missing", namespace)
        assert len(request_log.requests) == before, request_log.requests[before:]

        # Writes go to the API; the cache follows through the watch.
        await client.create(configmap("c-new", namespace))
        assert len(request_log.requests) == before + 1
        for _ in range(100):
            if informer.store.get_by(namespace, "c-new") is not None:
                break
            await asyncio.sleep(0.05)
        assert (await client.get(CONFIGMAP, "c-new", namespace))["metadata"]["name"] == "c-new"
        # Kinds without an informer still read from the API.
        await client.get(NAMESPACE, namespace)
        assert len(request_log.requests) == before + 2
    finally:
        client.cache = None
        await cache.stop()


async def test_throttled_requests_are_retried_after_retry_after(
    kube_cluster: Cluster, client: Client, namespace: str
) -> None:
    """A priority level that rejects instead of queueing makes the real apiserver answer 429."""
    user = f"throttled-{uuid.uuid4().hex[:6]}"
    plc = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": user},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    }
    flow = user_flow_schema(user, user)
    await client.create(plc)
    await client.create(flow)
    # Not system:masters: that group is exempt from priority and fairness.
    await client.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": user, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )
    kubeconfig = kube_cluster.user_kubeconfig(user)
    cfg = await load_configuration(str(kubeconfig))
    log = RequestLog()
    statuses: list[int] = []

    async def _end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.url.path.endswith("/configmaps"):  # not discovery
            statuses.append(params.response.status)

    log.trace.on_request_end.append(_end)
    try:
        # The apiserver needs a moment to pick the new flow schema up: wait until it applies.
        async with Client(cfg, trace_configs=[log.trace], max_throttle_retries=0) as impatient:
            for _ in range(100):
                burst = await asyncio.gather(
                    *(impatient.list_from_api(CONFIGMAP, namespace) for _ in range(30)),
                    return_exceptions=True,
                )
                if any(getattr(r, "status", None) == 429 for r in burst):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the reject-only priority level never produced a 429")
        # The same bursts with retries on: every request ends in 200, some after a 429.
        statuses.clear()
        async with Client(cfg, trace_configs=[log.trace]) as patient:
            for _ in range(50):
                results = await asyncio.gather(
                    *(patient.list_from_api(CONFIGMAP, namespace) for _ in range(30))
                )
                assert all(isinstance(r, list) for r in results)
                if 429 in statuses:
                    break
        assert 429 in statuses, "no burst was throttled; the retry path went unexercised"
        assert statuses.count(200) % 30 == 0
    finally:
        await client.delete(GVK("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema"), user)
        await client.delete(GVK("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration"), user)


async def test_a_burst_reuses_a_bounded_pool_while_watches_stream_beside_it(
    kube_cluster: Cluster, namespace: str
) -> None:
    """100 concurrent GETs on ``max_connections=4`` open at most 4 connections (each idle TLS
    connection holds a 256 KiB read buffer), and 6 open watches, more than the cap, neither wait
    for the pool nor keep the burst waiting."""
    opened: list[str] = []
    trace = aiohttp.TraceConfig()

    async def created(session: Any, ctx: Any, params: Any) -> None:
        opened.append("conn")

    trace.on_connection_create_end.append(created)
    watches: list[aiohttp.ClientResponse] = []
    watch = {"watch": "true", "timeoutSeconds": 60}
    async with Client(kube_cluster.client_configuration(), trace_configs=[trace], max_connections=4) as c:
        await c.create(configmap("burst", namespace))
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        pooled = len(opened)  # the create's connection, kept alive in the pool
        try:
            for _ in range(6):
                watches.append(await c.raw_request("GET", path, params=watch, stream=True))
            streams = len(opened)
            assert streams - pooled == 6
            got = await asyncio.wait_for(
                asyncio.gather(*(c.raw_request("GET", f"{path}/burst") for _ in range(100))), 60
            )
            assert all(o["metadata"]["name"] == "burst" for o in got)
            assert len(opened) - streams <= 4 - pooled
        finally:
            for resp in watches:
                resp.close()
