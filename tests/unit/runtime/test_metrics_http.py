"""Manager HTTP endpoints and shutdown order with no informers (no apiserver needed: a manager
without controllers never contacts it)."""

import asyncio
import os
import signal
import socket

import aiohttp
from kubernetes_asyncio.client import Configuration

from kaito.runtime import (
    Manager,
)
from kaito.runtime.health import parse_bind_address


def unreachable() -> Configuration:
    cfg = Configuration()
    cfg.host = "https://127.0.0.1:1"
    return cfg


async def get(port, path):
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text(), r.headers.get("Content-Type", "")


async def test_probes_metrics_and_sigterm_drain():
    mgr = Manager(unreachable(), metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0")
    order: list[str] = []

    async def leader_only(stop):
        order.append("leader started")
        await stop.wait()
        await asyncio.sleep(0.1)
        order.append("leader drained")

    async def everywhere(stop):
        await stop.wait()
        order.append("other stopped")

    mgr.add(leader_only)
    mgr.add(everywhere, needs_leader_election=False)
    mgr.add_healthz_check("boom", lambda: (_ for _ in ()).throw(RuntimeError("exploded")))
    task = asyncio.create_task(mgr.start())
    await asyncio.wait_for(mgr.elected.wait(), 5)
    assert await get(mgr.health_port, "/readyz") == (200, "ok", "text/plain; charset=utf-8")
    status, text, _ = await get(mgr.health_port, "/healthz")
    assert status == 500 and "[-]boom failed: RuntimeError: exploded" in text and "[+]ping ok" in text
    assert (await get(mgr.health_port, "/healthz/ping"))[0] == 200
    assert (await get(mgr.health_port, "/healthz/boom"))[0] == 500
    status, text, ctype = await get(mgr.metrics_port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain") and "controller_runtime_reconcile_total" in text
    assert (await get(mgr.metrics_port, "/healthz"))[0] == 404  # separate servers
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert order == ["leader started", "leader drained", "other stopped"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_one_server_when_addresses_match_and_two_managers_coexist():
    addr = f"127.0.0.1:{free_port()}"
    a = Manager(unreachable(), metrics_bind_address=addr, health_probe_bind_address=addr)
    b = Manager(unreachable(), metrics_bind_address="127.0.0.1:0", health_probe_bind_address="127.0.0.1:0")
    tasks = [asyncio.create_task(m.start()) for m in (a, b)]
    try:
        await asyncio.wait_for(asyncio.gather(a.elected.wait(), b.elected.wait()), 5)
        assert a.metrics_port == a.health_port
        assert (await get(a.metrics_port, "/metrics"))[0] == 200
        assert (await get(b.health_port, "/readyz/informers"))[0] == 200
        assert a.metrics.registry is not b.metrics.registry
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)


async def test_failing_runnable_stops_the_manager():
    mgr = Manager(unreachable(), handle_signals=False)

    async def broken(stop):
        raise ValueError("bad config")

    mgr.add(broken)
    try:
        await asyncio.wait_for(mgr.start(), 5)
    except ValueError as exc:
        assert "bad config" in str(exc)
    else:
        raise AssertionError("manager swallowed a runnable failure")


def test_parse_bind_address():
    assert parse_bind_address("0") is None and parse_bind_address(None) is None
    assert parse_bind_address(":8080") == ("0.0.0.0", 8080)
    assert parse_bind_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_bind_address("[::1]:9") == ("::1", 9)
