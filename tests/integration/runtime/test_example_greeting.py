"""The example Greeting operator (examples/greeting) end to end on the real apiserver."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kaito.runtime import EVENT as EVENT_GVK
from kaito.runtime import (
    GVK,
    Client,
    NotFoundError,
    get_condition,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
CRD = GVK("apiextensions.k8s.io", "v1", "CustomResourceDefinition")


def load_operator() -> Any:
    spec = importlib.util.spec_from_file_location("greeting_operator", ROOT / "examples/greeting/operator.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["greeting_operator"] = mod
    spec.loader.exec_module(mod)
    return mod


op = load_operator()


async def eventually(cond: Callable[[], Any], limit_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        crd = yaml.safe_load((ROOT / "examples/greeting/crd.yaml").read_text())
        try:
            await c.create(crd)
        except Exception as exc:  # already installed by an earlier test in this session
            if getattr(exc, "status", None) != 409:
                raise

        async def established() -> bool:
            got = await c.get(CRD, crd["metadata"]["name"], cached=False)
            conds = (got.get("status") or {}).get("conditions") or []
            return any(x["type"] == "Established" and x["status"] == "True" for x in conds)

        await eventually(established)
        yield c


def greeting(ns: str, name: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "example.kaito.sh/v1alpha1",
        "kind": "Greeting",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"message": message},
    }


async def test_greeting_operator(kube_cluster: Any, namespace: str, kclient: Client) -> None:
    requests: list[str] = []

    async def on_start(_s: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        requests.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    mgr, rec = op.build_manager(
        kube_cluster.client_configuration(), namespace=namespace, handle_signals=False, trace_configs=[trace]
    )
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 20)
        await kclient.create(greeting(namespace, "hello", "Hello"))

        async def ready() -> dict[str, Any] | None:
            g = await kclient.get(op.GREETING, "hello", namespace, cached=False)
            cond = get_condition(g, "Ready")
            return g if cond and cond["status"] == "True" else None

        g = await eventually(ready)
        assert g["status"]["observedGeneration"] == g["metadata"]["generation"]
        assert g["metadata"]["finalizers"] == [op.FINALIZER]
        cm = await kclient.get(op.CONFIGMAP, "greeting-hello", namespace, cached=False)
        assert cm["data"] == {"greeting": "Hello, world!"}
        ref = cm["metadata"]["ownerReferences"][0]
        assert ref["controller"] is True and ref["uid"] == g["metadata"]["uid"]

        # spec change → child updated
        await kclient.patch(op.GREETING, "hello", {"spec": {"who": "Kaito"}}, namespace)

        async def updated() -> bool:
            try:
                c = await kclient.get(op.CONFIGMAP, "greeting-hello", namespace, cached=False)
            except NotFoundError:
                return False
            return bool(c["data"]["greeting"] == "Hello, Kaito!")

        await eventually(updated)
        # someone edits the child → owns() brings the owner back and it is repaired
        await kclient.patch(op.CONFIGMAP, "greeting-hello", {"data": {"greeting": "tampered"}}, namespace)
        await eventually(updated)
        # deleted child → recreated
        await kclient.delete(op.CONFIGMAP, "greeting-hello", namespace)
        await eventually(updated)

        # converged: a no-op reconcile makes zero API requests
        ctrl = rec.controller
        q = ctrl.queue
        # settled: nothing queued, waiting for a retry, or in flight
        await eventually(lambda: len(q) == 0 and q.num_waiting() == 0 and not q._processing)
        before = len(requests)
        reconciled = mgr.metrics.registry.get_sample_value
        labels = {"controller": "greeting", "result": "success"}

        def successes() -> float:
            return reconciled("controller_runtime_reconcile_total", labels) or 0

        n0 = successes()
        # ten reconciles one after another (an enqueue while the key still waits merges with it)
        for i in range(1, 11):
            ctrl.enqueue(op.Request(namespace, "hello"))
            await eventually(lambda i=i: successes() >= n0 + i)
        assert requests[before:] == []

        # a spec no retry can fix → TerminalError, condition False, no retry storm
        await kclient.patch(op.GREETING, "hello", {"spec": {"message": "two\nlines"}}, namespace)

        async def invalid() -> bool:
            g = await kclient.get(op.GREETING, "hello", namespace, cached=False)
            return bool(get_condition(g, "Ready")["reason"] == "InvalidMessage")

        await eventually(invalid)
        term = {"controller": "greeting"}
        await eventually(lambda: reconciled("controller_runtime_terminal_reconcile_errors_total", term) == 1)

        events = await kclient.list(EVENT_GVK, namespace, cached=False)
        reasons = {e["reason"]: e.get("count") for e in events}
        assert reasons.get("Created") == 2  # first creation + re-creation after the delete, aggregated
        assert "Updated" in reasons

        # deletion runs the finalizer, then the object goes away
        await kclient.delete(op.GREETING, "hello", namespace)

        async def gone() -> bool:
            try:
                await kclient.get(op.GREETING, "hello", namespace, cached=False)
            except NotFoundError:
                return True
            return False

        await eventually(gone)
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 20)
