"""The HTTP front: /health, /metrics, /chat, API key, overload guard (429) and measurement.

It is a plain ASGI callable rather than FastAPI middleware: every token of a streamed response
passes through it, and a bare function call per message keeps the added latency in microseconds
(docs/performance.md, "Inference"). The server listens before the model is loaded so that
``/health`` can answer 503 during loading; every model route answers 503 until then too.

Which routes get admission, the body cap, the body timeout, the shared body budget and the edge
metrics is derived from the routes actually mounted (``body_routes``): every route that takes a
request body - generation, tokenization, pooling, scoring, vLLM's ``/invocations`` - in whatever
set this vLLM release mounts for this model. A fixed list of paths silently left every route it
did not name (``/tokenize``, ``/invocations``, ``/v1/embeddings``...) without a limit.

With an API key (``KAITO_API_KEY``, or vLLM's own ``--api-key``), every route but ``/health``
(the kubelet's probes) and ``/metrics`` (Prometheus) requires ``Authorization: Bearer <key>``,
checked here in front of both apps: vLLM's own check covers only its ``/v1`` routes, which left
``/chat`` and ``/invocations`` open.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, compile_path

from kaito.contract import ENV_STANDIN
from kaito.inference import metrics
from kaito.inference.backend import Backend, BackendError, ChatBody, Message, Receive, Scope, Send
from kaito.inference.overload import BodyBudget, OverloadGuard

log = structlog.get_logger("kaito.inference")

#: Open without an API key: the kubelet's probes and Prometheus carry none.
OPEN_PATHS = frozenset({"/health", "/metrics"})
OWN_PATHS = {"/health", "/metrics", "/chat"}
#: Methods whose requests carry a body the front reads, caps and admits.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Body routes that are status checks or relief valves rather than work for the engine: they keep
#: the body cap, timeout, budget and metrics but skip admission, so they still answer while the
#: engine is full (SageMaker's ``POST /ping`` health check; vLLM's dev-mode ``/abort_requests``,
#: ``/pause``, ``/sleep``...). Any route not named here is admitted: the safe default.
UNADMITTED_PATHS = frozenset(
    {"/ping", "/is_scaling_elastic_ep", "/abort_requests", "/pause", "/resume", "/sleep", "/wake_up"}
)
#: Larger bodies are refused with 413 while being read (a 1 MB prompt is far past any context).
MAX_BODY_BYTES = 32 * 1024 * 1024
#: All request bodies held in memory at once, across connections (503 beyond it).
DEFAULT_BODY_BUDGET_BYTES = 128 * 1024 * 1024


def endpoint_label(path: str) -> str:
    """The metrics label of a route: its path template without ``/v1`` (``chat_completions``)."""
    path = path.removeprefix("/v1/") if path.startswith("/v1/") else path.lstrip("/")
    return re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_") or "root"


@dataclass(frozen=True)
class RouteTable:
    """The body-taking routes of the mounted apps: exact paths in a dict (one lookup per
    request), parametrised ones (``/v1/responses/{id}/cancel``) as compiled patterns."""

    exact: dict[str, str]
    patterns: tuple[tuple[re.Pattern[str], str], ...] = ()

    def endpoint(self, path: str) -> str | None:
        label = self.exact.get(path)
        if label is not None:
            return label
        for pattern, name in self.patterns:
            if pattern.match(path):
                return name
        return None

    @property
    def paths(self) -> list[str]:
        return sorted([*self.exact, *(p.pattern for p, _ in self.patterns)])


def body_routes(apps: Iterable[object]) -> RouteTable:
    """Every route of ``apps`` (Starlette/FastAPI apps, sub-apps under a Mount included) that
    accepts a body method."""
    exact: dict[str, str] = {}
    patterns: list[tuple[re.Pattern[str], str]] = []

    def walk(routes: Sequence[BaseRoute], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(getattr(route.app, "routes", None) or (), prefix + route.path)
            elif isinstance(route, Route) and BODY_METHODS & set(route.methods or ()):
                full = prefix + route.path
                if route.param_convertors:
                    patterns.append((compile_path(full)[0], endpoint_label(full)))
                else:
                    exact.setdefault(full, endpoint_label(full))

    for app in apps:
        walk(getattr(app, "routes", None) or (), "")
    return RouteTable(exact, tuple(patterns))


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(payload).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class InferenceApp:
    """ASGI entry point; ``ready`` flips once ``backend.load()`` has finished."""

    def __init__(
        self,
        backend: Backend,
        guard: OverloadGuard,
        body_timeout_s: float = 30.0,
        *,
        api_keys: Sequence[str] = (),
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.backend = backend
        self.guard = guard
        #: A request's body is read whole before it is admitted, so a client that sends it
        #: slowly holds a connection, never one of the engine's admission slots.
        self.body_timeout_s = body_timeout_s
        self.budget = body_budget or BodyBudget(DEFAULT_BODY_BUDGET_BYTES, guard.retry_after)
        #: Compared as bytes with hmac.compare_digest, every key every time (no early exit).
        self._keys = tuple(k.encode() for k in api_keys if k)
        self.ready = False
        self.load_error: str | None = None
        self.own = self._build_own_app()
        self._openai: Any = None
        self.routes = body_routes([self.own])

    def mark_ready(self) -> None:
        self._openai = self.backend.openai_app()
        self.routes = body_routes([self.own, self._openai])
        self.guard.max_running = self.backend.max_running
        self.ready = True
        metrics.READY.set(1)
        log.info("guarded routes", paths=self.routes.paths)

    def _build_own_app(self) -> FastAPI:
        app = FastAPI(title="kaito inference", docs_url=None, redoc_url=None, openapi_url=None)

        @app.exception_handler(RequestValidationError)
        async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
            errs = exc.errors()
            first = errs[0] if errs else {}
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            return _error(400, f"invalid request body: {where or 'body'}: {first.get('msg', 'invalid')}")

        @app.get("/health")
        async def health() -> Response:
            if self.ready:
                body = {"status": "ok", "model": self.backend.model_name}
                if os.environ.get(ENV_STANDIN):  # kaito's local node: say it is not the real model
                    body["weights"] = os.environ[ENV_STANDIN]
                return JSONResponse(body)
            status = "failed" if self.load_error else "loading"
            return JSONResponse({"status": status, "error": self.load_error}, status_code=503)

        @app.get("/metrics")
        async def prom() -> Response:
            data, ctype = metrics.render()
            return Response(data, media_type=ctype)

        @app.post("/chat")
        async def chat(body: ChatBody, request: Request) -> Response:
            try:
                text = await self.backend.chat(body, request)
            except BackendError as exc:
                return _error(exc.status, exc.message)
            return JSONResponse({"Result": text})

        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.own(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS:
            await self.own(scope, receive, send)
            return
        if self._keys and not self._authorized(scope):
            await self._unauthorized(scope, send)
            return
        if not self.ready:
            await _send_json(
                send,
                503,
                {"error": {"message": "model is loading", "type": "unavailable", "code": 503}},
                [(b"retry-after", b"5")],
            )
            return
        target = self.own if path in OWN_PATHS else self._openai
        endpoint = self.routes.endpoint(path) if scope["method"] in BODY_METHODS else None
        if endpoint is None:
            await target(scope, receive, send)
            return
        await self._guarded(endpoint, target, scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        token = _bearer(scope)
        if token is None:
            return False
        ok = False
        for key in self._keys:  # no short cut: the time taken does not say which key was close
            ok |= hmac.compare_digest(token, key)
        return ok

    async def _unauthorized(self, scope: Scope, send: Send) -> None:
        metrics.UNAUTHORIZED.inc()
        presented = _bearer(scope) is not None
        challenge = b'Bearer realm="kaito"' + (b', error="invalid_token"' if presented else b"")
        msg = "invalid API key" if presented else "missing API key: send Authorization: Bearer <key>"
        payload = {"error": {"message": msg, "type": "authentication_error", "code": 401}}
        # The body, if any, is never read: close rather than leave it in the connection.
        await _send_json(send, 401, payload, [(b"www-authenticate", challenge), (b"connection", b"close")])

    async def _guarded(self, endpoint: str, target: Any, scope: Scope, receive: Receive, send: Send) -> None:
        held = [0]  # bytes of this request's body reserved in the shared budget
        try:
            await self._admit(endpoint, target, scope, receive, send, held)
        finally:
            self.budget.release(held[0])

    async def _admit(
        self, endpoint: str, target: Any, scope: Scope, receive: Receive, send: Send, held: list[int]
    ) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > MAX_BODY_BYTES:
            await self._too_large(endpoint, send)
            return
        if declared is not None and not self.budget.fits(declared):
            # it could not be held whole anyway: refuse before reading a byte of it
            await self._over_budget(endpoint, send)
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await _read_body(receive, self.budget, held)
        except TimeoutError:
            metrics.REQUESTS.labels(endpoint, "408").inc()
            msg = f"request body not received within {self.body_timeout_s:g}s"
            await _send_json(send, 408, {"error": {"message": msg, "type": "timeout", "code": 408}}, [])
            return
        except _BodyTooLarge:
            await self._too_large(endpoint, send)
            return
        except _OverBudget:
            await self._over_budget(endpoint, send)
            return
        if body is None:  # the client went away before sending it all
            return
        receive = _replay(body, receive)
        del body
        admit = scope["path"] not in UNADMITTED_PATHS
        if admit and not self.guard.try_acquire():
            status, headers, payload = self.guard.rejection()
            metrics.REQUESTS.labels(endpoint, "429").inc()
            metrics.RATELIMIT_REJECTED.inc()
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        start = time.perf_counter()
        state = {"status": 500, "first": 0.0}

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif not state["first"] and message.get("body"):
                state["first"] = time.perf_counter()
            await send(message)

        try:
            await target(scope, receive, measured_send)
        finally:
            if admit:
                self.guard.release()
            end = time.perf_counter()
            metrics.REQUESTS.labels(endpoint, str(int(state["status"]))).inc()
            metrics.LATENCY.labels(endpoint).observe(end - start)
            if state["first"]:
                metrics.TTFB.labels(endpoint).observe(state["first"] - start)

    async def _too_large(self, endpoint: str, send: Send) -> None:
        metrics.REQUESTS.labels(endpoint, "413").inc()
        msg = f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MiB"
        payload = {"error": {"message": msg, "type": "invalid_request_error", "code": 413}}
        await _send_json(send, 413, payload, [(b"connection", b"close")])

    async def _over_budget(self, endpoint: str, send: Send) -> None:
        metrics.REQUESTS.labels(endpoint, "503").inc()
        status, headers, payload = self.budget.rejection()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


def _bearer(scope: Scope) -> bytes | None:
    """The token of ``Authorization: Bearer <token>`` (scheme in any case), else None."""
    raw = _header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None  # the HTTP parser refuses a malformed length before we are called


async def _read_body(receive: Receive, budget: BodyBudget, held: list[int]) -> bytes | None:
    """The whole request body, or None when the client disconnects first. Each chunk is
    reserved in ``budget`` before it is kept (``held[0]`` grows with it)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        if chunk:
            if not budget.try_reserve(len(chunk)):
                raise _OverBudget
            held[0] += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the engine's app the body already read, then the client's own
    messages (a disconnect while streaming must still reach it). The body is dropped once
    handed over, so only the app's own copy stays alive while it runs."""
    pending: list[bytes] = [body]

    async def replayed() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replayed
