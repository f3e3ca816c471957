"""Controllers against the real kube-apiserver: sources, owner mapping, predicates, retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kaito.runtime import (
    GVK,
    Client,
    Manager,
    Request,
    TerminalError,
    label_selector,
    labels_changed,
    set_controller_reference,
)

pytestmark = pytest.mark.cluster

CM = GVK("", "v1", "ConfigMap")
SECRET = GVK("", "v1", "Secret")


@contextlib.asynccontextmanager
async def running(mgr: Manager) -> AsyncIterator[Manager]:
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 30)
        yield mgr
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 30)


async def eventually(cond: Callable[[], Any], limit_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def idle(ctrl: Any) -> bool:
    """Nothing queued, waiting for a retry, or being reconciled: every event so far is handled."""
    q = ctrl.queue
    return q is not None and len(q) == 0 and q.num_waiting() == 0 and not q._processing


def cm(ns: str, name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "data": data or {},
    }


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        yield c


def manager(kube_cluster: Any, ns: str, **kw: Any) -> Manager:
    return Manager(kube_cluster.client_configuration(), namespace=ns, handle_signals=False, **kw)


async def test_owned_object_events_reach_the_owner(
    kube_cluster: Any, namespace: str, kclient: Client
) -> None:
    seen: list[Request] = []

    async def reconcile(req: Request) -> None:
        seen.append(req)

    mgr = manager(kube_cluster, namespace)
    ctrl = (
        mgr.builder().named("parents").for_(CM, predicates=[label_selector({"role": "parent"})]).owns(SECRET)
        .complete(reconcile)
    )
    parent = await kclient.create(cm(namespace, "parent", {"role": "parent"}))
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "child", "namespace": namespace}}
    set_controller_reference(parent, secret)
    await kclient.create(secret)
    # an unowned Secret maps to nothing
    await kclient.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lone", "namespace": namespace}}
    )
    async with running(mgr):
        want = Request(namespace, "parent")
        await eventually(lambda: want in seen and idle(ctrl))
        seen.clear()
        await kclient.patch(SECRET, "child", {"stringData": {"k": "v"}}, namespace)
        await eventually(lambda: seen == [want])
        seen.clear()
        await kclient.delete(SECRET, "child", namespace)
        await eventually(lambda: seen == [want])
        assert all(r.name == "parent" for r in seen)


async def test_predicates_filter_updates(kube_cluster: Any, namespace: str, kclient: Client) -> None:
    seen: list[str] = []

    async def reconcile(req: Request) -> None:
        seen.append(req.name)

    mgr = manager(kube_cluster, namespace)
    mgr.builder().for_(CM, predicates=[labels_changed()]).complete(reconcile)
    async with running(mgr):
        await kclient.create(cm(namespace, "a", {"x": "1"}))
        await eventually(lambda: seen.count("a") == 1)
        await kclient.patch(CM, "a", {"data": {"only": "data"}}, namespace)
        # A barrier instead of a sleep: b's event follows a's in the same watch stream and one
        # worker takes keys in order, so once b is reconciled a's update has been judged.
        await kclient.create(cm(namespace, "b", {"x": "1"}))
        await eventually(lambda: "b" in seen)
        assert seen.count("a") == 1, "a data-only update passed a labels_changed predicate"
        await kclient.patch(CM, "a", {"metadata": {"labels": {"x": "2"}}}, namespace)
        await eventually(lambda: seen.count("a") == 2)


async def test_exception_requeues_with_backoff_terminal_does_not(
    kube_cluster: Any, namespace: str, kclient: Client
) -> None:
    attempts: dict[str, list[float]] = {"flaky": [], "broken": []}
    loop = asyncio.get_running_loop()

    async def reconcile(req: Request) -> None:
        if req.name not in attempts:
            return
        attempts[req.name].append(loop.time())
        if req.name == "broken":
            raise TerminalError("cannot be fixed by retrying")
        if len(attempts["flaky"]) < 6:
            raise RuntimeError("transient")

    mgr = manager(kube_cluster, namespace)
    # the selector keeps out kube-root-ca.crt, which kube-controller-manager adds to every namespace
    builder = mgr.builder().named("retry").for_(CM, predicates=[label_selector({"t": "retry"})])
    ctrl = builder.complete(reconcile)
    async with running(mgr):
        await kclient.create(cm(namespace, "flaky", {"t": "retry"}))
        await kclient.create(cm(namespace, "broken", {"t": "retry"}))
        await eventually(lambda: len(attempts["flaky"]) == 6 and idle(ctrl))
        reg = mgr.metrics.registry
        assert len(attempts["broken"]) == 1
        gaps = [b - a for a, b in zip(attempts["flaky"], attempts["flaky"][1:], strict=False)]
        for i, gap in enumerate(gaps):  # 5, 10, 20, 40, 80 ms per-item exponential backoff
            assert gap >= 0.005 * 2**i * 0.9, gaps
        assert reg.get_sample_value("controller_runtime_reconcile_errors_total", {"controller": "retry"}) == 6
        assert (
            reg.get_sample_value(
                "controller_runtime_terminal_reconcile_errors_total", {"controller": "retry"}
            )
            == 1
        )
        assert (
            reg.get_sample_value(
                "controller_runtime_reconcile_total", {"controller": "retry", "result": "success"}
            )
            == 1
        )
        # the next event brings a terminally failed key back
        await kclient.patch(CM, "broken", {"data": {"fixed": "yes"}}, namespace)
        await eventually(lambda: len(attempts["broken"]) == 2)


async def test_watches_maps_any_kind_to_requests(kube_cluster: Any, namespace: str, kclient: Client) -> None:
    seen: list[Request] = []

    async def reconcile(req: Request) -> None:
        seen.append(req)

    def secret_to_configmap(obj: dict) -> list[Request]:
        target = (obj["metadata"].get("labels") or {}).get("for-configmap")
        return [Request(obj["metadata"]["namespace"], target)] if target else []

    mgr = manager(kube_cluster, namespace)
    (
        mgr.builder()
        .named("mapped")
        .for_(CM, predicates=[label_selector({"t": "mapped"})])
        .watches(SECRET, secret_to_configmap)
        .complete(reconcile)
    )
    async with running(mgr):
        await kclient.create(cm(namespace, "target", {"t": "mapped"}))
        want = Request(namespace, "target")
        await eventually(lambda: want in seen)
        seen.clear()
        await kclient.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": namespace, "labels": {"for-configmap": "target"}},
            }
        )
        await eventually(lambda: seen == [want])
