"""What the operator's cache lists and watches (issue 20, bugs 5 and 6), read from the requests
its own client sends to the real apiserver (an aiohttp trace on the operator's session): a
``--namespace`` operator never lists or watches a namespaced kind cluster-wide, each kind has
one informer however and whenever it is asked for, and Pods and Jobs are filtered by kaito's
label on the server, so other Pods never reach the operator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from workspace_helpers import CM, NODE, POD, uniq, wait_for

from kaito.api import names
from kaito.controllers.workspace import WORKSPACE
from kaito.envtest import Cluster
from kaito.operator import Operator, OperatorOptions, build_operator
from kaito.runtime import GVK, Client, RecentWrites

pytestmark = pytest.mark.cluster

JOB = GVK("batch", "v1", "Job")


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    query: dict[str, str]

    @property
    def is_list_or_watch(self) -> bool:
        return self.method == "GET" and self.path.startswith(("/api/", "/apis/")) and self.resource != ""

    @property
    def resource(self) -> str:
        """The collection's plural for a LIST/WATCH of a collection, else ''."""
        parts = [p for p in self.path.split("/") if p]
        # /api/v1/<plural> | /api/v1/namespaces/<ns>/<plural> | /apis/<g>/<v>/<plural> | ...
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if len(rest) == 1:
            return rest[0]
        if len(rest) == 3 and rest[0] == "namespaces":
            return rest[2]
        return ""

    @property
    def cluster_wide(self) -> bool:
        return "/namespaces/" not in self.path


def recorder(sent: list[Sent]) -> aiohttp.TraceConfig:
    async def on_start(_s: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        url = params.url
        query = {k: v[-1] for k, v in parse_qs(url.query_string).items()}
        sent.append(Sent(params.method, url.path, query))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return trace


@contextlib.asynccontextmanager
async def running(cluster: Cluster, options: OperatorOptions, sent: list[Sent]) -> AsyncIterator[Operator]:
    op = build_operator(
        cluster.client_configuration(), options, handle_signals=False, trace_configs=[recorder(sent)]
    )
    task = asyncio.create_task(op.start())
    try:
        yield op
    finally:
        op.stop()
        await asyncio.wait_for(task, 60)


def pod(name: str, ns: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            # no node will take it: it only has to exist
            "nodeSelector": {"kaito.sh/test-nowhere": "true"},
        },
    }


async def test_namespaced_operator_lists_and_watches_only_its_namespace(
    crds: Cluster, namespace: str
) -> None:
    """Issue 20, bug 6. Kinds are asked for the way the operator asks for them: the builder
    (with the Manager's namespace) and, before discovery answered, the provisioner and
    ``RecentWrites`` (without one); then ``RecentWrites`` again from a reconcile's code path
    once the mapper is warm. Every namespaced kind must be listed and watched in ``namespace``
    only, and every kind must have exactly one informer (one LIST on start)."""
    sent: list[Sent] = []
    options = OperatorOptions(namespace=namespace, metrics_bind_address="0", health_probe_bind_address="0")
    op = build_operator(
        crds.client_configuration(), options, handle_signals=False, trace_configs=[recorder(sent)]
    )
    cache = op.manager.cache
    assert op.manager.rest_mapper.cached(NODE) is None  # cold: nothing discovered yet
    recent = RecentWrites(cache)
    # as RecentWrites asks while the mapper is cold (several at once, as concurrent reconciles do)
    for gvk in (NODE, CM, POD, JOB, NODE, CM):
        cache.get_informer(gvk)
    task = asyncio.create_task(op.start())
    try:
        ctrl = op.workspace.controller
        assert ctrl is not None
        await wait_for(lambda: ctrl.started.is_set() or task.done(), "operator started", timeout=60)
        assert not task.done()
        assert op.manager.rest_mapper.cached(NODE) is not None  # warm now
        # a reconcile's read of an object it wrote and the cache has not seen (kaito.runtime.writes)
        written = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "mine", "namespace": namespace, "resourceVersion": str(1 << 40)}}
        recent.remember(CM, written)
        assert recent.get(CM, "mine", namespace) is written
        for gvk in (NODE, CM, POD, JOB):
            cache.get_informer(gvk)
        assert await cache.wait_for_sync(30)
    finally:
        op.stop()
        await asyncio.wait_for(task, 60)

    kinds = [(i.gvk, i.namespace) for i in cache.informers]
    assert len(kinds) == len({gvk for gvk, _ in kinds}), kinds  # one informer per kind
    lists = [s for s in sent if s.is_list_or_watch and s.query.get("watch") not in ("true", "1")]
    watches = [s for s in sent if s.is_list_or_watch and s.query.get("watch") in ("true", "1")]
    cluster_scoped = {"nodes", "nodeclaims", "nodepools", "namespaces"}
    leaked = [s for s in lists + watches if s.cluster_wide and s.resource not in cluster_scoped]
    assert not leaked, leaked
    assert all(f"/namespaces/{namespace}/" in s.path for s in lists if s.resource not in cluster_scoped)
    by_resource: dict[str, int] = {}
    for s in lists:
        by_resource[s.resource] = by_resource.get(s.resource, 0) + 1
    for resource in ("nodes", "configmaps", "pods", "jobs", "workspaces", "statefulsets"):
        assert by_resource.get(resource) == 1, (resource, by_resource)
    assert any(s.resource == "workspaces" for s in watches)
    assert WORKSPACE in {gvk for gvk, _ in kinds}


async def test_operator_caches_only_kaito_pods(crds: Cluster, namespace: str, kclient: Client) -> None:
    """Issue 20, bug 5: the operator's Pod (and Job) informers carry a ``kaito.sh/workspace``
    label selector, so the apiserver sends it no other Pod: one without the label is never in
    its cache, one with it is."""
    await kclient.create(pod(uniq("other"), namespace, {"app": "not-kaito"}))
    theirs = uniq("kaito")
    sent: list[Sent] = []
    options = OperatorOptions(metrics_bind_address="0", health_probe_bind_address="0")
    async with running(crds, options, sent) as op:
        cache = op.manager.cache
        pods = cache.get_informer(POD)
        assert await pods.wait_for_sync(60)
        # created after the other one: once it is cached, the other would have been too
        await kclient.create(pod(theirs, namespace, {names.LABEL_WORKSPACE: "ws", "app": "kaito"}))
        await wait_for(lambda: pods.store.get_by(namespace, theirs) is not None, "kaito's pod", timeout=30)
        in_ns = {p["metadata"]["name"] for p in pods.store.list(namespace)}
        assert in_ns == {theirs}, in_ns
        assert all(names.LABEL_WORKSPACE in (p["metadata"].get("labels") or {}) for p in pods.store)
        jobs = cache.get_informer(JOB)
        assert jobs.label_selector == names.LABEL_WORKSPACE
        assert cache.get_informer(CM).label_selector is None  # users' ConfigMaps must stay visible
    pod_requests = [s for s in sent if s.is_list_or_watch and s.resource == "pods"]
    assert pod_requests
    assert all(s.query.get("labelSelector") == names.LABEL_WORKSPACE for s in pod_requests), pod_requests
