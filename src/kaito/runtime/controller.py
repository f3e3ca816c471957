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
  * success → backoff reset (``forget``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kaito.runtime.errors import ConflictError
from kaito.runtime.logging import get_logger, reconcile_context
from kaito.runtime.metrics import ControllerMetrics, Metrics
from kaito.runtime.predicates import Predicate
from kaito.runtime.resources import GVK
from kaito.runtime.workqueue import RateLimiter, ShutDown, WorkQueue

if TYPE_CHECKING:
    from kaito.runtime.manager import Manager

Obj = dict[str, Any]

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


class _Informer(Protocol):
    """The part of Part A's Informer a controller relies on."""

    def add_handler(self, handler: Any) -> Any: ...

    async def wait_for_sync(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109

    @property
    def has_synced(self) -> bool: ...


def _unwrap(obj: Any) -> Obj:
    """Tombstones (a delete seen only on relist) carry the last known state in ``.obj``."""
    inner = getattr(obj, "obj", None)
    return inner if isinstance(inner, dict) else obj


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

    def on_add(self, obj: Any) -> None:
        if not self._c.accepting:
            return  # stopped (not leader): the next start replays the store
        obj = _unwrap(obj)
        if all(p.create(obj) for p in self._preds):
            self._enqueue(obj)

    def on_update(self, old: Any, new: Any) -> None:
        if not self._c.accepting:
            return
        old, new = _unwrap(old), _unwrap(new)
        if all(p.update(old, new) for p in self._preds):
            self._enqueue(old)
            self._enqueue(new)  # an owner change must reach both the old and the new owner

    def on_delete(self, obj: Any) -> None:
        if not self._c.accepting:
            return
        obj = _unwrap(obj)
        if all(p.delete(obj) for p in self._preds):
            self._enqueue(obj)

    def on_generic(self, obj: Any) -> None:
        obj = _unwrap(obj)
        if all(p.generic(obj) for p in self._preds):
            self._enqueue(obj)


@dataclass
class _Source:
    gvk: GVK
    informer: _Informer
    handler: _Handler
    store: Any = field(default=None)


class Controller:
    """Runs reconcile workers for one primary kind; a manager runnable that needs leadership.

    Handlers are attached to the shared informers once; while the controller is stopped (not
    leader, or shutting down) they drop events, and every start replays the informers' stores so
    a new leader reconciles everything once, exactly like an informer's initial list.
    """

    needs_leader_election = True

    def __init__(
        self,
        name: str,
        reconciler: Reconciler | ReconcileFn,
        *,
        metrics: Metrics | None = None,
        max_concurrent_reconciles: int = 1,
        reconcile_timeout: float | None = None,
        rate_limiter: Callable[[], RateLimiter] | None = None,
        cache_sync_timeout: float = 120.0,
        recover_panic: bool = True,
    ) -> None:
        if max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be at least 1")
        self.name = name
        self._reconcile: ReconcileFn = (
            reconciler.reconcile if isinstance(reconciler, Reconciler) else reconciler
        )
        self.metrics = metrics if metrics is not None else Metrics()
        self._cm: ControllerMetrics = self.metrics.controller(name)
        self.max_concurrent_reconciles = max_concurrent_reconciles
        self.reconcile_timeout = reconcile_timeout
        self._rate_limiter_factory = rate_limiter
        self.cache_sync_timeout = cache_sync_timeout
        self._sources: list[_Source] = []
        self._queue: WorkQueue[Request] | None = None
        self._accepting = False
        self._log = _log.bind(controller=name)
        self.started = asyncio.Event()  # set once workers run (tests, readiness)

    # ----- wiring

    def watch(
        self,
        gvk: GVK,
        informer: _Informer,
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

    def _new_queue(self) -> WorkQueue[Request]:
        limiter = self._rate_limiter_factory() if self._rate_limiter_factory is not None else None
        return WorkQueue(self.name, rate_limiter=limiter, metrics=self.metrics.queue(self.name))

    async def start(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop taking work and drain in-flight reconciles.

        If the caller cancels us (drain took longer than its grace period), in-flight
        reconciles are cancelled too rather than left running unowned.
        """
        self._queue = queue = self._new_queue()
        self._accepting = True
        self._cm.max_concurrent.set(self.max_concurrent_reconciles)
        workers: list[asyncio.Task[None]] = []
        # Informers not yet synced will deliver their whole initial list to our (now accepting)
        # handlers; only those already synced need their stores replayed.
        replay = [src for src in self._sources if src.informer.has_synced]
        try:
            if not await self._wait_for_sources(stop):
                return
            self._replay(replay)
            stopping = asyncio.Event()
            workers = [
                asyncio.create_task(self._worker(queue, stopping), name=f"{self.name}-worker-{i}")
                for i in range(self.max_concurrent_reconciles)
            ]
            self.started.set()
            self._log.info("controller started", workers=len(workers))
            await stop.wait()
            self._log.info("controller stopping: draining in-flight reconciles")
            self._accepting = False
            stopping.set()
            await queue.shutdown_with_drain()
            await asyncio.gather(*workers, return_exceptions=True)
            self._log.info("controller stopped")
        finally:
            self._accepting = False
            self.started.clear()
            if not queue.shutting_down:
                queue.shutdown()
            for w in workers:
                w.cancel()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)
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
                    raise TimeoutError(
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
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                queue.add_rate_limited(req)
                cm.errors.inc()
                cm.result("error")
                _log.warning(
                    "reconcile failed, will retry",
                    error=f"{type(exc).__name__}: {exc}",
                    retries=queue.num_requeues(req),
                    # expected, self-explanatory failures get one line, the rest a traceback
                    exc_info=not isinstance(exc, TimeoutError | ConflictError),
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


# --------------------------------------------------------------------------- builder


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class ControllerBuilder:
    """Fluent wiring of sources to a controller, registered on a manager by ``complete``."""

    def __init__(self, manager: Manager) -> None:
        self._mgr = manager
        self._name: str | None = None
        self._for: tuple[GVK, Sequence[Predicate]] | None = None
        self._owns: list[tuple[GVK, Sequence[Predicate]]] = []
        self._watches: list[tuple[GVK, Mapper, Sequence[Predicate]]] = []
        self._opts: dict[str, Any] = {}

    def named(self, name: str) -> ControllerBuilder:
        self._name = name
        return self

    def for_(self, gvk: GVK, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        if self._for is not None:
            raise ValueError("for_() may be called only once: a controller has one primary kind")
        self._for = (gvk, tuple(predicates))
        return self

    def owns(self, gvk: GVK, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        self._owns.append((gvk, tuple(predicates)))
        return self

    def watches(self, gvk: GVK, mapper: Mapper, predicates: Sequence[Predicate] = ()) -> ControllerBuilder:
        self._watches.append((gvk, mapper, tuple(predicates)))
        return self

    def with_options(
        self,
        *,
        max_concurrent_reconciles: int | None = None,
        reconcile_timeout: float | None = None,
        rate_limiter: Callable[[], RateLimiter] | None = None,
    ) -> ControllerBuilder:
        if max_concurrent_reconciles is not None:
            self._opts["max_concurrent_reconciles"] = max_concurrent_reconciles
        if reconcile_timeout is not None:
            self._opts["reconcile_timeout"] = reconcile_timeout
        if rate_limiter is not None:
            self._opts["rate_limiter"] = rate_limiter
        return self

    def complete(self, reconciler: Reconciler | ReconcileFn) -> Controller:
        if self._for is None:
            raise ValueError("for_() is required")
        for_gvk, for_preds = self._for
        name = self._name or for_gvk.kind.lower()
        mgr = self._mgr
        ctrl = Controller(
            name,
            reconciler,
            metrics=mgr.metrics,
            cache_sync_timeout=mgr.cache_sync_timeout,
            **self._opts,
        )
        ns = mgr.namespace

        def inform(gvk: GVK) -> _Informer:
            return mgr.cache.get_informer(gvk, namespace=ns)

        ctrl.watch(for_gvk, inform(for_gvk), lambda o: (Request.from_object(o),), for_preds)
        owner_group, owner_kind = for_gvk.group, for_gvk.kind
        # Cluster-scoped owners of namespaced children get a namespace-less request; resolved
        # lazily from discovery on first use because the builder runs before the event loop.
        owner_namespaced: list[bool] = []

        def to_owner(obj: Obj) -> Iterable[Request]:
            meta = obj.get("metadata") or {}
            for ref in meta.get("ownerReferences") or ():
                if (
                    ref.get("controller")
                    and ref.get("kind") == owner_kind
                    and _group(str(ref.get("apiVersion", ""))) == owner_group
                ):
                    namespaced = owner_namespaced[0] if owner_namespaced else True
                    return (Request(meta.get("namespace") if namespaced else None, ref["name"]),)
            return ()

        for gvk, preds in self._owns:
            ctrl.watch(gvk, inform(gvk), to_owner, preds)
        for gvk, mapper, preds in self._watches:
            ctrl.watch(gvk, inform(gvk), mapper, preds)

        async def resolve_scope() -> None:
            try:
                info = await mgr.client.mapper.resource_for(for_gvk)
            except Exception as exc:  # kind not served (yet): its informer will not sync either
                _log.warning(
                    "cannot resolve the scope of the primary kind", kind=str(for_gvk), error=str(exc)
                )
                return
            owner_namespaced[:] = [bool(info.namespaced)]

        mgr.add(ctrl, before_start=resolve_scope)
        return ctrl
