"""Leader election on a real apiserver: one leader, fast failover, never two leaders at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faultproxy import Chunks, Seen, proxied

from kaito.envtest import Cluster, ClusterOptions
from kaito.runtime import (
    CONFIGMAP,
    LEASE,
    Client,
    ConflictError,
    LeaderElectionOptions,
    LeaderElector,
    Manager,
    Request,
    label_selector,
)

pytestmark = pytest.mark.cluster

LEASE_S, RENEW_S, RETRY_S = 2.0, 1.5, 0.3


@pytest.fixture(scope="module")
def le_cluster() -> Iterator[Cluster]:
    """Leader election gets a control plane of its own (etcd + apiserver only): its tests
    stall the event loop and race for leases, and must not share a cluster with other tests."""
    with Cluster(ClusterOptions()) as c:
        yield c


@pytest.fixture
async def namespace(le_cluster: Cluster) -> AsyncIterator[str]:
    name = f"le-{uuid.uuid4().hex[:8]}"
    async with Client(le_cluster.client_configuration()) as c:
        await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        yield name


@pytest.fixture
async def clients(le_cluster: Cluster) -> AsyncIterator[list[Client]]:
    """One client per candidate, as if they ran in different processes."""
    cs = [Client(le_cluster.client_configuration()) for _ in range(3)]
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
        # The follower has read the leader's lease (its first poll may still be in flight) ...
        await asyncio.wait_for(_until(lambda: follower.leader == leader.identity), 10)
        await asyncio.sleep(LEASE_S * 2)  # ... and in steady state renewals keep it out
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
        await asyncio.wait_for(_until(lambda: again.leader == follower.identity), 10)  # it campaigns
        await asyncio.sleep(LEASE_S * 1.5)  # and for longer than a lease, never wins
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
        await asyncio.wait_for(_until(lambda: b.is_leader), 10)  # b takes over the expired lease
        assert b.is_leader
        clients[0].base_url = real_url  # a is back, but b holds the lease
        await asyncio.wait_for(_until(lambda: a.leader == "b"), 10)  # a has read b's lease ...
        await asyncio.sleep(LEASE_S)  # ... and for a lease's length does not take it
        assert not a.is_leader
        await cancel(tb)  # b leaves cleanly ...
        await wait_leader(mon, LEASE_S + 2)  # ... and the re-campaigning a takes over
        assert a.is_leader and events.count("start:a") == 2
        await cancel(ta)
    assert mon.max_leaders == 1


async def test_release_retries_when_the_lease_changed_underneath(
    clients: list[Client], namespace: str
) -> None:
    """Issue 8, bug 8: the lease's resourceVersion moved since our last renewal (a renewal whose
    answer we never read, or a tool labelling the lease); the release PUT conflicts. The elector
    must re-read and release anyway, or the successor waits out a whole lease."""
    events: list[str] = []
    # A long retry period: no renewal of ours lands between the outside write and stop().
    a = LeaderElector(
        clients[0], name="kaito-test-release", namespace=namespace, identity="a",
        lease_duration=30, renew_deadline=20, retry_period=10,
        on_stopped_leading=lambda: events.append("stop:a"),
    )
    task = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(_until(lambda: a.is_leader), 10)
        lease = await clients[2].get(LEASE, "kaito-test-release", namespace, cached=False)
        lease["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
        await clients[2].update(lease)
        a.stop()
        await asyncio.wait_for(task, 10)
    finally:
        await cancel(task)
    assert events == ["stop:a"]
    lease = await clients[2].get(LEASE, "kaito-test-release", namespace, cached=False)
    assert not lease["spec"].get("holderIdentity"), lease["spec"]


async def test_release_after_cancel_retries_on_conflict(clients: list[Client], namespace: str) -> None:
    """The same race through cancellation (how a caller without stop() shuts down)."""
    a = LeaderElector(
        clients[0], name="kaito-test-release2", namespace=namespace, identity="a",
        lease_duration=30, renew_deadline=20, retry_period=10,
    )
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(_until(lambda: a.is_leader), 10)
    lease = await clients[2].get(LEASE, "kaito-test-release2", namespace, cached=False)
    lease["metadata"].setdefault("annotations", {})["note"] = "x"
    await clients[2].update(lease)
    await cancel(task)
    lease = await clients[2].get(LEASE, "kaito-test-release2", namespace, cached=False)
    assert not lease["spec"].get("holderIdentity"), lease["spec"]


async def _until(cond: Any, step: float = 0.01) -> None:
    while not cond():  # noqa: ASYNC110 (polls state another task changes)
        await asyncio.sleep(step)


async def test_stalled_leader_steps_down_without_acting(
    le_cluster: Cluster, clients: list[Client], namespace: str
) -> None:
    """Issue 8, bug 2: the leader's event loop blocks for longer than the lease (a long GC, a
    blocking call). Meanwhile another process takes the expired lease. When the old leader's
    loop runs again it is already past its renew deadline, so it must not act, not even once,
    before it notices: the deadline counts from the last successful renewal."""
    cfg = le_cluster.client_configuration()
    acted_after: list[float] = []
    resumed = {"at": float("inf")}

    a = LeaderElector(
        clients[0], name="kaito-test-stall", namespace=namespace, identity="a",
        lease_duration=LEASE_S, renew_deadline=RENEW_S, retry_period=RETRY_S,
    )

    async def act() -> None:  # the leader's work, fenced by is_leader as a controller's is
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.01)
            if a.is_leader and loop.time() >= resumed["at"]:
                acted_after.append(loop.time())

    a.on_started_leading = act
    ta = asyncio.create_task(a.run())
    await asyncio.wait_for(_until(lambda: a.is_leader), 10)

    stop_b = threading.Event()
    b_state: dict[str, Any] = {"leader": False, "error": None}

    def run_b() -> None:
        async def main() -> None:
            async with Client(cfg) as cb:
                b = LeaderElector(
                    cb, name="kaito-test-stall", namespace=namespace, identity="b",
                    lease_duration=LEASE_S, renew_deadline=RENEW_S, retry_period=RETRY_S,
                )
                tb = asyncio.create_task(b.run())
                while not stop_b.is_set():
                    b_state["leader"] = b.is_leader
                    await asyncio.sleep(0.02)
                tb.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tb

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the assertion below
            b_state["error"] = exc

    thread = threading.Thread(target=run_b, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not b_state["leader"] and time.monotonic() < deadline:
            # Block the loop (no await): a cannot renew, b takes the lease once it expires.
            time.sleep(0.05)  # noqa: ASYNC251 (stalling the loop is the point)
        assert b_state["leader"], "the other candidate never took the expired lease"
        resumed["at"] = asyncio.get_running_loop().time()
        await asyncio.wait_for(ta, RENEW_S + RETRY_S + 5)  # a stands down
        assert not a.is_leader
        assert acted_after == []
        lease = await clients[2].get(LEASE, "kaito-test-stall", namespace, cached=False)
        assert lease["spec"]["holderIdentity"] == "b"
    finally:
        stop_b.set()
        await asyncio.to_thread(thread.join, 20)
        await cancel(ta)
    assert b_state["error"] is None, b_state["error"]


async def test_expiry_follows_the_holders_lease_duration(clients: list[Client], namespace: str) -> None:
    """Issue 8, bug 2: the holder wrote leaseDurationSeconds=8; a candidate configured with a
    shorter lease must still wait the holder's 8 s (from when it first saw the record)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await clients[2].create({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kaito-test-held", "namespace": namespace},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 8, "acquireTime": now,
                 "renewTime": now, "leaseTransitions": 0},
    })
    b = LeaderElector(
        clients[1], name="kaito-test-held", namespace=namespace, identity="b",
        lease_duration=LEASE_S, renew_deadline=RENEW_S, retry_period=RETRY_S,
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(b.run())
    try:
        await asyncio.wait_for(_until(lambda: b.is_leader), 30)
        took = loop.time() - t0
    finally:
        await cancel(task)
    assert took >= 8 - 0.5, took  # a lower bound only: a slow machine can only make it later


async def test_lost_lease_cancels_the_reconcile_in_flight(
    le_cluster: Cluster, clients: list[Client], namespace: str
) -> None:
    """Issue 8, bug 1: another process takes the lease (as after a partition) and writes at once.
    The old leader's reconcile that was in flight must not write after that: it is cancelled as
    soon as the loss is seen, not drained for up to the graceful shutdown timeout."""
    gate = asyncio.Event()
    started = asyncio.Event()
    outcome: list[str] = []

    async def reconcile(req: Request) -> None:
        if req.name != "work":
            return
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        await clients[2].patch(CONFIGMAP, "work", {"metadata": {"annotations": {"writer": "old"}}}, namespace)
        outcome.append("wrote")

    timings = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.5}
    mgr = Manager(
        le_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=False,
        leader_election=LeaderElectionOptions(name="steal", namespace=namespace, identity="old", **timings),
    )
    mgr.builder().for_(CONFIGMAP, predicates=[label_selector({"t": "steal"})]).complete(reconcile)
    await clients[2].create({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "work", "namespace": namespace, "labels": {"t": "steal"}},
    })
    task = asyncio.create_task(mgr.start())
    new = LeaderElector(clients[1], name="steal", namespace=namespace, identity="new", **timings)
    tnew: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(started.wait(), 30)
        lease = await clients[1].get(LEASE, "steal", namespace, cached=False)
        lease["spec"].update(
            holderIdentity="new", renewTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        )
        await clients[1].update(lease)
        tnew = asyncio.create_task(new.run())  # it holds the lease now and keeps renewing
        await asyncio.wait_for(_until(lambda: new.is_leader), 10)
        await clients[1].patch(CONFIGMAP, "work", {"metadata": {"annotations": {"writer": "new"}}}, namespace)
        await asyncio.wait_for(_until(lambda: not mgr.is_leader), 10)
        gate.set()  # had the old reconcile survived the loss, it would write now
        await asyncio.wait_for(_until(lambda: bool(outcome)), 10)
        assert outcome == ["cancelled"]
        obj = await clients[2].get(CONFIGMAP, "work", namespace, cached=False)
        assert obj["metadata"]["annotations"]["writer"] == "new"
    finally:
        gate.set()
        mgr.stop()
        await asyncio.wait_for(task, 30)
        if tnew is not None:
            await cancel(tnew)


