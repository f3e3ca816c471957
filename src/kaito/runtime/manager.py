"""The Manager: one client, one shared informer cache, many runnables, one lifecycle.

Start-up order is what makes controllers correct: probes and metrics come up first (so a slow
start is observable), then informers start and must sync (bounded by ``cache_sync_timeout``)
before any worker runs — a reconciler that reads an empty cache would delete everything it
owns. Leader-only runnables (controllers) start only while this process holds the Lease, and
stop when it loses it; the manager then campaigns again.

Shutdown (SIGTERM/SIGINT or ``stop()``) runs in the reverse order: controllers stop taking work
and drain in-flight reconciles, *then* the elector stops renewing and releases the Lease so the
next leader starts immediately without two leaders ever overlapping, then the other runnables,
the informers, the client and the HTTP servers go. All of it shares one budget,
``graceful_shutdown_timeout``, so it fits the pod's terminationGracePeriodSeconds; whatever is
still running when the budget is spent is cancelled.

Losing the lease without being asked to (renewals failed, another holder appeared) is
different: a new leader may already be acting, so in-flight reconciles are cancelled at once
instead of drained, and the manager campaigns again. That holds during a shutdown too: a lease
lost while the controllers drain ends the drain at once, and what is left of the shutdown gets
no grace period (controller-runtime sets its graceful timeout to zero on such a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from kaito.runtime.builder import ControllerBuilder
from kaito.runtime.cache import InformerCache
from kaito.runtime.client import Client
from kaito.runtime.health import Check, Checks, HTTPServer, parse_bind_address, ping
from kaito.runtime.leaderelection import LeaderElector
from kaito.runtime.logging import get_logger
from kaito.runtime.metrics import Metrics
from kaito.runtime.options import LeaderElectionOptions, ManagerOptions
from kaito.runtime.resources import GVK, RESTMapper

_log = get_logger("kaito.runtime.manager")


class Runnable(Protocol):
    """Anything the manager runs: returns once ``stop`` is set and its work is wound down."""

    async def start(self, stop: asyncio.Event) -> None: ...


RunnableFn = Callable[[asyncio.Event], Awaitable[None]]


def default_identity() -> str:
    """Hostname (the pod name in a cluster) plus a random suffix, so restarts are distinct holders."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass
class _Entry:
    runnable: Runnable | RunnableFn
    needs_leader: bool
    name: str


class ManagerError(RuntimeError):
    pass


