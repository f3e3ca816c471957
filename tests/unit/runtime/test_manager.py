"""Manager lifecycle without an apiserver (a manager whose runnables use no informers never
contacts it): options, the shutdown budget, stuck reconciles, the GC freeze."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration

from kaito.runtime import (
    GVK,
    Controller,
    LeaderElectionOptions,
    Manager,
    ManagerOptions,
    Request,
    field_docs,
)


def unreachable() -> Configuration:
    cfg = Configuration()
    cfg.host = "https://127.0.0.1:1"
    return cfg


async def eventually(cond: Any, limit_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Source:
    """An always-synced, empty event source: the controller runs, fed by ``enqueue``."""

    store = None
    has_synced = True

    def add_handler(self, h: Any) -> None:
        pass

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return True


def test_options_and_keywords_are_two_spellings_of_one_configuration() -> None:
    le = LeaderElectionOptions(name="x", namespace="ns")
    a = Manager(unreachable(), leader_election=le, graceful_shutdown_timeout=7, handle_signals=False)
    b = Manager(
        unreachable(), ManagerOptions(leader_election=le, graceful_shutdown_timeout=7, handle_signals=False)
    )
    assert a.options == b.options
    c = Manager(unreachable(), ManagerOptions(graceful_shutdown_timeout=7), graceful_shutdown_timeout=9)
    assert c.graceful_shutdown_timeout == 9  # the keyword wins
    with pytest.raises(TypeError, match=r"has no option colour; valid: .*cache_sync_timeout"):
        ManagerOptions().replace(colour="red")
    docs = field_docs(ManagerOptions)
    assert set(docs) == set(ManagerOptions.__dataclass_fields__)
    assert "terminationGracePeriodSeconds" in docs["graceful_shutdown_timeout"]


async def test_stuck_reconcile_is_cancelled_at_shutdown() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def reconcile(req: Request) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never returns
        except asyncio.CancelledError:
            cancelled.append(req.name)
            raise

    mgr = Manager(unreachable(), handle_signals=False, graceful_shutdown_timeout=1.0)
    ctrl = Controller("stuck", reconcile)
    ctrl.watch(GVK("", "v1", "ConfigMap"), Source(), lambda o: ())
    mgr.add(ctrl)
    task = asyncio.create_task(mgr.start())
    await asyncio.wait_for(ctrl.started.wait(), 10)
    ctrl.enqueue(Request("ns", "a"))
    await asyncio.wait_for(started.wait(), 10)
    mgr.stop()
    await asyncio.wait_for(task, 20)
    assert cancelled == ["a"]


async def test_one_shutdown_budget_for_everything() -> None:
    """Issue 8, bug 10: the budget used to apply to each phase (leader runnables, then the
    others), so shutdown could take a multiple of it and overrun terminationGracePeriodSeconds."""

    async def ignores_stop(stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    budget = 2.0
    mgr = Manager(unreachable(), handle_signals=False, graceful_shutdown_timeout=budget)
    mgr.add(ignores_stop, needs_leader_election=True)
    mgr.add(ignores_stop, needs_leader_election=False)
    task = asyncio.create_task(mgr.start())
    await asyncio.wait_for(mgr.elected.wait(), 10)
    t0 = time.monotonic()
    mgr.stop()
    await asyncio.wait_for(task, 20)
    took = time.monotonic() - t0
    # Two phases of a per-phase budget would take >= 2 * budget; one budget plus overhead fits.
    assert took < 1.75 * budget, took


async def test_gc_collects_before_freezing() -> None:
    """Issue 8, bug 10: gc.freeze() alone would move garbage still waiting for a collection
    into the permanent generation, where it is never freed."""

    class Node:
        ref: Any = None

    was_enabled = gc.isenabled()
    gc.disable()  # only the manager's own collect may free the cycle
    try:
        cycle = Node()
        cycle.ref = cycle
        alive = weakref.ref(cycle)
        del cycle
        mgr = Manager(unreachable(), handle_signals=False, freeze_gc_after_sync=True)
        task = asyncio.create_task(mgr.start())
        await asyncio.wait_for(mgr.elected.wait(), 10)
        mgr.stop()
        await asyncio.wait_for(task, 20)
        gc.collect()  # a frozen object would survive even this
        assert alive() is None
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
