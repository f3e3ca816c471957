"""Leader election on a real apiserver: one leader, fast failover, never two leaders at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito.runtime.client import Client
from kaito.runtime.leaderelection import LeaderElector
from kaito.runtime.resources import LEASE
from kaito.runtime.testing import Cluster

pytestmark = pytest.mark.cluster

LEASE_S, RENEW_S, RETRY_S = 2.0, 1.5, 0.3


@pytest.fixture
async def clients(kube_cluster: Cluster) -> AsyncIterator[list[Client]]:
    """One client per candidate, as if they ran in different processes."""
    cs = [Client(kube_cluster.client_configuration()) for _ in range(3)]
    try:
        yield cs
    finally:
        for c in cs:
            await c.close()


class Monitor:
    """Checks every 5 ms that at most one elector believes it leads."""

    def __init__(self, electors: list[LeaderElector]):
        self.electors = electors
        self.max_leaders = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            n = sum(e.is_leader for e in self.electors)
            self.max_leaders = max(self.max_leaders, n)
            self.samples += 1
            await asyncio.sleep(0.005)

    def __enter__(self) -> Monitor:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def leaders(self) -> list[LeaderElector]:
        return [e for e in self.electors if e.is_leader]


def elector(client: Client, ns: str, identity: str, events: list[str], **kw: Any) -> LeaderElector:
    return LeaderElector(
        client, name="kaito-test-lock", namespace=ns, identity=identity,
        lease_duration=LEASE_S, renew_deadline=RENEW_S, retry_period=RETRY_S,
        on_started_leading=lambda: events.append(f"start:{identity}"),
        on_stopped_leading=lambda: events.append(f"stop:{identity}"),
        **kw,
    )


async def wait_leader(mon: Monitor, timeout: float) -> tuple[LeaderElector, float]:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < timeout:
        leaders = mon.leaders()
        if leaders:
            return leaders[0], loop.time() - t0
        await asyncio.sleep(0.005)
    raise AssertionError("no leader elected in time")


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_one_leader_and_failover_after_crash(clients: list[Client], namespace: str) -> None:
    events: list[str] = []
    a = elector(clients[0], namespace, "a", events)
    b = elector(clients[1], namespace, "b", events)
    with Monitor([a, b]) as mon:
        tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
        leader, _ = await wait_leader(mon, 10)
        follower = b if leader is a else a
        await asyncio.sleep(LEASE_S * 2)  # steady state: renewals keep the follower out
        assert leader.is_leader and not follower.is_leader
        assert follower.leader == leader.identity

        lease = await clients[2].get(LEASE, "kaito-test-lock", namespace, cached=False)
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == 2

        # Crash: the process vanishes without releasing the lease.
        leader.release_on_cancel = False
        await cancel(tasks[leader])
        new_leader, took = await wait_leader(mon, LEASE_S + 3 * RETRY_S + 2)
        assert new_leader is follower
        # Expiry is judged from when the follower last saw the record change (up to one jittered
        # poll after the crash), then noticed at its next poll: lease + 2 polls of <= 2.2 * retry.
        assert took <= LEASE_S + 2 * 2.2 * RETRY_S + 0.5, took
        assert took >= LEASE_S - RETRY_S - 0.2, took  # it did wait for the lease to expire

        lease = await clients[2].get(LEASE, "kaito-test-lock", namespace, cached=False)
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] >= 1

        # The crashed candidate comes back and re-campaigns: it must stay a follower.
        again = elector(clients[0], namespace, leader.identity, events)
        mon.electors.append(again)
        t_again = asyncio.create_task(again.run())
        await asyncio.sleep(LEASE_S * 1.5)
        assert not again.is_leader and follower.is_leader
        await cancel(t_again)
        await cancel(tasks[follower])
    assert mon.max_leaders == 1 and mon.samples > 100
    assert events.count(f"start:{leader.identity}") == 1
    assert f"stop:{follower.identity}" in events


async def test_release_on_cancel_hands_over_quickly(clients: list[Client], namespace: str) -> None:
    events: list[str] = []
    a = elector(clients[0], namespace, "a", events)
    b = elector(clients[1], namespace, "b", events)
    with Monitor([a, b]) as mon:
        tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
        leader, _ = await wait_leader(mon, 10)
        follower = b if leader is a else a
        await cancel(tasks[leader])  # graceful shutdown: releases the lease
        lease = await clients[2].get(LEASE, "kaito-test-lock", namespace, cached=False)
        assert lease["spec"].get("holderIdentity") in ("", None, follower.identity)
        _, took = await wait_leader(mon, LEASE_S + 2)
        assert took < LEASE_S, took  # no need to wait out the lease
        assert follower.is_leader
        await cancel(tasks[follower])
    assert mon.max_leaders == 1
    assert f"stop:{leader.identity}" in events


async def test_partitioned_leader_steps_down_before_anyone_takes_over(
    clients: list[Client], namespace: str
) -> None:
    """The leader keeps running but cannot reach the apiserver: it must stop leading before the
    other candidate's view of the lease expires. The monitor checks the overlap continuously."""
    events: list[str] = []
    a = elector(clients[0], namespace, "a", events)
    b = elector(clients[1], namespace, "b", events)
    with Monitor([a, b]) as mon:
        tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
        leader, _ = await wait_leader(mon, 10)
        follower = b if leader is a else a
        leader.client.base_url = "https://127.0.0.1:1"  # nothing listens there: every renew fails
        await asyncio.wait_for(tasks[leader], RENEW_S + RETRY_S + 2)  # run() returns: leadership lost
        assert not leader.is_leader
        assert f"stop:{leader.identity}" in events
        await wait_leader(mon, LEASE_S + 3)
        assert follower.is_leader
        await cancel(tasks[follower])
    assert mon.max_leaders == 1


