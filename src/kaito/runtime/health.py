"""``/healthz`` and ``/readyz`` probes plus the ``/metrics`` endpoint, on aiohttp.

aiohttp rather than FastAPI/uvicorn: it is already a dependency (the API client is built on it),
runs as plain coroutines inside the manager's event loop, and installs no signal handlers or
lifespan machinery of its own, so the manager keeps sole control of SIGTERM and shutdown order.
Three fixed text endpoints need no request validation or OpenAPI schema.

Probe semantics follow controller-runtime's healthz package: ``/readyz`` runs every check,
``/readyz/<name>`` runs one, ``?verbose`` lists each result, ``?exclude=<name>`` skips one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kaito.runtime.metrics import CONTENT_TYPE_LATEST, Metrics

Check = Callable[[], Awaitable[Any] | Any]
"""A check passes by returning None/True and fails by raising or returning False or a string."""


def ping() -> None:
    """Passes whenever the event loop can answer at all: the liveness baseline."""


async def _run_check(check: Check, limit_s: float) -> str | None:
    try:
        res = check()
        if inspect.isawaitable(res):
            res = await asyncio.wait_for(res, limit_s)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if res is None or res is True:
        return None
    return res if isinstance(res, str) else "check failed"


class Checks:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid {self.kind} check name {name!r}")
        if name in self._checks:
            raise ValueError(f"{self.kind} check {name!r} already registered")
        self._checks[name] = check

    def names(self) -> list[str]:
        return list(self._checks)

    async def handle_all(self, request: web.Request) -> web.Response:
        excluded = set(request.query.getall("exclude", []))
        names = [n for n in self._checks if n not in excluded]
        results = await asyncio.gather(*(_run_check(self._checks[n], 10.0) for n in names))
        failed = any(r is not None for r in results)
        verbose = "verbose" in request.query or failed
        if not verbose:
            return web.Response(text="ok")
        lines = [
            f"[+]{n} ok" if r is None else f"[-]{n} failed: {r}" for n, r in zip(names, results, strict=True)
        ]
        lines.extend(f"[+]{n} excluded: ok" for n in sorted(excluded))
        lines.append(f"{self.kind} check failed" if failed else f"{self.kind} check passed")
        return web.Response(text="\n".join(lines) + "\n", status=500 if failed else 200)

    async def handle_one(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        check = self._checks.get(name)
        if check is None:
            return web.Response(text=f"{self.kind} check {name!r} not found\n", status=404)
        err = await _run_check(check, 10.0)
        if err is None:
            return web.Response(text="ok")
        return web.Response(text=f"[-]{name} failed: {err}\n", status=500)


class HTTPServer:
    """One aiohttp site; the manager runs one for probes and one for metrics (or one for both)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def add_probes(self, healthz: Checks, readyz: Checks) -> None:
        for checks, base in ((healthz, "/healthz"), (readyz, "/readyz")):
            self.app.router.add_get(base, checks.handle_all)
            self.app.router.add_get(base + "/", checks.handle_all)
            self.app.router.add_get(base + "/{name}", checks.handle_one)
        self.app.router.add_get("/livez", healthz.handle_all)

    def add_metrics(self, metrics: Metrics, path: str = "/metrics") -> None:
        async def handle(_req: web.Request) -> web.Response:
            body = metrics.exposition()
            resp = web.Response(body=body)
            resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return resp

        self.app.router.add_get(path, handle)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        addrs = self._runner.addresses
        self.bound_port = int(addrs[0][1]) if addrs else self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def parse_bind_address(addr: str | None) -> tuple[str, int] | None:
    """controller-runtime style: ``":8080"``, ``"127.0.0.1:0"``; ``"0"``, ``""`` or None disables."""
    if addr is None or addr in ("", "0"):
        return None
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {addr!r} must be host:port or :port")
    return (host.strip("[]") or "0.0.0.0", int(port))
