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
# The apiserver's own limit on a request body is 3 MiB; object + oldObject + envelope fit in 7 MiB,
# controller-runtime's limit. aiohttp's default (1 MiB) would refuse large objects.
MAX_REQUEST_BYTES = 7 * 1024 * 1024


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
    keepalive_timeout: float = 3630.0
    """Idle seconds before the server closes a kept-alive connection. Longer than Go clients'
    90 s idle timeout on purpose: the client must be the side that closes idle connections, as a
    server-side close can race the apiserver's next POST on it, which is then not retried."""
    max_request_bytes: int = MAX_REQUEST_BYTES
    """Largest AdmissionReview body accepted; larger ones get HTTP 413."""
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
            status, body = await self._review(handler, request)
            return web.json_response(body, status=status)
        finally:
            m.latency.labels(webhook=request.path).observe(time.perf_counter() - t0)
            m.requests.labels(webhook=request.path, code=str(status)).inc()
            in_flight.dec()

    async def _review(self, handler: AdmissionHandler, request: web.Request) -> tuple[int, dict[str, Any]]:
        def bad(code: int, message: str) -> tuple[int, dict[str, Any]]:
            _log.warning("admission request rejected", webhook=request.path, code=code, reason=message)
            review = {"apiVersion": REVIEW_VERSIONS[0], "kind": "AdmissionReview"}
            return code, {**review, "response": {"uid": "", **errored(code, message)}}

        if request.content_type != "application/json":
            return bad(400, f"contentType={request.content_type}, expected application/json")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return bad(413, f"request body larger than {self.options.max_request_bytes} bytes")
        try:
            review = json.loads(raw)
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
            site = web.TCPSite(
                self._runner,
                opts.host or None,
                opts.port,
                ssl_context=self.cert_watcher.server_context(),
                reuse_address=True,
            )
            try:
                await site.start()
            except BaseException:
                await self._runner.cleanup()
                self._runner = None
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