async def test_renew_deadline_counts_from_when_the_renewal_was_sent(
    le_cluster: Cluster, clients: list[Client], namespace: str
) -> None:
    """Issue 20, bug 7: the apiserver commits a renewal at once but its answer reaches the leader
    late (a proxy holds the response back); afterwards the leader is cut off. The follower sees
    the committed record and takes over one lease after it; the old leader must consider itself
    expired no later than (renewal sent) + lease duration, so the two never lead at once."""
    lease_s, renew_s, retry_s, hold_s = 4.0, 3.0, 0.3, 2.0
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/kaito-test-held-answer"
    armed = asyncio.Event()
    cut_off = asyncio.Event()
    never = asyncio.Event()
    loop = asyncio.get_running_loop()
    held: dict[str, float] = {}

    async def before(seen: Seen) -> None:
        if seen.path != lease_path:
            return
        if cut_off.is_set():
            await never.wait()  # partitioned: the request never reaches the apiserver
        if armed.is_set() and seen.method == "PUT":
            armed.clear()
            held["sent"] = loop.time()  # the renewal reached us: it was sent by now

    async def fault(seen: Seen, chunks: Chunks) -> Chunks | None:
        if seen.path == lease_path and seen.method == "PUT" and "sent" in held and "read" not in held:
            cut_off.set()  # every later lease request of this leader goes nowhere
            await asyncio.sleep(hold_s)  # committed upstream; the answer is held back
            held["read"] = loop.time()
        return chunks

    events: list[str] = []
    async with proxied(le_cluster.client_configuration(), before=before, fault=fault) as (_, pc):
        a = LeaderElector(
            pc, name="kaito-test-held-answer", namespace=namespace, identity="a",
            lease_duration=lease_s, renew_deadline=renew_s, retry_period=retry_s,
            on_stopped_leading=lambda: events.append("stop:a"),
        )
        b = LeaderElector(
            clients[1], name="kaito-test-held-answer", namespace=namespace, identity="b",
            lease_duration=lease_s, renew_deadline=renew_s, retry_period=retry_s,
        )
        expired_at: dict[str, float] = {}

        async def watch_a() -> None:
            while a.is_leader or "sent" not in held:  # noqa: ASYNC110 (polls the elector's clock)
                await asyncio.sleep(0.005)
            expired_at["a"] = loop.time()
            # (white-box, only to prove the fault took effect: the held renewal was the last
            # one a accepted; old code stamped it when the answer was read, new code when sent)
            held["renewed"] = a._last_renew

        with Monitor([a, b]) as mon:
            ta = asyncio.create_task(a.run())
            await asyncio.wait_for(_until(lambda: a.is_leader), 10)
            tb = asyncio.create_task(b.run())
            await asyncio.wait_for(_until(lambda: b.leader == "a"), 10)  # b has seen a's lease and follows it
            watcher = asyncio.create_task(watch_a())
            armed.set()
            try:
                await asyncio.wait_for(_until(lambda: b.is_leader), lease_s + renew_s + 10)
                await asyncio.wait_for(watcher, 10)
                await asyncio.wait_for(ta, 10)
            finally:
                never.set()
                watcher.cancel()
                await cancel(ta)
                await cancel(tb)
        assert "read" in held, "the held renewal was never answered"
        # The held answer was read in time: the renewal succeeded (a's last renewal is this one).
        assert held.get("renewed", 0.0) > held["sent"] - retry_s / 2, held
        assert expired_at["a"] <= held["sent"] + lease_s, (expired_at["a"] - held["sent"], held)
        assert mon.max_leaders == 1
        assert events == ["stop:a"]


