"""An admission webhook server: TLS, handlers per path, metrics, certificate reload.

Why in the runtime: an operator that serves its own admission webhooks must answer the
apiserver over TLS from the same process (and event loop) as its controllers, keep serving while
its certificate rotates, report readiness only once it can actually answer, and drain on
shutdown. That is the same for every operator, so it lives here, modelled on controller-runtime's
``pkg/webhook`` and ``pkg/certwatcher``; the operator supplies only the decision functions.

A handler takes the AdmissionReview's ``request`` dict and returns its ``response`` dict (sync or
async); the server checks and decodes the review, copies the ``uid``, wraps the answer in an
AdmissionReview of the same API version and counts it under controller-runtime's metric names.
The helpers :func:`allowed`, :func:`denied`, :func:`errored`, :func:`patched` and
:func:`patch_response` build response dicts. A handler that raises is answered
``allowed: false`` with code 500 (and counted as a panic): the apiserver then refuses the
object with the reason instead of seeing a broken connection.

Sync handlers run on the event loop: keep them short (validation), or write them ``async``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import os
import ssl
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kaito.runtime.certwatcher import CertificateError, CertWatcher
from kaito.runtime.logging import get_logger
from kaito.runtime.metrics import Metrics

__all__ = [
    "AdmissionHandler",
    "WebhookServer",
    "WebhookServerOptions",
    "allowed",
    "denied",
    "errored",
    "json_patch",
    "patch_response",
    "patched",
]

_log = get_logger("kaito.runtime.webhook")

AdmissionHandler = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]
"""AdmissionReview ``request`` dict -> ``response`` dict (``uid`` is filled in by the server)."""

REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
# An AdmissionReview carries at most two stored objects (object and oldObject on UPDATE). etcd
# refuses to store an object over 1.5 MiB (its --max-request-bytes default), and the apiserver
# refuses any request body over 3 MiB, so a review of storable objects fits in 2 x 1.5 MiB plus
# its envelope (userInfo, options): 3.5 MiB. Larger bodies get 413 before a byte is parsed.
MAX_REQUEST_BYTES = 3 * 1024 * 1024 + 512 * 1024
# What a parse may allocate is bounded by the body's number of JSON objects and arrays (one Python
# dict or list each, 64-230 bytes), more than by its bytes: 7 MiB of "[{},{},..." is 2.4 million
# dicts, 185 MB. Counted (a C-speed byte count, over-counting brackets inside strings) before
# parsing: 100,000 cost at most ~25 MB, and a Kubernetes object has one per 30+ bytes of JSON, so
# only a 3 MiB object of unusual shape comes near it. Measured worst cases are in docs/reliability.md.
MAX_JSON_CONTAINERS = 100_000
# What a parse may take of the event loop is bounded by the body's number of values (commas,
# objects and arrays counted): the slowest values to parse, numbers like 1e308, take ~0.35 us each
# on a loaded core, so 3.5 MiB of them held the loop 0.29 s; 250,000 hold it ~0.15 s at most. A
# Kubernetes object has a comma per 20+ bytes of JSON, so a 3.5 MiB one stays under it too.
MAX_JSON_VALUES = 250_000


# ----------------------------------------------------------------------------- responses


def allowed(message: str = "", *, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Admit the object unchanged."""
    resp: dict[str, Any] = {"allowed": True}
    if message:
        resp["status"] = {"code": 200, "message": message}
    if warnings:
        resp["warnings"] = list(warnings)
    return resp