class _Unset(Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


class Manager:
    """Owns the client, the shared informer cache, metrics, probes, leadership and the lifecycle.

    Configure it with a ``ManagerOptions`` or with the same fields as keyword arguments (the
    keywords win): ``Manager(config, leader_election=..., metrics_bind_address=":8080")``.
    """

    def __init__(
        self,
        config: Any,
        options: ManagerOptions | None = None,
        *,
        leader_election: LeaderElectionOptions | _Unset | None = _UNSET,
        metrics_bind_address: str | _Unset | None = _UNSET,
        health_probe_bind_address: str | _Unset | None = _UNSET,
        cache_sync_timeout: float | _Unset = _UNSET,
        graceful_shutdown_timeout: float | _Unset = _UNSET,
        namespace: str | _Unset | None = _UNSET,
        label_selectors: Mapping[GVK, str] | _Unset = _UNSET,
        handle_signals: bool | _Unset = _UNSET,
        user_agent: str | _Unset = _UNSET,
        freeze_gc_after_sync: bool | _Unset = _UNSET,
        sync_period: float | _Unset | None = _UNSET,
        trace_configs: Sequence[Any] = (),
        metrics: Metrics | None = None,
        client: Client | None = None,
    ) -> None:
        given = {
            "leader_election": leader_election,
            "metrics_bind_address": metrics_bind_address,
            "health_probe_bind_address": health_probe_bind_address,
            "cache_sync_timeout": cache_sync_timeout,
            "graceful_shutdown_timeout": graceful_shutdown_timeout,
            "namespace": namespace,
            "label_selectors": label_selectors,
            "handle_signals": handle_signals,
            "user_agent": user_agent,
            "freeze_gc_after_sync": freeze_gc_after_sync,
            "sync_period": sync_period,
        }
        opts = (options or ManagerOptions()).replace(**{k: v for k, v in given.items() if v is not _UNSET})
        self.options = opts
        self.config = config
        self.freeze_gc_after_sync = opts.freeze_gc_after_sync
        self.leader_election = opts.leader_election
        self.cache_sync_timeout = opts.cache_sync_timeout
        self.graceful_shutdown_timeout = opts.graceful_shutdown_timeout
        self.namespace = opts.namespace
        self.handle_signals = opts.handle_signals
        self.metrics = metrics if metrics is not None else Metrics()
        self.client = (
            client
            if client is not None
            else Client(
                config,
                user_agent=opts.user_agent,
                trace_configs=(*trace_configs, self.metrics.rest_client_trace_config()),
            )
        )
        informer_opts = opts.informer
        if opts.sync_period is not None:
            informer_opts = informer_opts.replace(resync=opts.sync_period)
        # The Manager's scope is the cache's: every informer, whoever asks for it, watches
        # ``namespace`` only (cluster-scoped kinds excepted), as controller-runtime's cache does.
        self.cache = InformerCache(
            self.client, namespace=opts.namespace, label_selectors=opts.label_selectors, options=informer_opts
        )
        self.client.cache = self.cache
        self.healthz = Checks("healthz")
        self.readyz = Checks("readyz")
        self.healthz.add("ping", ping)
        self.readyz.add("ping", ping)
        self.readyz.add("informers", self._informers_synced)
        self._metrics_addr = parse_bind_address(opts.metrics_bind_address)
        self._health_addr = parse_bind_address(opts.health_probe_bind_address)
        self._servers: list[HTTPServer] = []
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._entries: list[_Entry] = []
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._stop = asyncio.Event()
        self._synced = False
        self._error: BaseException | None = None
        self.elected = asyncio.Event()
        self._leader_stop: asyncio.Event | None = None
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._other_tasks: list[asyncio.Task[None]] = []
        self._other_stop: asyncio.Event | None = None
        self._leader_lock = asyncio.Lock()
        self._elector: LeaderElector | None = None
        #: Set once shutdown asks the elector to step down: a loss after that is requested.
        self._releasing = False
        self._started = False
        self._deadline: float | None = None  # monotonic end of the shutdown budget
        le = opts.leader_election
        self.identity = (le.identity or default_identity()) if le is not None else None

    @property
    def rest_mapper(self) -> RESTMapper:
        return self.client.mapper

    # ----- registration

    def add(
        self,
        runnable: Runnable | RunnableFn,
        *,
        needs_leader_election: bool | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Register a runnable; by default it needs leadership (as in controller-runtime)."""
        if self._started:
            raise ManagerError("runnables must be added before Manager.start()")
        if needs_leader_election is None:
            needs_leader_election = bool(getattr(runnable, "needs_leader_election", True))
        name = str(getattr(runnable, "name", getattr(runnable, "__name__", type(runnable).__name__)))
        if needs_leader_election and hasattr(runnable, "may_act"):
            runnable.may_act = self._may_act
        self._entries.append(_Entry(runnable, needs_leader_election, name))
        if before_start is not None:
            self._hooks.append(before_start)

    def builder(self) -> ControllerBuilder:
        return ControllerBuilder(self)

    def add_healthz_check(self, name: str, check: Check) -> None:
        self.healthz.add(name, check)

    def add_readyz_check(self, name: str, check: Check) -> None:
        self.readyz.add(name, check)

    def _may_act(self) -> bool:
        """False as soon as leadership may have passed on (the elector's renew deadline counts
        from its last renewal), even before the renew loop has noticed."""
        if not self.elected.is_set():
            return False
        return self.leader_election is None or (self._elector is not None and self._elector.is_leader)

    def _informers_synced(self) -> str | None:
        return None if self._synced else "informers not synced yet"

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set()

    # ----- lifecycle

    def stop(self) -> None:
        """Begin graceful shutdown; safe to call from a signal handler or any task."""
        self._stop.set()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.stop()

    def _spawn(self, entry: _Entry, stop: asyncio.Event) -> asyncio.Task[None]:
        runnable = entry.runnable
        coro = runnable.start(stop) if hasattr(runnable, "start") else runnable(stop)

        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.error("runnable failed, stopping the manager", runnable=entry.name, exc_info=True)
                self._fail(exc)

        return asyncio.create_task(run(), name=f"runnable-{entry.name}")

    async def _start_servers(self) -> None:
        # One server when both name the same fixed port; port 0 means "any free port" for each.
        if self._health_addr is not None and self._health_addr == self._metrics_addr and self._health_addr[1]:
            srv = HTTPServer(*self._health_addr)
            srv.add_probes(self.healthz, self.readyz)
            srv.add_metrics(self.metrics)
            await srv.start()
            self._servers.append(srv)
            self.health_port = self.metrics_port = srv.bound_port
            return
        if self._health_addr is not None:
            srv = HTTPServer(*self._health_addr)
            srv.add_probes(self.healthz, self.readyz)
            await srv.start()
            self._servers.append(srv)
            self.health_port = srv.bound_port
        if self._metrics_addr is not None:
            srv = HTTPServer(*self._metrics_addr)
            srv.add_metrics(self.metrics)
            await srv.start()
            self._servers.append(srv)
            self.metrics_port = srv.bound_port

    async def start(self) -> None:
        """Run everything until ``stop()`` or SIGTERM/SIGINT; raises if a runnable failed."""
        if self._started:
            raise ManagerError("a Manager can be started only once")
        self._started = True
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.stop)
                    signals.append(sig)
        lead_task: asyncio.Task[None] | None = None
        try:
            await self._start_servers()
            for hook in self._hooks:
                await hook()
            await self.cache.start()
            stop_wait = asyncio.ensure_future(self._stop.wait())
            sync = asyncio.ensure_future(self.cache.wait_for_sync(self.cache_sync_timeout))
            await asyncio.wait({stop_wait, sync}, return_when=asyncio.FIRST_COMPLETED)
            if not sync.done():
                sync.cancel()
                return  # stopped while syncing
            stop_wait.cancel()
            if not sync.result():
                raise ManagerError(f"informer caches did not sync within {self.cache_sync_timeout}s")
            self._synced = True
            _log.info("caches synced")
            if self.freeze_gc_after_sync:
                # The start-up heap and the initial cache are long-lived; moving them out of the
                # collector's view keeps later collections short (cached objects are acyclic
                # JSON dicts, freed by refcount when replaced). bench/runtime.py: p99 22/18 ms ->
                # 17.6/17.0 ms event-to-reconcile with 2,000 cached objects. Collect first, or
                # garbage that is merely waiting for the next collection would be kept forever.
                gc.collect()
                gc.freeze()
            self._other_stop = other_stop = asyncio.Event()
            self._other_tasks = [self._spawn(e, other_stop) for e in self._entries if not e.needs_leader]
            if self.leader_election is None:
                await self._start_leader_runnables()
            else:
                lead_task = asyncio.create_task(
                    self._campaign_loop(self.leader_election), name="leader-election"
                )
            await self._stop.wait()
            _log.info("shutting down")
        finally:
            await self._shutdown(lead_task)
            for sig in signals:
                loop.remove_signal_handler(sig)
        if self._error is not None:
            raise self._error

    def _remaining(self) -> float:
        if self._deadline is None:
            return self.graceful_shutdown_timeout
        return max(0.0, self._deadline - time.monotonic())

    async def _shutdown(self, lead_task: asyncio.Task[None] | None) -> None:
        self._stop.set()
        deadline = time.monotonic() + self.graceful_shutdown_timeout
        # (a lease lost since stop() may already have cut the budget to nothing)
        self._deadline = deadline if self._deadline is None else min(deadline, self._deadline)
        # 1. controllers stop taking work and drain, while we still hold the lease
        await self._stop_leader_runnables()
        # 2. stop renewing, then release the lease (the elector does both on stop())
        if lead_task is not None:
            self._releasing = True
            if self._elector is not None:
                self._elector.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lead_task), max(self._remaining(), 0.5))
            if not lead_task.done():
                lead_task.cancel()
            await asyncio.gather(lead_task, return_exceptions=True)
        # 3. everything else
        if self._other_stop is not None:
            self._other_stop.set()
            await self._wait_or_cancel(self._other_tasks)
        with contextlib.suppress(Exception):
            await self.cache.stop()
        with contextlib.suppress(Exception):
            await self.client.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.stop()
        self._servers.clear()

    async def _wait_or_cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self._remaining())
        for t in pending:
            t.cancel()
        if pending:
            _log.warning("graceful shutdown timed out; cancelled runnables", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _start_leader_runnables(self) -> None:
        async with self._leader_lock:
            if self._leader_stop is not None or self._stop.is_set():
                return
            if self.leader_election is not None and (self._elector is None or not self._elector.is_leader):
                return  # lost again before we got here
            self._leader_stop = asyncio.Event()
            self.elected.set()
            self._leader_tasks = [self._spawn(e, self._leader_stop) for e in self._entries if e.needs_leader]

    def _abandon_leader_runnables(self) -> None:
        """Leadership lost without being asked: cancel in-flight work now, do not drain it."""
        self.elected.clear()
        for t in self._leader_tasks:
            t.cancel()

    async def _stop_leader_runnables(self) -> None:
        async with self._leader_lock:
            if self._leader_stop is None:
                return
            self.elected.clear()
            self._leader_stop.set()
            await self._wait_or_cancel(self._leader_tasks)
            self._leader_tasks = []
            self._leader_stop = None

    async def _campaign_loop(self, opts: LeaderElectionOptions) -> None:
        """Campaign, lead, and campaign again after losing the lease, until shutdown."""
        assert self.identity is not None
        leading_now: list[asyncio.Task[None]] = []

        def on_started() -> None:
            self.metrics.set_leader(opts.name, True)
            _log.info("became leader", lease=opts.name, identity=self.identity)
            leading_now.append(asyncio.ensure_future(self._start_leader_runnables()))

        def on_stopped() -> None:
            self.metrics.set_leader(opts.name, False)
            if not self._releasing:
                # Lost, not handed back: someone else may act on our objects now. Whatever
                # still runs for the old leadership is cancelled, drained or not.
                if self._stop.is_set():
                    _log.warning(
                        "lost leadership while shutting down; abandoning the drain", lease=opts.name
                    )
                    self._deadline = time.monotonic()  # no grace left (as controller-runtime)
                else:
                    _log.warning("lost leadership; cancelling in-flight reconciles", lease=opts.name)
                self._abandon_leader_runnables()
            self.elected.clear()

        self.metrics.set_leader(opts.name, False)
        while not self._stop.is_set():
            elector = LeaderElector(
                self.client,
                name=opts.name,
                namespace=opts.namespace,
                identity=self.identity,
                lease_duration=opts.lease_duration,
                renew_deadline=opts.renew_deadline,
                retry_period=opts.retry_period,
                on_started_leading=on_started,
                on_stopped_leading=on_stopped,
                release_on_cancel=opts.release_on_cancel,
            )
            self._elector = elector
            if self._stop.is_set():
                return
            try:
                await elector.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.error("leader election failed; retrying", exc_info=True)
            await asyncio.gather(*leading_now, return_exceptions=True)
            leading_now.clear()
            await self._stop_leader_runnables()
            if self._stop.is_set():
                return
            await asyncio.sleep(opts.retry_period)


__all__ = [
    "LeaderElectionOptions", "Manager", "ManagerError", "ManagerOptions", "Runnable", "default_identity",
]
