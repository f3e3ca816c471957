"""Controllers: event sources → work queue of keys → level-triggered reconcile workers.

A controller never passes events to the reconciler, only ``Request(namespace, name)``: the
reconciler reads current state from the cache, so missed, duplicated or reordered events cannot
produce a wrong result, only a late one. The work queue guarantees a key is reconciled by at
most one worker at a time and that events arriving during a reconcile cause exactly one rerun.

Failure policy (same as controller-runtime):
  * an exception → ``add_rate_limited`` (per-key exponential backoff, 5 ms → 1000 s, bounded by
    an overall token bucket), counted in ``controller_runtime_reconcile_errors_total``;
  * ``TerminalError`` → logged and counted, no retry until the next event for that key;
  * ``Result(requeue_after=s)`` → re-run after ``s`` seconds, backoff reset;
  * ``Result(requeue=True)`` → rate-limited re-run;
  * success → backoff reset (``forget``);
  * anything else escaping the reconcile (a stray ``CancelledError`` that is not our own
    cancellation, a custom ``BaseException``) is a "panic": counted in
    ``controller_runtime_reconcile_panics_total`` and retried, so a worker never dies silently
    while readiness still passes. Workers are supervised: if one ends anyway, the controller
    fails, and with it the manager.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp

from kaito.runtime.errors import ConflictError
from kaito.runtime.logging import get_logger, reconcile_context
from kaito.runtime.metrics import ControllerMetrics, Metrics
from kaito.runtime.options import ControllerOptions
from kaito.runtime.predicates import Predicate
from kaito.runtime.resources import GVK
from kaito.runtime.workqueue import ShutDown, WorkQueue

#: Failures that explain themselves in one line (a timeout, a lost optimistic-concurrency race, the
#: apiserver going away mid-request): logged without a traceback, which would only be noise.
_ONE_LINE_FAILURES = (TimeoutError, ConflictError, aiohttp.ClientConnectionError, ConnectionError)

Obj = dict[str, Any]
T = TypeVar("T")

_log = get_logger("kaito.runtime.controller")


@dataclass(frozen=True, slots=True)
class Request:
    """The only thing a reconciler is told: which object to look at (namespace None = cluster-scoped)."""

    namespace: str | None
    name: str

    @classmethod
    def from_object(cls, obj: Obj) -> Request:
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace") or None, meta["name"])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class Result:
    """``requeue_after`` wins over ``requeue``; ``requeue`` alone means a rate-limited retry."""

    requeue: bool = False
    requeue_after: float | None = None


class TerminalError(Exception):
    """A failure that retrying cannot fix (invalid spec, missing permission by design).

    The key is not requeued; the next change to the object (or a related one) brings it back.
    """


@runtime_checkable
class Reconciler(Protocol):
    async def reconcile(self, req: Request) -> Result | None: ...


ReconcileFn = Callable[[Request], Awaitable[Result | None]]
Mapper = Callable[[Obj], Iterable[Request]]


class EventSource(Protocol):
    """What a controller needs from an informer: handlers, and knowing when it has synced."""

    def add_handler(self, handler: Any) -> Any: ...

    async def wait_for_sync(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109

    @property
    def has_synced(self) -> bool: ...


class _Handler:
    """Informer event handler: filter with predicates, map to requests, enqueue. Must stay cheap
    and synchronous because it runs inside the informer's dispatch loop."""

    def __init__(
        self,
        controller: Controller,
        to_requests: Callable[[Obj], Iterable[Request]],
        preds: Sequence[Predicate],
    ) -> None:
        self._c = controller
        self._map = to_requests
        self._preds = tuple(preds)

    def _enqueue(self, obj: Obj) -> None:
        for req in self._map(obj):
            self._c.enqueue(req)

    def on_add(self, obj: Obj) -> None:
        if not self._c.accepting:
            return  # stopped (not leader) or not synced yet: the next start replays the store
        if all(p.create(obj) for p in self._preds):
            self._enqueue(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if not self._c.accepting:
            return
        if all(p.update(old, new) for p in self._preds):
            self._enqueue(old)
            self._enqueue(new)  # an owner change must reach both the old and the new owner

    def on_delete(self, obj: Obj) -> None:
        if not self._c.accepting:
            return
        if all(p.delete(obj) for p in self._preds):
            self._enqueue(obj)


@dataclass
class _Source:
    gvk: GVK
    informer: EventSource
    handler: _Handler
    store: Any = field(default=None)


class ControllerError(RuntimeError):
    """A controller cannot go on (a worker died, sources never synced)."""


class Controller:
    """Runs reconcile workers for one primary kind; a manager runnable that needs leadership.

    Handlers are attached to the shared informers once; while the controller is stopped (not
    leader, shutting down, or its sources not synced yet) they drop events, and every start
    replays the informers' stores once all of them have synced, so a new leader reconciles
    everything once, exactly like an informer's initial list. Mappers therefore always run
    against synced caches (and resolved discovery).
    """

    needs_leader_election = True

    def __init__(
        self,
        name: str,
        reconciler: Reconciler | ReconcileFn,
        options: ControllerOptions | None = None,
        *,
        metrics: Metrics | None = None,
        **overrides: Any,
    ) -> None:
        """``overrides`` are ``ControllerOptions`` fields (``max_concurrent_reconciles=4``)."""
        opts = options or ControllerOptions()
        self.options = opts = opts.replace(**overrides) if overrides else opts
        if opts.max_concurrent_reconciles < 1:
            raise ValueError(
                f"max_concurrent_reconciles must be at least 1 (got {opts.max_concurrent_reconciles})"
            )
        self.name = name
        self._reconcile: ReconcileFn = (
            reconciler.reconcile if isinstance(reconciler, Reconciler) else reconciler
        )
        self.metrics = metrics if metrics is not None else Metrics()
        self._cm: ControllerMetrics = self.metrics.controller(name)
        self._sources: list[_Source] = []
        self._queue: WorkQueue[Request] | None = None
        self._accepting = False
        self._log = _log.bind(controller=name)
        self.started = asyncio.Event()  # set once workers run (tests, readiness)
        #: Set by the manager: False once leadership may have passed to someone else, so no
        #: new reconcile starts even before the manager has stopped this controller.
        self.may_act: Callable[[], bool] = lambda: True
        #: Work a reconcile started and did not await (``spawn``): it belongs to this run.
        self._background: set[asyncio.Task[Any]] = set()
        self._running = False

    @property
    def max_concurrent_reconciles(self) -> int:
        return self.options.max_concurrent_reconciles

    @property
    def reconcile_timeout(self) -> float | None:
        return self.options.reconcile_timeout

    @property
    def cache_sync_timeout(self) -> float:
        return self.options.cache_sync_timeout

    # ----- wiring

    def watch(
        self,
        gvk: GVK,
        informer: EventSource,
        to_requests: Callable[[Obj], Iterable[Request]],
        predicates: Sequence[Predicate] = (),
        store: Any = None,
    ) -> None:
        handler = _Handler(self, to_requests, predicates)
        informer.add_handler(handler)
        if store is None:
            store = getattr(informer, "store", None)
        self._sources.append(_Source(gvk, informer, handler, store))

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue(self) -> WorkQueue[Request] | None:
        return self._queue

    def enqueue(self, req: Request) -> None:
        if self._accepting and self._queue is not None:
            self._queue.add(req)

    # ----- running

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` beside the reconciles, as part of this controller's work.

        A reconcile that leaves a write running after it returns (so that a slow write does not
        hold a worker) must not outlive the controller: once leadership is lost another process
        owns the objects, and a write still queued here would land after it. Spawned tasks are
        drained with the in-flight reconciles on a graceful stop and cancelled with them when
        the controller is cancelled (leadership lost, shutdown budget spent).
        """
        if not self._running:
            coro.close()
            raise ControllerError(f"controller {self.name} is not running")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _cancel_background(self) -> None:
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _new_queue(self) -> WorkQueue[Request]:
        factory = self.options.rate_limiter
        limiter = factory() if factory is not None else None
        return WorkQueue(self.name, rate_limiter=limiter, metrics=self.metrics.queue(self.name))

    async def start(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop taking work and drain in-flight reconciles.

        If the caller cancels us (drain took longer than its grace period, or leadership was
        lost), in-flight reconciles are cancelled too rather than left running unowned. Raises
        ``ControllerError`` if a worker dies.
        """
        self._queue = queue = self._new_queue()
        self._cm.max_concurrent.set(self.max_concurrent_reconciles)
        workers: list[asyncio.Task[None]] = []
        self._running = True
        try:
            if not await self._wait_for_sources(stop):
                return
            # No await between accepting and the replay: every object is either in a store we
            # replay now or arrives as a later event.
            self._accepting = True
            self._replay(self._sources)
            stopping = asyncio.Event()
            workers = [
                asyncio.create_task(self._worker(queue, stopping), name=f"{self.name}-worker-{i}")
                for i in range(self.max_concurrent_reconciles)
            ]
            self.started.set()
            self._log.info("controller started", workers=len(workers))
            stop_wait = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({stop_wait, *workers}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
            dead = [w for w in workers if w.done()]
            if dead:
                exc = None if dead[0].cancelled() else dead[0].exception()
                raise ControllerError(f"controller {self.name}: a reconcile worker died") from exc
            self._log.info("controller stopping: draining in-flight reconciles")
            self._accepting = False
            stopping.set()
            await queue.shutdown_with_drain()
            await asyncio.gather(*workers, return_exceptions=True)
            # What the drained reconciles left running is in-flight work too.
            while self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)
            self._log.info("controller stopped")
        finally:
            self._accepting = False
            self._running = False
            self.started.clear()
            if not queue.shutting_down:
                queue.shutdown()
            for w in workers:
                w.cancel()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)
            await self._cancel_background()
            self._cm.active_workers.set(0)

    async def _wait_for_sources(self, stop: asyncio.Event) -> bool:
        """True once every source informer synced; False if ``stop`` came first."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            for src in self._sources:
                sync = asyncio.ensure_future(src.informer.wait_for_sync(self.cache_sync_timeout))
                await asyncio.wait({sync, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not sync.done():
                    sync.cancel()
                    return False
                if not sync.result():
                    raise ControllerError(
                        f"controller {self.name}: informer for {src.gvk} "
                        f"did not sync in {self.cache_sync_timeout}s"
                    )
            return True
        finally:
            stopped.cancel()

    def _replay(self, sources: Sequence[_Source]) -> None:
        """Enqueue every cached object once, as the informer's initial list would."""
        for src in sources:
            store = src.store
            if store is None:
                continue
            for obj in store.list():
                src.handler.on_add(obj)

    async def _worker(self, queue: WorkQueue[Request], stopping: asyncio.Event) -> None:
        while True:
            try:
                req = await queue.get()
            except ShutDown:
                return
            try:
                if stopping.is_set():
                    continue  # shutting down: queued work is left for the next leader
                if not self.may_act():
                    # Leadership may already be someone else's: do not start new work. The
                    # manager is about to stop us; the next leader replays everything.
                    continue
                await self._process(queue, req)
            finally:
                queue.done(req)

    async def _process(self, queue: WorkQueue[Request], req: Request) -> None:
        cm = self._cm
        with reconcile_context(self.name, req.key):
            cm.active_workers.inc()
            start = time.perf_counter()
            try:
                if self.reconcile_timeout is not None:
                    async with asyncio.timeout(self.reconcile_timeout) as tm:
                        try:
                            result = await self._reconcile(req)
                        except asyncio.CancelledError:
                            if tm.expired():
                                raise TimeoutError(f"reconcile exceeded {self.reconcile_timeout}s") from None
                            raise
                else:
                    result = await self._reconcile(req)
            except TerminalError as exc:
                queue.forget(req)
                cm.errors.inc()
                cm.terminal_errors.inc()
                cm.result("error")
                _log.error("terminal reconcile error, not retrying", error=str(exc), exc_info=True)
                return
            except Exception as exc:
                queue.add_rate_limited(req)
                cm.errors.inc()
                cm.result("error")
                _log.warning(
                    "reconcile failed, will retry",
                    error=f"{type(exc).__name__}: {exc}",
                    retries=queue.num_requeues(req),
                    # expected, self-explanatory failures get one line, the rest a traceback
                    exc_info=not isinstance(exc, _ONE_LINE_FAILURES),
                )
                return
            except BaseException as exc:
                task = asyncio.current_task()
                ours = task is not None and task.cancelling() > 0
                if ours or isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise  # our own cancellation (shutdown, lost lease) or the process ending
                if not self.options.recover_panic:
                    raise
                # A CancelledError nobody asked for (a cancelled inner task re-raised, a
                # timeout library misused) or another BaseException: a panic, not a shutdown.
                queue.add_rate_limited(req)
                cm.errors.inc()
                cm.panics.inc()
                cm.result("error")
                _log.error(
                    "reconcile panicked, will retry", error=f"{type(exc).__name__}: {exc}", exc_info=True
                )
                return
            finally:
                cm.reconcile_time.observe(time.perf_counter() - start)
                cm.active_workers.dec()
            if result is not None and result.requeue_after:
                queue.forget(req)
                queue.add_after(req, result.requeue_after)
                cm.result("requeue_after")
            elif result is not None and result.requeue:
                queue.add_rate_limited(req)
                cm.result("requeue")
            else:
                queue.forget(req)
                cm.result("success")
