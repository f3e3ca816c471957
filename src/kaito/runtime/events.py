"""core/v1 Events with client-go's repeat aggregation.

A reconcile loop that keeps failing would otherwise write one Event per attempt and flood etcd
(and ``kubectl describe``). Like client-go's EventCorrelator, an identical event (same object,
type, reason, message, source) within the cache's lifetime increments ``count`` and moves
``lastTimestamp`` on the existing Event instead of creating a new one.

Recording must never fail a reconcile: API errors, connection failures and timeouts are logged
and swallowed, and the background writes of ``emit`` never leave an unread exception behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from kaito.runtime.errors import ApiError, NotFoundError
from kaito.runtime.logging import get_logger
from kaito.runtime.resources import GVK

Obj = dict[str, Any]

NORMAL = "Normal"
WARNING = "Warning"
EVENT_GVK = GVK("", "v1", "Event")

_log = get_logger("kaito.runtime.events")
_MAX_MESSAGE = 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Writes Events for one component; aggregates identical repeats (LRU of ``cache_size`` keys)."""

    def __init__(
        self,
        client: Any,
        component: str,
        *,
        host: str | None = None,
        cache_size: int = 4096,
        now: Callable[[], str] = _now,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host or socket.gethostname()
        self._cache: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()
        self._cache_size = cache_size
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._now = now
        self._tasks: set[asyncio.Future[Obj | None]] = set()

    def _key(self, obj: Obj, type_: str, reason: str, message: str) -> tuple[str, ...]:
        meta = obj.get("metadata") or {}
        return (
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
            type_,
            reason,
            message,
            self.component,
        )

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> Obj | None:
        """Record an event about ``obj``; returns the written Event, or None if writing failed."""
        if type_ not in (NORMAL, WARNING):
            raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
        message = message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
        key = self._key(obj, type_, reason, message)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._write(key, obj, type_, reason, message)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            _log.warning("could not record event", reason=reason, error=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(key, None)

    def emit(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Fire-and-forget variant for hot paths; the write happens in a background task."""
        task = asyncio.ensure_future(self.event(obj, type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Obj | None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("could not record event", error=repr(task.exception()))

    async def flush(self) -> None:
        """Wait for pending ``emit`` writes (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _write(self, key: tuple[str, ...], obj: Obj, type_: str, reason: str, message: str) -> Obj:
        now = self._now()
        cached = self._cache.get(key)
        if cached is not None:
            ns, name, count = cached
            with contextlib.suppress(NotFoundError):
                ev: Obj = await self.client.patch(
                    EVENT_GVK,
                    name,
                    {"count": count + 1, "lastTimestamp": now},
                    namespace=ns,
                    patch_type="merge",
                )
                self._remember(key, ns, name, count + 1)
                return ev
            # the Event expired (1 h TTL) or was deleted: start a new series
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'unknown')}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": {
                k: v
                for k, v in (
                    ("apiVersion", obj.get("apiVersion")),
                    ("kind", obj.get("kind")),
                    ("name", meta.get("name")),
                    ("namespace", meta.get("namespace")),
                    ("uid", meta.get("uid")),
                    ("resourceVersion", meta.get("resourceVersion")),
                )
                if v
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created: Obj = await self.client.create(body)
        self._remember(key, ns, created["metadata"]["name"], 1)
        return created

    def _remember(self, key: tuple[str, ...], ns: str, name: str, count: int) -> None:
        self._cache[key] = (ns, name, count)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
