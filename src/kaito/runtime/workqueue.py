"""A client-go style work queue for asyncio.

The queue is what makes reconcilers safe to write: a key is never handed to two workers at once
(``processing``), and any number of events that arrive while a key is being reconciled collapse
into exactly one rerun (``dirty``). Delays and rate limits are layered on top so that failing
keys back off individually while the whole controller is still bounded by a token bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T", bound=Hashable)

Clock = Callable[[], float]


class ShutDown(Exception):
    """Raised by ``WorkQueue.get`` once the queue is shut down and has nothing left to hand out."""


# --------------------------------------------------------------------------- rate limiters


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float: ...

    def forget(self, item: Hashable) -> None: ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """Per-item exponential backoff: base * 2**failures, capped; reset only by ``forget``."""

    def __init__(self, base: float = 0.005, max_delay: float = 1000.0):
        self.base = base
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp > 64:  # 2**64 * base overflows any sane cap; avoid huge floats.
            return self.max_delay
        return min(self.base * (2.0**exp), self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class ItemFastSlowRateLimiter:
    """``fast`` delay for the first ``max_fast_attempts`` failures, then ``slow``."""

    def __init__(self, fast: float, slow: float, max_fast_attempts: int):
        self.fast, self.slow, self.max_fast_attempts = fast, slow, max_fast_attempts
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        n = self._failures.get(item, 0) + 1
        self._failures[item] = n
        return self.fast if n <= self.max_fast_attempts else self.slow

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """Token bucket across all items: bounds the controller's total retry rate.

    Like golang.org/x/time/rate ``Reserve().Delay()``: every call takes a token, possibly going
    into debt, and the returned delay is how long until that token exists.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock = time.monotonic):
        if qps <= 0 or burst <= 0:
            raise ValueError("qps and burst must be positive")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, item: Hashable) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The worst (longest) delay of several limiters; every limiter sees every call."""

    def __init__(self, *limiters: RateLimiter):
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock = time.monotonic) -> RateLimiter:
    """controller-runtime's default: per-item 5 ms → 1000 s, overall 10 qps with a burst of 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(qps=10, burst=100, clock=clock),
    )


def jittered(base: float, factor: float = 1.0) -> float:
    """``base`` plus up to ``factor * base`` random extra, as wait.Jitter does."""
    return base + random.random() * factor * base


# --------------------------------------------------------------------------- metrics hooks


class WorkQueueMetrics(Protocol):
    def add(self, item: Hashable) -> None: ...

    def get(self, item: Hashable) -> None: ...

    def done(self, item: Hashable) -> None: ...

    def retry(self) -> None: ...


# --------------------------------------------------------------------------- the queue


class WorkQueue(Generic[T]):
    """FIFO of unique items with dirty/processing sets, delays and rate-limited requeues.

    asyncio-only and not thread-safe: ``add`` is a plain function so informer handlers (which are
    synchronous) can enqueue without awaiting.
    """

    def __init__(
        self,
        name: str = "",
        rate_limiter: RateLimiter | None = None,
        metrics: WorkQueueMetrics | None = None,
        clock: Clock = time.monotonic,
    ):
        self.name = name
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter()
        self.metrics = metrics
        self._clock = clock
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # Delayed items: item -> ready time (earliest wins); heap entries are lazily invalidated.
        self._waiting: dict[T, float] = {}
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._delay_task: asyncio.Task[None] | None = None
        self._delay_wakeup: asyncio.Event | None = None

    # ----- basic queue

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        if self.metrics is not None:
            self.metrics.add(item)
        self._dirty.add(item)
        if item in self._processing:
            # Re-queued by done(): the running reconcile will be followed by exactly one more.
            return
        self._queue.append(item)
        self._wake_one()

    async def get(self) -> T:
        """Next item; it stays "processing" until ``done`` so nobody else gets it meanwhile."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # we were woken but will not consume: pass it on
                raise
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        if self.metrics is not None:
            self.metrics.get(item)
        return item

    def get_nowait(self) -> T | None:
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        if self.metrics is not None:
            self.metrics.get(item)
        return item

    def done(self, item: T) -> None:
        if self.metrics is not None:
            self.metrics.done(item)
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()
        elif not self._processing and self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def is_processing(self, item: T) -> bool:
        return item in self._processing

    def is_dirty(self, item: T) -> bool:
        return item in self._dirty

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    # ----- shutdown

    def shutdown(self) -> None:
        """Stop accepting items; ``get`` hands out what is queued, then raises ``ShutDown``."""
        self._shutting_down = True
        self._waiting.clear()
        self._heap.clear()
        if self._delay_task is not None and not self._delay_task.done():
            self._delay_task.cancel()
        self._wake_all()

    async def shutdown_with_drain(self) -> None:
        """Shut down, then wait until every item handed out has been marked ``done``."""
        if self._processing:
            self._drain_waiter = asyncio.get_running_loop().create_future()
        self.shutdown()
        if self._drain_waiter is not None and self._processing:
            await self._drain_waiter

    # ----- delays

    def add_after(self, item: T, delay: float) -> None:
        """Add ``item`` after ``delay`` seconds; if it is already waiting, the earlier time wins.

        Counted in ``workqueue_retries_total`` as client-go's delaying queue counts it: every
        delayed add (rate-limited retries and ``requeue_after`` alike), none after shutdown.
        """
        if self._shutting_down:
            return
        if self.metrics is not None:
            self.metrics.retry()
        if delay <= 0:
            self.add(item)
            return
        ready = self._clock() + delay
        current = self._waiting.get(item)
        if current is not None and current <= ready:
            return
        self._waiting[item] = ready
        seq = next(self._seq)
        heapq.heappush(self._heap, (ready, seq, item))
        if self._heap[0][1] == seq or self._delay_task is None:
            self._kick_delay_loop()  # new earliest deadline: the sleeping loop must re-plan

    def flush_delayed(self) -> float | None:
        """Move every delayed item whose time has come into the queue.

        Returns seconds until the next one is due (None if none). The background loop calls this;
        tests with a fake clock call it directly after moving the clock.
        """
        now = self._clock()
        heap = self._heap
        while heap:
            ready, _, item = heap[0]
            if self._waiting.get(item) != ready:
                heapq.heappop(heap)  # superseded by an earlier add_after, or already added
                continue
            if ready > now:
                return ready - now
            heapq.heappop(heap)
            del self._waiting[item]
            self.add(item)
        return None

    def num_waiting(self) -> int:
        return len(self._waiting)

    def _kick_delay_loop(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first add_after inside a loop starts it
        if self._delay_wakeup is None:
            self._delay_wakeup = asyncio.Event()
        self._delay_wakeup.set()
        if self._delay_task is None or self._delay_task.done():
            self._delay_task = asyncio.create_task(self._delay_loop(), name=f"workqueue-delay-{self.name}")

    async def _delay_loop(self) -> None:
        assert self._delay_wakeup is not None
        wakeup = self._delay_wakeup
        while not self._shutting_down:
            wakeup.clear()
            wait = self.flush_delayed()
            # Cap the sleep so a (test) clock that jumps is noticed reasonably soon.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=min(wait, 10.0) if wait is not None else None)

    # ----- rate limiting

    def add_rate_limited(self, item: T) -> None:
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)
