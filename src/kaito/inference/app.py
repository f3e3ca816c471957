"""The HTTP front: /health, /metrics, /chat, overload guard (429) and measurement around a backend.

It is a plain ASGI callable rather than FastAPI middleware: every token of a streamed response
passes through it, and a bare function call per message keeps the added latency in microseconds
(docs/performance.md, "Inference"). The server listens before the model is loaded so that
``/health`` can answer 503 during loading; every model route answers 503 until then too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from kaito.contract import ENV_STANDIN
from kaito.inference import metrics
from kaito.inference.backend import Backend, BackendError, ChatBody, Message, Receive, Scope, Send
from kaito.inference.overload import OverloadGuard

log = structlog.get_logger("kaito.inference")

GENERATION_PATHS = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    # vLLM's Responses API: admitted and measured like the other generation routes
    "/v1/responses": "responses",
    "/chat": "chat",
}
OWN_PATHS = {"/health", "/metrics", "/chat"}
#: Larger bodies are refused with 413 while being read (a 1 MB prompt is far past any context).
MAX_BODY_BYTES = 32 * 1024 * 1024


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

    def __init__(self, backend: Backend, guard: OverloadGuard, body_timeout_s: float = 30.0) -> None:
        self.backend = backend
        self.guard = guard
        #: A generation request's body is read whole before it is admitted, so a client that
        #: sends it slowly holds a connection, never one of the engine's admission slots.
        self.body_timeout_s = body_timeout_s
        self.ready = False
        self.load_error: str | None = None
        self.own = self._build_own_app()
        self._openai: Any = None

    def mark_ready(self) -> None:
        self._openai = self.backend.openai_app()
        self.guard.max_running = self.backend.max_running
        self.ready = True
        metrics.READY.set(1)

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
        endpoint = GENERATION_PATHS.get(path)
        if path in OWN_PATHS and endpoint is None:
            await self.own(scope, receive, send)
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
        if endpoint is None or scope["method"] != "POST":
            await target(scope, receive, send)
            return
        await self._guarded(endpoint, target, scope, receive, send)

    async def _guarded(self, endpoint: str, target: Any, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await _read_body(receive)
        except TimeoutError:
            metrics.REQUESTS.labels(endpoint, "408").inc()
            msg = f"request body not received within {self.body_timeout_s:g}s"
            await _send_json(send, 408, {"error": {"message": msg, "type": "timeout", "code": 408}}, [])
            return
        except _BodyTooLarge:
            metrics.REQUESTS.labels(endpoint, "413").inc()
            msg = f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MiB"
            payload = {"error": {"message": msg, "type": "invalid_request_error", "code": 413}}
            await _send_json(send, 413, payload, [(b"connection", b"close")])
            return
        if body is None:  # the client went away before sending it all
            return
        receive = _replay(body, receive)
        if not self.guard.try_acquire():
            status, headers, body = self.guard.rejection()
            metrics.REQUESTS.labels(endpoint, "429").inc()
            metrics.RATELIMIT_REJECTED.inc()
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
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
            self.guard.release()
            end = time.perf_counter()
            metrics.REQUESTS.labels(endpoint, str(int(state["status"]))).inc()
            metrics.LATENCY.labels(endpoint).observe(end - start)
            if state["first"]:
                metrics.TTFB.labels(endpoint).observe(state["first"] - start)


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client disconnects first."""
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
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the engine's app the body already read, then the client's own
    messages (a disconnect while streaming must still reach it)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