def denied(
    message: str,
    *,
    code: int = 403,
    reason: str = "Forbidden",
    causes: Sequence[Mapping[str, Any]] = (),
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Refuse the object; ``message`` is what the kubectl user reads.

    ``code``/``reason`` default to controller-runtime's (403 Forbidden); validation failures often
    use 422 Invalid with ``causes`` (``{"field", "message", "reason"}``), as the apiserver does.
    """
    status: dict[str, Any] = {"code": code, "reason": reason, "message": message or "denied"}
    if causes:
        status["details"] = {"causes": [dict(c) for c in causes]}
    resp: dict[str, Any] = {"allowed": False, "status": status}
    if warnings:
        resp["warnings"] = list(warnings)
    return resp


def errored(code: int, message: str) -> dict[str, Any]:
    """The webhook could not decide (bad input: 400; its own failure: 500); the object is refused."""
    return {"allowed": False, "status": {"code": code, "message": message}}


def patched(
    operations: Sequence[Mapping[str, Any]], message: str = "", *, warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """Admit with RFC 6902 JSON Patch ``operations`` applied (none: admitted unchanged)."""
    resp = allowed(message, warnings=warnings)
    if operations:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(list(operations)).encode()).decode()
    return resp


def patch_response(
    original: Any, modified: Any, message: str = "", *, warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """Admit with the patch that turns ``original`` into ``modified`` (a defaulter edits a copy)."""
    return patched(json_patch(original, modified), message, warnings=warnings)


def _pointer(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def json_patch(original: Any, modified: Any, path: str = "") -> list[dict[str, Any]]:
    """JSON Patch operations from ``original`` to ``modified``.

    Objects are diffed key by key; a changed list is replaced whole, which is always correct
    (element-wise ops on lists go wrong when the apiserver's copy differs in order).
    """
    if isinstance(original, dict) and isinstance(modified, dict):
        ops: list[dict[str, Any]] = []
        for key in original:
            if key not in modified:
                ops.append({"op": "remove", "path": f"{path}/{_pointer(key)}"})
        for key, value in modified.items():
            sub = f"{path}/{_pointer(key)}"
            if key not in original:
                ops.append({"op": "add", "path": sub, "value": value})
            else:
                ops.extend(json_patch(original[key], value, sub))
        return ops
    # Compared as JSON: in Python 1 == 1.0 == True, and [1] == [1.0], but not on the wire.
    if json.dumps(original, sort_keys=True) == json.dumps(modified, sort_keys=True):
        return []
    return [{"op": "replace", "path": path, "value": modified}]


# ----------------------------------------------------------------------------- metrics


class WebhookMetrics:
    """controller-runtime's webhook and certwatcher collectors, once per registry."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, WebhookMetrics] = weakref.WeakKeyDictionary()

    @classmethod
    def on(cls, registry: CollectorRegistry) -> WebhookMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.latency = Histogram(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            ["webhook"],
            registry=r,
        )
        self.requests = Counter(
            "controller_runtime_webhook_requests_total",
            "Total number of admission requests by HTTP status code.",
            ["webhook", "code"],
            registry=r,
        )
        self.in_flight = Gauge(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served.",
            ["webhook"],
            registry=r,
        )
        self.panics = Counter(
            "controller_runtime_webhook_panics_total",
            "Total number of webhook handler exceptions",
            [],
            registry=r,
        )
        self.cert_reads = Counter(
            "certwatcher_read_certificate_total", "Total number of certificate reads", [], registry=r
        )
        self.cert_read_errors = Counter(
            "certwatcher_read_certificate_errors_total",
            "Total number of certificate read errors",
            [],
            registry=r,
        )


# ----------------------------------------------------------------------------- connections

_HANDSHAKE, _IDLE, _HEAD, _BODY, _BUSY = "handshake", "idle", "head", "body", "busy"
#: States in which a connection waits on its client: evictable when the server is full.
_WAITING = (_HANDSHAKE, _IDLE, _HEAD, _BODY)
#: Seconds a connection closed after a refusal has to read the answer before it is cut.
_CLOSE_GRACE = 1.0
#: Bodies up to this size are read without a large-body slot (an AdmissionReview is a few KiB).
SMALL_BODY_BYTES = 64 * 1024


class _Connection:
    """One accepted TCP connection: its state, since when, and the deadline of that state."""

    __slots__ = ("since", "state", "task", "tcp", "timer", "tls")

    def __init__(self, tcp: asyncio.Transport, now: float) -> None:
        self.tcp = tcp
        self.tls: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.since = now
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        (self.tls or self.tcp).abort()


class _AppProtocol(asyncio.Protocol):
    """Stands between the TLS layer and aiohttp's request handler to see the connection end.

    ``loop.start_tls`` may hand over decrypted bytes (TLS 1.3 sends the first request with the
    handshake's last flight) before this side has told aiohttp of the connection; those bytes are
    kept until :meth:`attach`.
    """

    def __init__(self, guard: _ConnectionGuard, conn: _Connection, inner: asyncio.Protocol) -> None:
        self._guard, self._conn, self._inner = guard, conn, inner
        self._early: list[bytes] = []
        self._early_eof = False
        self._attached = False

    def attach(self, transport: asyncio.Transport) -> None:
        self._attached = True
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()
        if self._early_eof:
            self._inner.eof_received()

    def data_received(self, data: bytes) -> None:
        self._guard.head_started(self._conn)
        if self._attached:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    @property
    def has_early_data(self) -> bool:
        return bool(self._early)

    def eof_received(self) -> bool | None:
        if self._attached:
            return self._inner.eof_received()
        self._early_eof = True
        return None

    def pause_writing(self) -> None:
        if self._attached:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._attached:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.forget(self._conn)
        if self._attached:
            self._inner.connection_lost(exc)


class _Accept(asyncio.Protocol):
    """The listening socket's protocol: hands each plain TCP connection to the guard, which starts
    TLS on it (``loop.start_tls`` replaces this protocol)."""

    def __init__(self, guard: _ConnectionGuard) -> None:
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._guard.accepted(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only before start_tls took over, which the guard's task sees itself


def _nested_too_deep(prefix: bytes) -> bool:
    """Whether ``prefix`` nests deeper than the parser recurses (it stops there; 8 KiB of brackets
    cost it ~3,000 lists at most): a deep nest of many brackets is then a bad request (400), not
    merely a large one (413)."""
    try:
        json.loads(prefix)
    except RecursionError:
        return True
    except (ValueError, UnicodeDecodeError):
        return False
    return False


class _ConnectionGuard:
    """Caps and times every connection from accept to close, so no client can hold the server.

    Counted from the TCP accept (before TLS: a pending handshake holds a 256 KiB TLS buffer), a
    connection must complete its TLS handshake within ``header_timeout``; an idle connection (new,
    or after a response) must start a request within ``keepalive_timeout``; a request head, from
    its first byte, must be complete within ``header_timeout``, and a body within ``body_timeout``
    (enforced by the server); one that misses its deadline is aborted. At
    ``max_connections``, a new connection evicts the connection that has waited longest on its
    client (handshaking, idle or sending a body); only when every connection is busy in a handler
    is the new one refused. A slow client therefore loses its slot to the apiserver, not the
    reverse: a legitimate call holds its slot for milliseconds.
    """

    def __init__(
        self,
        server: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        options: WebhookServerOptions,
    ) -> None:
        self._server, self._context, self._opts = server, context, options
        self._conns: dict[_Connection, None] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._conns)

    def accepted(self, tcp: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        if len(self._conns) >= self._opts.max_connections:
            waiting = [c for c in self._conns if c.state in _WAITING]
            if not waiting:
                self.refused += 1
                tcp.abort()
                return
            # Those still to send a request head first, then slow bodies; the oldest of them.
            victim = min(waiting, key=lambda c: (c.state == _BODY, c.since))
            self.evicted += 1
            self.forget(victim)
            victim.abort()
        conn = _Connection(tcp, loop.time())
        self._conns[conn] = None
        self._arm(conn, self._opts.header_timeout)
        conn.task = loop.create_task(self._handshake(conn), name="webhook-tls-handshake")

    async def _handshake(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        app = _AppProtocol(self, conn, self._server())
        try:
            tls = await loop.start_tls(
                conn.tcp,
                app,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._opts.header_timeout,
            )
        except asyncio.CancelledError:
            self.forget(conn)
            conn.tcp.abort()
            raise
        except Exception as exc:  # a failed, timed-out or evicted handshake: that client is gone
            _log.debug("webhook TLS handshake failed", error=f"{type(exc).__name__}: {exc}")
            self.forget(conn)
            conn.tcp.abort()
            return
        finally:
            conn.task = None
        if tls is None or conn not in self._conns:  # evicted or timed out while shaking hands
            if tls is not None:
                tls.abort()
            return
        conn.tls = tls
        self._by_transport[tls] = conn
        if app.has_early_data:
            self._enter(conn, _HEAD, None)  # a head is arriving: the deadline set at accept runs on
        else:
            # Idle like a kept-alive connection until its first byte: Go's HTTP client (the
            # apiserver's) pools a connection it dialed but did not need and may send its next
            # request on it much later; cutting it at the header deadline races that request,
            # which Go does not retry ("write: broken pipe", a failed admission call).
            self._enter(conn, _IDLE, self._opts.keepalive_timeout)
        app.attach(tls)

    def _arm(self, conn: _Connection, seconds: float) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(seconds, self._expire, conn)

    def _expire(self, conn: _Connection) -> None:
        conn.timer = None
        if conn in self._conns:
            self.timed_out += 1
            _log.debug("webhook connection timed out", state=conn.state)
            self.forget(conn)
            conn.abort()

    def _enter(self, conn: _Connection, state: str, deadline: float | None) -> None:
        conn.state, conn.since = state, asyncio.get_running_loop().time()
        if deadline is not None:
            self._arm(conn, deadline)

    def for_transport(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        return self._by_transport.get(transport) if transport is not None else None

    def head_started(self, conn: _Connection) -> None:
        """The first bytes of a request head arrived on an idle connection: from now on the whole
        head must arrive within ``header_timeout`` (a slowloris head is cut there)."""
        if conn.state == _IDLE and conn in self._conns:
            self._enter(conn, _HEAD, self._opts.header_timeout)

    def request_started(self, conn: _Connection) -> None:
        """The request head is in: the body deadline is the handler's (it answers 408)."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._enter(conn, _BODY, None)

    def request_read(self, conn: _Connection) -> None:
        self._enter(conn, _BUSY, None)

    def request_done(self, conn: _Connection, *, closing: bool = False) -> None:
        """The response is written; a connection being closed (its client was refused) gets a
        second to take it, not the TLS shutdown's 30 s wait for the client's close_notify."""
        if conn in self._conns:
            self._enter(conn, _IDLE, _CLOSE_GRACE if closing else self._opts.keepalive_timeout)

    def forget(self, conn: _Connection) -> None:
        self._conns.pop(conn, None)
        if conn.tls is not None:
            self._by_transport.pop(conn.tls, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def close(self) -> None:
        """Stop timing; abort connections still shaking hands (established ones drain in aiohttp)."""
        for conn in list(self._conns):
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            if conn.state == _HANDSHAKE:
                self.forget(conn)
                conn.abort()
                if conn.task is not None:
                    conn.task.cancel()


class _GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with TLS started per connection by a :class:`_ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, guard: _ConnectionGuard) -> None:
        super().__init__(runner)
        self._host, self._port, self.guard = host, port, guard

    @property
    def name(self) -> str:
        return f"https://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Accept(guard), self._host, self._port, reuse_address=True
        )

    async def stop(self) -> None:
        self.guard.close()
        await super().stop()


# ----------------------------------------------------------------------------- server


@dataclass
class WebhookServerOptions:
    """Where and how to serve; the defaults are controller-runtime's."""

    host: str = ""
    """Address to listen on; empty listens on all interfaces."""
    port: int = 9443
    """TLS port (0 picks a free one; read ``WebhookServer.bound_port`` after start)."""
    cert_dir: str = os.path.join(tempfile.gettempdir(), "k8s-webhook-server", "serving-certs")
    """Folder holding the serving key pair, typically a mounted Secret."""
    cert_name: str = "tls.crt"
    """Certificate file (PEM, leaf first, then intermediates) inside ``cert_dir``."""
    key_name: str = "tls.key"
    """Private key file (PEM) inside ``cert_dir``."""
    client_ca_name: str | None = None
    """CA file inside ``cert_dir``; when set, clients must present a certificate it signed."""
    cert_poll_interval: float = 10.0
    """Seconds between checks of the key pair files for a rotated certificate."""
    shutdown_timeout: float = 30.0
    """On stop, how long in-flight admission requests may take to finish before being cut."""
    keepalive_timeout: float = 120.0
    """Seconds an idle connection (new after its handshake, or after a response) may wait for
    its next request, else it is closed. Longer than Go clients' 90 s idle timeout on purpose: the apiserver
    should be the side that closes idle connections, as a server-side close can race its next POST
    on it, which is then not retried. An idle connection also gives way to a new one when the
    server is full (``max_connections``), so this bounds a client's hold, not the server's load."""
    header_timeout: float = 10.0
    """Seconds for the TLS handshake (from the TCP accept), and for a request head from its
    first byte to its end (a slowloris client is cut here)."""
    body_timeout: float = 10.0
    """Seconds from the request head to the whole body (answered 408 and closed past it). The
    apiserver gives the whole call 10 s by default (``timeoutSeconds``)."""
    max_connections: int = 128
    """Open connections (counted from the accept, handshakes included; each holds ~300 KiB of TLS
    and HTTP buffers). At the cap, a new connection evicts the one that has waited longest on its
    client; only when all are busy in handlers is it refused."""
    max_request_bytes: int = MAX_REQUEST_BYTES
    """Largest AdmissionReview body accepted; larger ones get HTTP 413."""
    max_json_containers: int = MAX_JSON_CONTAINERS
    """Most JSON objects and arrays (``{`` and ``[`` bytes) a body may hold; more get HTTP 413."""
    max_json_values: int = MAX_JSON_VALUES
    """Most JSON values (``,`` ``{`` ``[`` bytes) a body may hold; more get HTTP 413."""
    max_large_bodies: int = 2
    """Bodies over 64 KiB read and handled at once; others wait (within ``body_timeout``), so
    many large bodies cost at most this many times ``max_request_bytes`` and its parse."""
    tls_options: Callable[[ssl.SSLContext], None] | None = None
    """Adjusts every TLS context built (ciphers, versions), like controller-runtime's TLSOpts."""


class WebhookServer:
    """Serves admission handlers over TLS; a Manager runnable that needs no leadership.

    Every replica answers admission calls, so webhook servers run on leaders and followers alike
    (``needs_leader_election = False``). ``start`` waits for a loadable key pair before it listens
    (a freshly mounted Secret may lag the pod), and ``started_checker()`` fails until the server
    completes a TLS handshake with itself.
    """

    needs_leader_election = False
    name = "webhook-server"

    def __init__(
        self, options: WebhookServerOptions | None = None, *, metrics: Metrics | None = None
    ) -> None:
        self.options = opts = options or WebhookServerOptions()
        self._handlers: dict[str, AdmissionHandler] = {}
        self._metrics = WebhookMetrics.on(metrics.registry if metrics is not None else CollectorRegistry())
        ca = opts.client_ca_name

        def configure(ctx: ssl.SSLContext) -> None:
            if ca:
                ctx.load_verify_locations(os.path.join(opts.cert_dir, ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
            if opts.tls_options is not None:
                opts.tls_options(ctx)

        self.cert_watcher = CertWatcher(
            os.path.join(opts.cert_dir, opts.cert_name),
            os.path.join(opts.cert_dir, opts.key_name),
            poll_interval=opts.cert_poll_interval,
            configure=configure,
            on_read=self._count_read,
        )
        self._runner: web.AppRunner | None = None
        self._site: _GuardedSite | None = None
        self._large_bodies: asyncio.Semaphore | None = None
        self._parse_lock: asyncio.Lock | None = None
        self._started = asyncio.Event()
        self._running = False
        self.bound_port: int | None = None

    # ----- registration

    def register(self, path: str, handler: AdmissionHandler) -> None:
        """Serve ``handler`` at ``path`` (e.g. ``/validate-kaito-sh-v1beta1-workspace``); also after start."""
        if not path.startswith("/"):
            raise ValueError(f"webhook path {path!r} must start with '/'")
        if path in self._handlers:
            raise ValueError(f"a webhook is already registered at {path!r}")
        self._handlers[path] = handler

    @property
    def paths(self) -> list[str]:
        return sorted(self._handlers)

    # ----- serving

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        guard = self._site.guard if self._site is not None else None
        conn = guard.for_transport(request.transport) if guard is not None else None
        if guard is not None and conn is not None:
            guard.request_started(conn)
        closing = True
        try:
            response = await self._answer(request, conn)
            if not request.content.at_eof():
                response.force_close()  # the unread rest of the body is not worth draining
            closing = not response.keep_alive
            return response
        finally:
            if guard is not None and conn is not None:
                guard.request_done(conn, closing=closing)

    async def _answer(self, request: web.Request, conn: _Connection | None) -> web.Response:
        handler = self._handlers.get(request.path)
        if handler is None:
            return web.Response(status=404, text=f"no webhook registered at {request.path}\n")
        if request.method != "POST":
            return web.Response(status=405, text="admission webhooks accept POST only\n")
        m = self._metrics
        in_flight = m.in_flight.labels(webhook=request.path)
        in_flight.inc()
        t0 = time.perf_counter()
        status = 500
        try:
            status, body = await self._review(handler, request, conn)
            return web.json_response(body, status=status)
        finally:
            m.latency.labels(webhook=request.path).observe(time.perf_counter() - t0)
            m.requests.labels(webhook=request.path, code=str(status)).inc()
            in_flight.dec()

    async def _read_body(self, request: web.Request) -> bytes:
        """The body within ``body_timeout``; one over 64 KiB (or of unknown length) first waits,
        within the same deadline, for one of ``max_large_bodies`` slots."""
        async with asyncio.timeout(self.options.body_timeout):
            length = request.content_length
            if length is not None and length <= SMALL_BODY_BYTES:
                return await request.read()
            if self._large_bodies is None:
                self._large_bodies = asyncio.Semaphore(max(1, self.options.max_large_bodies))
            async with self._large_bodies:
                return await request.read()

    async def _review(
        self, handler: AdmissionHandler, request: web.Request, conn: _Connection | None = None
    ) -> tuple[int, dict[str, Any]]:
        def bad(code: int, message: str) -> tuple[int, dict[str, Any]]:
            _log.warning("admission request rejected", webhook=request.path, code=code, reason=message)
            review = {"apiVersion": REVIEW_VERSIONS[0], "kind": "AdmissionReview"}
            return code, {**review, "response": {"uid": "", **errored(code, message)}}

        opts = self.options
        if request.content_type != "application/json":
            return bad(400, f"contentType={request.content_type}, expected application/json")
        if request.content_length is not None and request.content_length > opts.max_request_bytes:
            return bad(413, f"request body larger than {opts.max_request_bytes} bytes")
        try:
            raw = await self._read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return bad(413, f"request body larger than {opts.max_request_bytes} bytes")
        except TimeoutError:
            return bad(408, f"request body not received within {opts.body_timeout:g}s")
        if conn is not None and self._site is not None:
            self._site.guard.request_read(conn)
        # The parse holds the event loop (and the GIL: a thread would not help), so what it may
        # cost is bounded before it starts: bytes above, objects and arrays here.
        containers = raw.count(b"{") + raw.count(b"[")
        values = containers + raw.count(b",")
        if containers > opts.max_json_containers or values > opts.max_json_values:
            if _nested_too_deep(raw[:8192]):
                return bad(400, "could not decode the AdmissionReview: JSON nested too deep")
            return bad(
                413,
                f"request body holds more than {opts.max_json_containers} JSON objects and arrays "
                f"or {opts.max_json_values} values",
            )
        if self._parse_lock is None:
            self._parse_lock = asyncio.Lock()
        try:
            # One parse per turn of the loop: two bodies read in the same turn would otherwise be
            # parsed back to back, holding the loop for both.
            async with self._parse_lock:
                await asyncio.sleep(0)
                review = json.loads(raw)
        except RecursionError:
            return bad(400, "could not decode the AdmissionReview: JSON nested too deep")
        except (ValueError, UnicodeDecodeError) as exc:
            return bad(400, f"could not decode the AdmissionReview: {exc}")
        if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
            return bad(400, "body is not an AdmissionReview (kind must be AdmissionReview)")
        api_version = review.get("apiVersion")
        if api_version not in REVIEW_VERSIONS:
            return bad(400, f"unsupported AdmissionReview apiVersion {api_version!r}; want {REVIEW_VERSIONS}")
        req = review.get("request")
        if not isinstance(req, dict) or not isinstance(req.get("uid"), str):
            return bad(400, "AdmissionReview has no request with a uid")
        try:
            resp = handler(req)
            if inspect.isawaitable(resp):
                resp = await resp
            if not isinstance(resp, dict) or not isinstance(resp.get("allowed"), bool):
                raise TypeError(f"handler returned {type(resp).__name__}, not a response dict with 'allowed'")
        except Exception as exc:
            self._metrics.panics.inc()
            _log.error("admission handler failed", webhook=request.path, uid=req["uid"], exc_info=True)
            resp = errored(500, f"webhook {request.path} failed: {type(exc).__name__}: {exc}")
        body = {"apiVersion": api_version, "kind": "AdmissionReview", "response": {**resp, "uid": req["uid"]}}
        return 200, body

    # ----- lifecycle

    def _count_read(self, ok: bool) -> None:
        self._metrics.cert_reads.inc()
        if not ok:
            self._metrics.cert_read_errors.inc()

    async def _load_certificate(self, stop: asyncio.Event) -> bool:
        """Wait (polling) until the key pair loads; False if stopped first."""
        warned = False
        while not stop.is_set():
            try:
                self.cert_watcher.read_certificate()
                return True
            except CertificateError as exc:
                if not warned:
                    _log.warning("waiting for the webhook serving certificate", error=str(exc))
                    warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self.options.cert_poll_interval, 1.0))
        return False

    async def start(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop listening and drain in-flight requests."""
        if self._running:
            raise RuntimeError("webhook server already started")
        self._running = True
        try:
            if not await self._load_certificate(stop):
                return
            opts = self.options
            app = web.Application(client_max_size=opts.max_request_bytes)
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                shutdown_timeout=opts.shutdown_timeout,
                keepalive_timeout=opts.keepalive_timeout,
            )
            await self._runner.setup()
            server = self._runner.server
            assert server is not None
            guard = _ConnectionGuard(server, self.cert_watcher.server_context(), opts)
            site = self._site = _GuardedSite(self._runner, opts.host or None, opts.port, guard)
            try:
                await site.start()
            except BaseException:
                await self._runner.cleanup()
                self._runner = None
                self._site = None
                raise
            addrs = self._runner.addresses
            self.bound_port = int(addrs[0][1]) if addrs else opts.port
            watch = asyncio.create_task(self.cert_watcher.start(stop), name="webhook-certwatcher")
            self._started.set()
            _log.info("webhook server serving", port=self.bound_port, paths=self.paths)
            try:
                await stop.wait()
            finally:
                self._started.clear()
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                # Stops listening, lets in-flight requests finish (up to shutdown_timeout), closes.
                await self._runner.cleanup()
                self._runner = None
                self._site = None
                _log.info("webhook server stopped")
        finally:
            self._running = False

    async def wait_started(self) -> None:
        """Return once the server listens with a certificate (for tests and start-up ordering)."""
        await self._started.wait()

    @property
    def started(self) -> bool:
        return self._started.is_set()

    def started_checker(self, timeout: float = 5.0) -> Callable[[], Awaitable[str | None]]:
        """A ``/readyz`` check: fails until a TLS handshake with this server succeeds."""

        async def check() -> str | None:
            if not self._started.is_set() or self.bound_port is None:
                if not self.cert_watcher.loaded:
                    return "webhook server not started: no serving certificate loaded yet"
                return "webhook server not started yet"
            host = self.options.host
            if host in ("", "0.0.0.0", "::"):
                host = "127.0.0.1" if host != "::" else "::1"
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, self.bound_port, ssl=ctx), timeout
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                return f"webhook server TLS handshake failed: {type(exc).__name__}: {exc}"
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return None

        return check
