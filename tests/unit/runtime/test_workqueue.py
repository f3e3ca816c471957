"""WorkQueue semantics: uniqueness, one rerun per burst, delays, drain."""

from __future__ import annotations

import asyncio

import pytest

from kaito.runtime import (
    ItemExponentialFailureRateLimiter,
    ShutDown,
    WorkQueue,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_add_dedupes_and_is_fifo() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    for k in ["a", "b", "a", "c", "b"]:
        q.add(k)
    assert len(q) == 3
    assert [await q.get(), await q.get(), await q.get()] == ["a", "b", "c"]


async def test_key_never_processed_concurrently_and_burst_gives_one_rerun() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    active: set[str] = set()
    runs: dict[str, int] = {"k": 0}
    overlap = False
    started = asyncio.Event()
    release = asyncio.Event()

    async def worker() -> None:
        nonlocal overlap
        while True:
            try:
                item = await q.get()
            except ShutDown:
                return
            if item in active:
                overlap = True
            active.add(item)
            runs[item] += 1
            if runs[item] == 1:
                started.set()
                await release.wait()
            else:
                await asyncio.sleep(0.01)
            active.discard(item)
            q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    q.add("k")
    await started.wait()
    # K events while the first reconcile runs: the key is dirty but must not be handed out.
    for _ in range(50):
        q.add("k")
        await asyncio.sleep(0)
    assert len(q) == 0
    assert q.is_processing("k") and q.is_dirty("k")
    release.set()
    # wait for the queue to settle: then no further run is possible, so the count is final
    for _ in range(2000):
        if runs["k"] >= 2 and len(q) == 0 and not q.is_processing("k") and not q.is_dirty("k"):
            break
        await asyncio.sleep(0.005)
    assert runs["k"] == 2
    assert not overlap
    await q.shutdown_with_drain()
    await asyncio.gather(*workers)


async def test_done_without_dirty_does_not_requeue() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    item = await q.get()
    q.done(item)
    assert len(q) == 0


async def test_get_blocks_until_add() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    getter = asyncio.create_task(q.get())
    while not q._waiters:  # noqa: ASYNC110 (until the getter is parked on the empty queue)
        await asyncio.sleep(0)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_cancelled_getter_does_not_swallow_item() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    g1 = asyncio.create_task(q.get())
    g2 = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    g1.cancel()
    q.add("x")
    assert await asyncio.wait_for(g2, 1) == "x"


async def test_add_after_keeps_earliest_time_with_fake_clock() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("t", clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 5)  # earlier wins
    q.add_after("a", 20)  # later is ignored
    assert q.num_waiting() == 1
    clock.now += 4.9
    assert q.flush_delayed() == pytest.approx(0.1)
    assert len(q) == 0
    clock.now += 0.1
    assert q.flush_delayed() is None
    assert len(q) == 1
    assert await q.get() == "a"
    # the stale (10 s, 20 s) heap entries must not re-add it
    clock.now += 100
    q.flush_delayed()
    assert len(q) == 0


async def test_add_after_real_time_and_immediate() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("late", 0.15)
    q.add_after("now", 0)
    assert await q.get() == "now"
    t0 = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(q.get(), 2) == "late"
    assert asyncio.get_running_loop().time() - t0 >= 0.1
    q.shutdown()


async def test_add_after_earlier_deadline_wakes_sleeping_loop() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("a", 30)
    await asyncio.sleep(0.01)
    q.add_after("a", 0.05)
    assert await asyncio.wait_for(q.get(), 2) == "a"
    q.shutdown()


async def test_add_rate_limited_backoff_and_forget() -> None:
    clock = FakeClock()
    rl = ItemExponentialFailureRateLimiter(0.005, 1000)
    q: WorkQueue[str] = WorkQueue("t", rate_limiter=rl, clock=clock)
    for _ in range(3):
        q.add_rate_limited("x")
    assert q.num_requeues("x") == 3
    q.forget("x")
    assert q.num_requeues("x") == 0
    q.shutdown()


async def test_shutdown_hands_out_remaining_then_raises() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    q.shutdown()
    q.add("b")  # ignored after shutdown
    assert await q.get() == "a"
    with pytest.raises(ShutDown):
        await q.get()


async def test_shutdown_wakes_blocked_getters() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shutdown()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_shutdown_with_drain_waits_for_processing() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    item = await q.get()
    drain = asyncio.create_task(q.shutdown_with_drain())
    while not q.shutting_down:  # noqa: ASYNC110 (the drain has started and is parked)
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not drain.done()  # it cannot finish while "a" is processing
    q.done(item)
    await asyncio.wait_for(drain, 1)


class RecordingMetrics:
    def __init__(self) -> None:
        self.events: list[str] = []

    def add(self, item: object) -> None:
        self.events.append("add")

    def get(self, item: object) -> None:
        self.events.append("get")

    def done(self, item: object) -> None:
        self.events.append("done")

    def retry(self) -> None:
        self.events.append("retry")


async def test_metrics_hooks() -> None:
    m = RecordingMetrics()
    q: WorkQueue[str] = WorkQueue("t", metrics=m)
    q.add("a")
    q.add("a")
    item = await q.get()
    q.done(item)
    q.add_rate_limited("b")
    q.shutdown()
    assert m.events[:4] == ["add", "get", "done", "retry"]


async def test_retries_counted_as_client_go_counts_them() -> None:
    """Issue 8, bug 10: every delayed add is a retry (requeue_after too), none after shutdown."""
    m = RecordingMetrics()
    q: WorkQueue[str] = WorkQueue("t", metrics=m)
    q.add_after("a", 30)  # Result(requeue_after=30) ends up here
    q.add_rate_limited("b")
    assert m.events.count("retry") == 2
    q.shutdown()
    q.add_rate_limited("c")
    q.add_after("d", 1)
    assert m.events.count("retry") == 2


async def test_queue_with_metrics_runs_no_timer_and_scrapes_live_ages() -> None:
    """Issue 24 item 4: a converged controller's queue must not wake the process on its own.
    The in-progress gauges are worked out at scrape time instead of every 500 ms."""
    from kaito.runtime.metrics import Metrics

    clock = FakeClock()
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue("t", metrics=metrics.queue("t", clock=clock), clock=clock)
    before = asyncio.all_tasks()
    q.add("a")
    q.add("b")
    item = await q.get()
    assert asyncio.all_tasks() == before  # nothing scheduled behind the caller's back
    clock.now += 4.0
    get = metrics.registry.get_sample_value
    labels = {"controller": "t", "name": "t"}
    assert get("workqueue_unfinished_work_seconds", labels) == 4.0
    assert get("workqueue_longest_running_processor_seconds", labels) == 4.0
    q.done(item)
    assert get("workqueue_unfinished_work_seconds", labels) == 0.0
    assert get("workqueue_longest_running_processor_seconds", labels) == 0.0
    q.shutdown()
