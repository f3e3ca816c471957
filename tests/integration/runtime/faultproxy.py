"""A loopback HTTP proxy in front of the real apiserver, for faults the apiserver itself will not
produce on demand: a watch stream cut or corrupted mid-way, a connection gone silent, a slow
network, a 5xx with Retry-After, an answer lost after the write was made. Every answer it
forwards is the real apiserver's; a ``fault`` hook may delay, cut, rewrite, replace or drop one.
It is not a model of Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from kaito.runtime import Client

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    #: The apiserver's status code, set once its answer has come (before ``fault`` runs).
    status: int = 0

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")

    @property
    def is_list(self) -> bool:
        return self.method == "GET" and not self.is_watch


class Cut(Exception):
    """Drops the client's TCP connection. Raised by a fault's chunk iterator: there, without
    finishing the (chunked) body, as a terminating apiserver or an L7 proxy does. Raised by the
    ``fault`` hook itself: before one byte of the answer is sent, after the apiserver did the
    request, so a write took effect but its client never learns that (a lost response)."""


# A fault gets the request and the upstream body as an async iterator of chunks; it returns the
# chunks to send on (possibly rewritten), or a complete web.Response to answer with instead, or
# raises Cut to drop the connection.
Chunks = AsyncIterator[bytes]
Fault = Callable[[Seen, Chunks], Awaitable[Chunks | web.StreamResponse | None]]


@dataclass
class FaultProxy:
    upstream: Any  # kubernetes_asyncio Configuration of the real apiserver
    fault: Fault | None = None
    #: May return replacement query parameters for a request (e.g. a watch from another version).
    rewrite: Callable[[Seen], dict[str, str] | None] | None = None
    #: Runs before a request is forwarded (e.g. to have etcd compacted first).
    before: Callable[[Seen], Awaitable[None]] | None = None
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _client: Client | None = None
    port: int = 0

    async def __aenter__(self) -> FaultProxy:
        self._client = Client(self.upstream)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # open watch streams are cut at exit rather than waited for (aiohttp waits 60 s by default)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def configuration(self) -> Any:
        """A client configuration that talks to the proxy (plain HTTP on loopback)."""
        cfg = copy.copy(self.upstream)
        cfg.host = f"http://127.0.0.1:{self.port}"
        cfg.cert_file = cfg.key_file = cfg.ssl_ca_cert = None
        cfg.api_key = {}
        return cfg

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        seen = Seen(request.method, request.path, dict(request.query))
        self.seen.append(seen)
        if self.before is not None:
            await self.before(seen)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP | {"authorization"}}
        query = self.rewrite(seen) if self.rewrite is not None else None
        upstream = await self._client.session.request(
            request.method,
            self._client.base_url + request.path,
            params=query if query is not None else request.query,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        try:

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in upstream.content.iter_any():
                    yield chunk

            stream: Any = chunks()
            seen.status = upstream.status
            if self.fault is not None:
                try:
                    result = await self.fault(seen, stream)
                except Cut:
                    if request.transport is not None:
                        request.transport.abort()
                    # Nothing reaches the client: its connection is gone before any byte of this.
                    return web.Response(status=502)
                if isinstance(result, web.StreamResponse):
                    return result
                if result is not None:
                    stream = result
            resp = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    resp.headers[k] = v
            try:
                await resp.prepare(request)  # the client may be gone already (a killed process)
                async for chunk in stream:
                    await resp.write(chunk)
                await resp.write_eof()
            except Cut:
                # aiohttp holds the headers back until the first body bytes: send them, then
                # close the socket with the chunked body unfinished.
                await resp.write(b"")
                if request.transport is not None:
                    request.transport.close()
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            return resp
        finally:
            upstream.release()


@contextlib.asynccontextmanager
async def proxied(
    upstream: Any, *, client_timeout: float = 30.0, **hooks: Any
) -> AsyncIterator[tuple[FaultProxy, Client]]:
    """A running proxy and a runtime Client that talks through it."""
    async with (
        FaultProxy(upstream, **hooks) as proxy,
        Client(proxy.configuration(), timeout=client_timeout) as client,
    ):
        yield proxy, client


def user_flow_schema(name: str, user: str, *, non_resource: bool = False) -> dict[str, Any]:
    """A FlowSchema sending every request of ``user`` to the priority level ``name``: how the
    tests put one client under an APF level of their own (429s) without touching the others."""
    rule: dict[str, Any] = {
        "subjects": [{"kind": "User", "user": {"name": user}}],
        "resourceRules": [
            {
                "verbs": ["*"],
                "apiGroups": ["*"],
                "resources": ["*"],
                "namespaces": ["*"],
                "clusterScope": True,
            }
        ],
    }
    if non_resource:
        rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            "matchingPrecedence": 100,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [rule],
        },
    }
