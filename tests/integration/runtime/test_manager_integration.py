"""Manager end to end: leader election between two managers, probes, metrics, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from kaito.runtime import (
    GVK,
    Client,
    LeaderElectionOptions,
    Manager,
    Request,
    label_selector,
)

pytestmark = pytest.mark.cluster

CM = GVK("", "v1", "ConfigMap")
LEASE = GVK("coordination.k8s.io", "v1", "Lease")
FAST_LEASE = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.5}


async def eventually(cond: Callable[[], Any], limit_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def kclient(kube_cluster: Any) -> AsyncIterator[Client]:
    async with Client(kube_cluster.client_configuration()) as c:
        yield c


def cm(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": OURS},
    }


# Keeps out kube-root-ca.crt, which kube-controller-manager adds to every namespace.
OURS = {"test": "runtime-manager"}


async def fetch(port: int | None, path: str) -> tuple[int, str]:
    assert port is not None
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_only_the_leader_reconciles_and_the_other_takes_over(
    kube_cluster: Any, namespace: str, kclient: Client
) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def make(tag: str) -> Manager:
        mgr = Manager(
            kube_cluster.client_configuration(),
            namespace=namespace,
            handle_signals=False,
            metrics_bind_address="127.0.0.1:0",
            leader_election=LeaderElectionOptions(
                name="test-lease", namespace=namespace, identity=tag, **FAST_LEASE
            ),
        )

        async def reconcile(req: Request) -> None:
            seen[tag].append(req.name)

        mgr.builder().named("le").for_(CM).complete(reconcile)
        return mgr

    a, b = make("a"), make("b")
    ta = asyncio.create_task(a.start())
    await asyncio.wait_for(a.elected.wait(), 20)
    tb = asyncio.create_task(b.start())
    try:
        for i in range(5):
            await kclient.create(cm(namespace, f"x{i}"))
        await eventually(lambda: {f"x{i}" for i in range(5)} <= set(seen["a"]))
        # b is up and has seen a holding the lease (instead of sleeping and hoping it had)
        await eventually(lambda: b._elector is not None and b._elector.leader == "a")
        assert seen["b"] == [] and not b.is_leader
        _status, text = await fetch(a.metrics_port, "/metrics")
        assert 'leader_election_master_status{name="test-lease"} 1.0' in text
        _status, text = await fetch(b.metrics_port, "/metrics")
        assert 'leader_election_master_status{name="test-lease"} 0.0' in text
        lease = await kclient.get(LEASE, "test-lease", namespace, cached=False)
        assert lease["spec"]["holderIdentity"] == "a"
        # a stops gracefully and releases the lease: b takes over well before lease expiry
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a.stop()
        await asyncio.wait_for(ta, 20)
        await asyncio.wait_for(b.elected.wait(), 10)
        assert loop.time() - t0 < FAST_LEASE["lease_duration"]
        # the new leader replays the cache: every object is reconciled once by b
        await eventually(lambda: {f"x{i}" for i in range(5)} <= set(seen["b"]))
        await kclient.create(cm(namespace, "after"))
        await eventually(lambda: "after" in seen["b"])
        assert "after" not in seen["a"]
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(ta, tb, return_exceptions=True)


async def test_losing_the_lease_stops_controllers_and_recampaigns(
    kube_cluster: Any, namespace: str, kclient: Client
) -> None:
    seen: list[str] = []
    mgr = Manager(
        kube_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=False,
        leader_election=LeaderElectionOptions(name="steal", namespace=namespace, identity="me", **FAST_LEASE),
    )

    async def reconcile(req: Request) -> None:
        seen.append(req.name)

    mgr.builder().for_(CM).complete(reconcile)
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 20)
        # someone else takes the lease (as after a network partition): renewals fail
        lease = await kclient.get(LEASE, "steal", namespace, cached=False)
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["leaseDurationSeconds"] = 3
        from datetime import UTC, datetime

        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await kclient.update(lease)
        await eventually(lambda: not mgr.is_leader, 10)
        seen.clear()
        await kclient.create(cm(namespace, "while-deposed"))
        # once the informer has it, its event has been through the (stopped) controller's handler
        informer = mgr.cache.get_informer(CM, namespace=namespace)
        await eventually(lambda: informer.store.get_by(namespace, "while-deposed") is not None)
        assert "while-deposed" not in seen
        # the intruder stops renewing: we campaign again, win, and catch up
        await asyncio.wait_for(mgr.elected.wait(), 20)
        await eventually(lambda: "while-deposed" in seen)
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 20)


async def test_probes_and_metrics_endpoints(kube_cluster: Any, namespace: str, kclient: Client) -> None:
    mgr = Manager(
        kube_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=False,
        metrics_bind_address="127.0.0.1:0",
        health_probe_bind_address="127.0.0.1:0",
    )
    done = asyncio.Event()

    async def reconcile(req: Request) -> None:
        done.set()

    mgr.builder().named("probe").for_(CM).with_options(max_concurrent_reconciles=2).complete(reconcile)
    healthy = {"ok": True}
    mgr.add_readyz_check("custom", lambda: None if healthy["ok"] else "custom says no")
    await kclient.create(cm(namespace, "p"))
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 20)
        await asyncio.wait_for(done.wait(), 10)
        assert await fetch(mgr.health_port, "/healthz") == (200, "ok")
        assert await fetch(mgr.health_port, "/readyz") == (200, "ok")
        assert await fetch(mgr.health_port, "/readyz/informers") == (200, "ok")
        status, text = await fetch(mgr.health_port, "/readyz?verbose")
        assert status == 200 and "[+]informers ok" in text and "[+]custom ok" in text
        assert (await fetch(mgr.health_port, "/readyz/nope"))[0] == 404
        healthy["ok"] = False
        status, text = await fetch(mgr.health_port, "/readyz")
        assert status == 500 and "[-]custom failed: custom says no" in text
        assert (await fetch(mgr.health_port, "/readyz?exclude=custom"))[0] == 200
        assert (await fetch(mgr.health_port, "/healthz"))[0] == 200
        status, text = await fetch(mgr.metrics_port, "/metrics")
        assert status == 200
        for name in [
            'controller_runtime_reconcile_total{controller="probe",result="success"}',
            'controller_runtime_reconcile_errors_total{controller="probe"}',
            'controller_runtime_terminal_reconcile_errors_total{controller="probe"}',
            'controller_runtime_reconcile_time_seconds_bucket{controller="probe",le=',
            'controller_runtime_max_concurrent_reconciles{controller="probe"} 2.0',
            'controller_runtime_active_workers{controller="probe"}',
            'workqueue_depth{controller="probe",name="probe"}',
            'workqueue_adds_total{controller="probe",name="probe"}',
            'workqueue_queue_duration_seconds_bucket{controller="probe",le=',
            'workqueue_work_duration_seconds_bucket{controller="probe",le=',
            'workqueue_retries_total{controller="probe",name="probe"}',
            'workqueue_unfinished_work_seconds{controller="probe",name="probe"}',
            'workqueue_longest_running_processor_seconds{controller="probe",name="probe"}',
            'rest_client_requests_total{code="200",host="127.0.0.1",method="GET"}',
        ]:
            assert name in text, name
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 20)


async def test_readyz_fails_until_caches_sync(kube_cluster: Any, namespace: str) -> None:
    mgr = Manager(
        kube_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=False,
        health_probe_bind_address="127.0.0.1:0",
        cache_sync_timeout=60,
    )
    # a kind the server does not serve: its informer can never sync
    mgr.builder().for_(GVK("nothing.example.com", "v1", "Missing")).complete(lambda req: asyncio.sleep(0))
    task = asyncio.create_task(mgr.start())
    try:
        await eventually(lambda: mgr.health_port is not None)
        status, text = await fetch(mgr.health_port, "/readyz")
        assert status == 500 and "[-]informers failed" in text
        assert (await fetch(mgr.health_port, "/healthz"))[0] == 200
        assert not mgr.is_leader  # no controller ran on an unsynced cache
    finally:
        mgr.stop()
        await asyncio.wait_for(task, 20)


async def test_sigterm_drains_in_flight_reconcile_and_releases_lease(
    kube_cluster: Any, namespace: str, kclient: Client
) -> None:
    started, finished, cancelled = [], [], []

    async def reconcile(req: Request) -> None:
        started.append(req.name)
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            cancelled.append(req.name)
            raise
        finished.append(req.name)

    mgr = Manager(
        kube_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=True,
        leader_election=LeaderElectionOptions(name="drain", namespace=namespace, identity="d", **FAST_LEASE),
    )
    # one worker: the second object waits in the queue
    mgr.builder().for_(CM, predicates=[label_selector(OURS)]).complete(reconcile)
    task = asyncio.create_task(mgr.start())
    try:
        await asyncio.wait_for(mgr.elected.wait(), 20)
        await kclient.create(cm(namespace, "first"))
        await kclient.create(cm(namespace, "second"))
        await eventually(lambda: started == ["first"])
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 20)
    finally:
        mgr.stop()
        if not task.done():
            await task
    assert finished == ["first"] and cancelled == [] and started == ["first"]
    lease = await kclient.get(LEASE, "drain", namespace, cached=False)
    assert not lease["spec"].get("holderIdentity")  # released, so a successor starts at once