async def test_async_on_started_leading_is_cancelled_on_loss(
    clients: list[Client], namespace: str
) -> None:
    running = asyncio.Event()
    cancelled = asyncio.Event()

    async def lead() -> None:
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    e = LeaderElector(
        clients[0], name="kaito-test-async", namespace=namespace, identity="solo",
        lease_duration=LEASE_S, renew_deadline=RENEW_S, retry_period=RETRY_S, on_started_leading=lead,
    )
    task = asyncio.create_task(e.run())
    await asyncio.wait_for(running.wait(), 10)
    await cancel(task)
    assert cancelled.is_set()
    lease = await clients[2].get(LEASE, "kaito-test-async", namespace, cached=False)
    assert not lease["spec"].get("holderIdentity")


def test_invalid_durations_rejected() -> None:
    with pytest.raises(ValueError):
        LeaderElector(
            None, name="x", namespace="y", identity="z", lease_duration=5, renew_deadline=5  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError):
        LeaderElector(
            None, name="x", namespace="y", identity="z", renew_deadline=2, retry_period=2  # type: ignore[arg-type]
        )


async def test_run_forever_recampaigns_after_losing(clients: list[Client], namespace: str) -> None:
    """A leader cut off from the apiserver stands down, then campaigns again once it can reach
    the apiserver, as a follower first and as leader after the other candidate leaves."""
    events: list[str] = []
    a = elector(clients[0], namespace, "a", events)
    with Monitor([a]) as mon:
        ta = asyncio.create_task(a.run_forever())
        await wait_leader(mon, 10)
        real_url = clients[0].base_url
        clients[0].base_url = "https://127.0.0.1:1"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while "stop:a" not in events:
            assert loop.time() - t0 < RENEW_S + RETRY_S + 2
            await asyncio.sleep(0.01)
        assert not a.is_leader
        b = elector(clients[1], namespace, "b", events)
        mon.electors.append(b)
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(LEASE_S + 1.5)  # b takes over the expired lease
        assert b.is_leader
        clients[0].base_url = real_url  # a is back, but b holds the lease
        await asyncio.sleep(LEASE_S)
        assert not a.is_leader
        await cancel(tb)  # b leaves cleanly ...
        await wait_leader(mon, LEASE_S + 2)  # ... and the re-campaigning a takes over
        assert a.is_leader and events.count("start:a") == 2
        await cancel(ta)
    assert mon.max_leaders == 1
