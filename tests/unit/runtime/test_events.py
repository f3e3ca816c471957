"""EventRecorder never fails the reconcile that records an event (issue 8, bug 9)."""

from __future__ import annotations

import asyncio
import socket

from kubernetes_asyncio.client import Configuration

from kaito.runtime import WARNING, Client, EventRecorder

OBJ = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns", "uid": "u"}}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_client() -> Client:
    cfg = Configuration()
    cfg.host = f"http://127.0.0.1:{closed_port()}"
    return Client(cfg, timeout=5)


async def test_connection_error_is_logged_not_raised() -> None:
    client = unreachable_client()
    try:
        rec = EventRecorder(client, "test")
        assert await rec.event(OBJ, WARNING, "Failed", "the apiserver is unreachable") is None
    finally:
        await client.close()


async def test_emitted_event_failures_are_read() -> None:
    """A failed background write is consumed by the recorder: no 'exception was never retrieved'."""
    client = unreachable_client()
    loop = asyncio.get_running_loop()
    unread: list[object] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unread.append(ctx))
    try:
        rec = EventRecorder(client, "test")
        rec.emit(OBJ, WARNING, "Failed", "fire and forget")
        await asyncio.wait(list(rec._tasks))  # wait without reading results, as nobody would
        import gc

        gc.collect()  # unread task exceptions are reported when the task is collected
        await asyncio.sleep(0)
        assert unread == []
    finally:
        loop.set_exception_handler(previous)
        await client.close()