async def test_lease_lost_during_the_drain_abandons_leader_work_at_once(
    le_cluster: Cluster, clients: list[Client], namespace: str
) -> None:
    """Issue 20, bug 7: shutdown has begun and the controllers are draining a slow reconcile
    (graceful_shutdown_timeout is long) when another process takes the lease. The drain must end
    at once: the reconcile is cancelled and never writes, and the manager does not spend the
    rest of its grace period (controller-runtime sets the graceful timeout to zero)."""
    gate = asyncio.Event()
    started = asyncio.Event()
    outcome: list[str] = []

    async def reconcile(req: Request) -> None:
        if req.name != "work":
            return
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        await clients[2].patch(CONFIGMAP, "work", {"metadata": {"annotations": {"writer": "old"}}}, namespace)
        outcome.append("wrote")

    timings = {"lease_duration": 4.0, "renew_deadline": 3.0, "retry_period": 0.3}
    grace = 60.0
    mgr = Manager(
        le_cluster.client_configuration(),
        namespace=namespace,
        handle_signals=False,
        graceful_shutdown_timeout=grace,
        leader_election=LeaderElectionOptions(name="drain", namespace=namespace, identity="old", **timings),
    )
    mgr.builder().for_(CONFIGMAP, predicates=[label_selector({"t": "drain"})]).complete(reconcile)
    await clients[2].create({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "work", "namespace": namespace, "labels": {"t": "drain"}},
    })
    task = asyncio.create_task(mgr.start())
    new = LeaderElector(clients[1], name="drain", namespace=namespace, identity="new", **timings)
    tnew: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(started.wait(), 30)
        mgr.stop()  # the drain waits for the reconcile, for up to `grace` seconds
        await asyncio.sleep(2 * timings["retry_period"])  # (renewals go on during the drain)
        assert not task.done() and outcome == []
        # Take the lease as another process would: read, write, and read again on a conflict
        # (the old leader keeps renewing during the drain, so a write can meet a newer version).
        while True:
            lease = await clients[1].get(LEASE, "drain", namespace, cached=False)
            assert lease["spec"]["holderIdentity"] == "old"
            lease["spec"].update(
                holderIdentity="new", renewTime=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            )
            try:
                await clients[1].update(lease)
                break
            except ConflictError:
                continue
        taken = loop.time()
        tnew = asyncio.create_task(new.run())  # it holds the lease now and keeps renewing
        # The old leader sees the new holder at its next renewal (one retry period) and cancels
        # the reconcile then, not after the grace period.
        await asyncio.wait_for(_until(lambda: bool(outcome)), 10)
        assert outcome == ["cancelled"]
        await asyncio.wait_for(task, 10)  # and the rest of the shutdown does not wait either
        assert loop.time() - taken < 10 < grace
        gate.set()
        obj = await clients[2].get(CONFIGMAP, "work", namespace, cached=False)
        assert "writer" not in (obj["metadata"].get("annotations") or {})
        lease = await clients[1].get(LEASE, "drain", namespace, cached=False)
        assert lease["spec"]["holderIdentity"] == "new"  # not released by the old leader
    finally:
        gate.set()
        mgr.stop()
        await asyncio.wait_for(task, grace + 10)
        if tnew is not None:
            await cancel(tnew)
