"""The runtime's webhook server over real TLS on loopback: dispatch, errors, patches, metrics,
readiness, certificate reload and graceful shutdown. The apiserver side is in
tests/integration/runtime/test_webhook_server_apiserver.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from kaito.runtime import (
    CertWatcher,
    Metrics,
    WebhookServer,
    WebhookServerOptions,
    allowed,
    denied,
    errored,
    json_patch,
    patch_response,
    patched,
)
from kaito.runtime.certwatcher import certificate_serial

# ----------------------------------------------------------------------------- certificates


@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test-ca"))
        .issuer_name(_name("test-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(key, cert, path)


def issue(ca: CA) -> tuple[bytes, bytes, int]:
    """A serving pair for 127.0.0.1 signed by ``ca``: (cert PEM, key PEM, serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("webhook"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial


def write_pair(folder: Path, cert: bytes, key: bytes) -> None:
    """Atomic per file, as the kubelet's symlink flip is; the two files still change one by one."""
    for name, data in (("tls.crt", cert), ("tls.key", key)):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


async def wait_for(cond: Callable[[], Awaitable[bool] | bool], what: str, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Served:
    server: WebhookServer
    url: str
    ca: CA
    folder: Path
    serial: int
    client_ctx: ssl.SSLContext
    stop: asyncio.Event
    task: asyncio.Task[None]
    registry: CollectorRegistry

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = kw.pop("headers", {"Content-Type": "application/json"})
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url + path, data=data, headers=headers, ssl=self.client_ctx, **kw) as r,
        ):
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def start_server(tmp: Path, **opts: Any) -> Served:
    ca = make_ca(tmp)
    cert, key, serial = issue(ca)
    write_pair(tmp, cert, key)
    metrics = Metrics()
    server = WebhookServer(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(tmp), **opts), metrics=metrics
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    async with asyncio.timeout(20):
        await server.wait_started()
    ctx = ssl.create_default_context(cafile=str(ca.path))
    return Served(
        server, f"https://127.0.0.1:{server.bound_port}", ca, tmp, serial, ctx, stop, task, metrics.registry
    )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await start_server(tmp_path, cert_poll_interval=0.05)
    try:
        yield s
    finally:
        s.stop.set()
        await asyncio.wait_for(s.task, 20)


def review(uid: str = "u-1", obj: Any = None, version: str = "admission.k8s.io/v1") -> dict[str, Any]:
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "object": obj or {"metadata": {"name": "x"}}},
    }


async def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return certificate_serial(der)
    finally:
        w.close()
        await w.wait_closed()


# ----------------------------------------------------------------------------- tests


async def test_handlers_are_dispatched_per_path_sync_and_async(served: Served) -> None:
    seen: list[dict[str, Any]] = []

    def validate(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        name = req["object"]["metadata"]["name"]
        return allowed() if name != "bad" else denied(f"name {name!r} is not allowed")

    async def mutate(req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return patched([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])

    served.server.register("/validate-x", validate)
    served.server.register("/mutate-x", mutate)
    with pytest.raises(ValueError, match="already registered"):
        served.server.register("/validate-x", validate)
    with pytest.raises(ValueError, match="must start with '/'"):
        served.server.register("nope", validate)

    code, body = await served.post("/validate-x", review("abc"))
    assert code == 200
    assert body == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"allowed": True, "uid": "abc"},
    }
    assert seen[0]["uid"] == "abc" and seen[0]["operation"] == "CREATE"

    code, body = await served.post("/validate-x", review("d", {"metadata": {"name": "bad"}}))
    assert code == 200 and body["response"]["allowed"] is False
    assert body["response"]["status"] == {
        "code": 403,
        "reason": "Forbidden",
        "message": "name 'bad' is not allowed",
    }

    # The answer carries the request's AdmissionReview version.
    code, body = await served.post("/mutate-x", review("m", version="admission.k8s.io/v1beta1"))
    assert code == 200 and body["apiVersion"] == "admission.k8s.io/v1beta1"
    resp = body["response"]
    assert resp["uid"] == "m" and resp["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(resp["patch"])) == [
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
    ]

    code, text = await served.post("/nothing-here", review())
    assert code == 404 and "no webhook registered at /nothing-here" in text
    async with aiohttp.ClientSession() as s, s.get(served.url + "/validate-x", ssl=served.client_ctx) as r:
        assert r.status == 405


async def test_bad_requests_get_400_with_a_reason(served: Served) -> None:
    served.server.register("/v", lambda req: allowed())
    code, body = await served.post("/v", b"\xff{ not json")
    assert code == 400
    assert body["response"]["allowed"] is False and body["response"]["status"]["code"] == 400
    assert "could not decode the AdmissionReview" in body["response"]["status"]["message"]

    code, body = await served.post("/v", review(), headers={"Content-Type": "text/plain"})
    assert code == 400 and "expected application/json" in body["response"]["status"]["message"]

    code, body = await served.post("/v", {"kind": "Pod", "apiVersion": "v1"})
    assert code == 400 and "not an AdmissionReview" in body["response"]["status"]["message"]

    code, body = await served.post("/v", {**review(), "apiVersion": "admission.k8s.io/v2"})
    assert code == 400 and "unsupported AdmissionReview apiVersion" in body["response"]["status"]["message"]

    code, body = await served.post("/v", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
    assert code == 400 and "no request with a uid" in body["response"]["status"]["message"]

    assert served.metric("controller_runtime_webhook_requests_total", webhook="/v", code="400") == 5
    assert served.metric("controller_runtime_webhook_requests_total", webhook="/v", code="200") == 0


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    s = await start_server(tmp_path, max_request_bytes=1024)
    try:
        s.server.register("/v", lambda req: allowed())
        code, _ = await s.post("/v", review(obj={"metadata": {"name": "x"}, "data": "y" * 4096}))
        assert code == 413
        code, body = await s.post("/v", review())
        assert code == 200 and body["response"]["allowed"] is True
    finally:
        s.stop.set()
        await asyncio.wait_for(s.task, 20)


async def test_deep_or_element_heavy_json_is_refused_before_it_costs(served: Served) -> None:
    """Deep nesting is a 400 (was an uncaught RecursionError: 500); more JSON objects or values
    than the caps is a 413, decided by counting bytes before any parse."""
    served.server.register("/v", lambda req: allowed())
    code, body = await served.post("/v", b"[" * 200_000 + b"]" * 200_000)
    assert code == 400 and "nested too deep" in body["response"]["status"]["message"]
    code, body = await served.post("/v", b'{"a":{"a":' * 1500 + b"0" + b"}" * 3000)
    assert code == 400 and "nested too deep" in body["response"]["status"]["message"]
    code, body = await served.post("/v", b"[" + b",".join([b"{}"] * 150_000) + b"]")
    assert code == 413 and "JSON objects and arrays" in body["response"]["status"]["message"]
    code, body = await served.post("/v", b"[" + b",".join([b"0"] * 300_000) + b"]")
    assert code == 413
    code, body = await served.post("/v", review())
    assert code == 200 and body["response"]["allowed"] is True


async def test_silent_and_slow_clients_are_cut_at_their_deadlines(tmp_path: Path) -> None:
    """A connection that sends no request head is closed at ``header_timeout``; one that stops
    mid-body is answered 408 at ``body_timeout``; past ``max_connections`` the longest-waiting
    connection gives way to the new one."""
    s = await start_server(tmp_path, header_timeout=0.5, body_timeout=0.5, max_connections=3)
    try:
        s.server.register("/v", lambda req: allowed())
        port = s.server.bound_port
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=s.client_ctx)
        w.write(b"POST /v HTTP/1.1\r\nHost: x\r\n")
        assert await asyncio.wait_for(r.read(), 10) == b""
        assert time.monotonic() - t0 < 5
        w.close()

        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=s.client_ctx)
        w.write(
            b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = b""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            async with asyncio.timeout(10):
                while chunk := await r.read(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        w.close()

        idle = [await asyncio.open_connection("127.0.0.1", port, ssl=s.client_ctx) for _ in range(5)]
        code, body = await s.post("/v", review())
        assert code == 200 and body["response"]["allowed"] is True
        closed = 0
        for ir, iw in idle[:2]:  # the oldest two gave way to the newer ones and the call above
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                closed += await asyncio.wait_for(ir.read(), 0.3) == b""
            iw.close()
        assert closed == 2
        for _ir, iw in idle[2:]:
            iw.close()
    finally:
        s.stop.set()
        await asyncio.wait_for(s.task, 20)


async def test_a_failing_handler_is_a_denial_with_code_500_not_a_broken_call(served: Served) -> None:
    def boom(req: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("spec")

    async def wrong(req: dict[str, Any]) -> Any:
        return "yes"

    served.server.register("/boom", boom)
    served.server.register("/wrong", wrong)  # type: ignore[arg-type]
    code, body = await served.post("/boom", review("b"))
    assert code == 200
    resp = body["response"]
    assert resp["uid"] == "b" and resp["allowed"] is False and resp["status"]["code"] == 500
    assert resp["status"]["message"] == "webhook /boom failed: KeyError: 'spec'"
    code, body = await served.post("/wrong", review("w"))
    assert code == 200 and body["response"]["status"]["code"] == 500
    assert "handler returned str" in body["response"]["status"]["message"]
    assert served.metric("controller_runtime_webhook_panics_total") == 2


async def test_metrics_use_controller_runtime_names(served: Served) -> None:
    release = asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return allowed()

    served.server.register("/slow", slow)
    call = asyncio.create_task(served.post("/slow", review()))
    await wait_for(
        lambda: served.metric("controller_runtime_webhook_requests_in_flight", webhook="/slow") == 1,
        "the request to be in flight",
    )
    release.set()
    code, _ = await call
    assert code == 200
    assert served.metric("controller_runtime_webhook_requests_in_flight", webhook="/slow") == 0
    assert served.metric("controller_runtime_webhook_requests_total", webhook="/slow", code="200") == 1
    assert served.metric("controller_runtime_webhook_latency_seconds_count", webhook="/slow") == 1
    assert served.metric("certwatcher_read_certificate_total") >= 1
    assert served.metric("certwatcher_read_certificate_errors_total") == 0


def test_response_helpers_and_patch_encoding() -> None:
    assert allowed() == {"allowed": True}
    assert allowed("fine", warnings=["w"]) == {
        "allowed": True,
        "status": {"code": 200, "message": "fine"},
        "warnings": ["w"],
    }
    d = denied("no", code=422, reason="Invalid", causes=[{"field": "spec.x", "message": "bad"}])
    assert d["status"]["details"]["causes"] == [{"field": "spec.x", "message": "bad"}]
    assert errored(400, "bad input") == {"allowed": False, "status": {"code": 400, "message": "bad input"}}
    assert patched([]) == {"allowed": True}

    original = {
        "metadata": {"name": "x", "labels": {"a/b": "1", "gone": "2"}, "annotations": {"t~x": "1"}},
        "spec": {"replicas": 1, "list": [1, 2, 3], "flag": True, "same": [1], "nums": [1]},
    }
    modified = {
        "metadata": {"name": "x", "labels": {"a/b": "2", "new": "3"}, "annotations": {"t~x": "1"}},
        "spec": {
            "replicas": 1.0,
            "list": [3, 2],
            "flag": 1,
            "same": [1],
            "nums": [True],
            "added": {"k": None},
        },
    }
    ops = json_patch(original, modified)
    assert {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"} in ops
    assert {"op": "remove", "path": "/metadata/labels/gone"} in ops
    assert {"op": "replace", "path": "/spec/list", "value": [3, 2]} in ops
    # 1 == 1.0 and True == 1 in Python, but they are different JSON values.
    assert {"op": "replace", "path": "/spec/replicas", "value": 1.0} in ops
    assert {"op": "replace", "path": "/spec/flag", "value": 1} in ops
    assert {"op": "replace", "path": "/spec/nums", "value": [True]} in ops
    assert not any(
        op["path"].startswith(("/metadata/annotations", "/spec/same", "/metadata/name")) for op in ops
    )
    resp = patch_response(original, modified)
    decoded = json.loads(base64.b64decode(resp["patch"]))
    assert decoded == ops and resp["patchType"] == "JSONPatch"
    # A real RFC 6902 implementation turns the original into the modified object.
    assert jsonpatch.apply_patch(original, decoded) == modified
    assert json_patch(original, original) == []
    assert patch_response(original, original) == {"allowed": True}


async def test_readiness_follows_start_and_stop(tmp_path: Path) -> None:
    server = WebhookServer(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(tmp_path), cert_poll_interval=0.05)
    )
    check = server.started_checker()
    assert await check() == "webhook server not started: no serving certificate loaded yet"
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    # No key pair on disk yet (a Secret volume not synced): the server waits and is not ready.
    await asyncio.sleep(0.2)
    assert not task.done() and not server.started
    assert await check() is not None
    ca = make_ca(tmp_path)
    cert, key, serial = issue(ca)
    write_pair(tmp_path, cert, key)
    async with asyncio.timeout(20):
        await server.wait_started()
    assert await check() is None
    assert server.cert_watcher.serial == serial
    stop.set()
    await asyncio.wait_for(task, 20)
    assert await check() == "webhook server not started yet"
    port = server.bound_port
    assert port is not None
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_rotated_certificate_is_served_to_new_connections_without_restart(served: Served) -> None:
    served.server.register("/v", lambda req: allowed())
    port = served.server.bound_port
    assert port is not None
    assert await peer_serial(port, served.client_ctx) == served.serial
    watcher = served.server.cert_watcher

    # A connection kept alive across the rotation goes on working.
    async with aiohttp.ClientSession() as session:

        async def call() -> int:
            async with session.post(served.url + "/v", json=review(), ssl=served.client_ctx) as r:
                assert (await r.json())["response"]["allowed"] is True
                return r.status

        assert await call() == 200
        cert2, key2, serial2 = issue(served.ca)
        # Half-rotated (new cert, old key): the mismatched pair is refused, the old one still served.
        errors = watcher.errors
        (served.folder / "tls.crt.new").write_bytes(cert2)
        (served.folder / "tls.crt.new").replace(served.folder / "tls.crt")
        await wait_for(lambda: watcher.errors > errors, "the mismatched pair to be tried")
        assert watcher.serial == served.serial
        assert await peer_serial(port, served.client_ctx) == served.serial
        assert await call() == 200
        # The key follows: new handshakes get the new certificate.
        write_pair(served.folder, cert2, key2)
        await wait_for(lambda: watcher.serial == serial2, "the new pair to be loaded")
        assert await peer_serial(port, served.client_ctx) == serial2
        assert await call() == 200
    assert served.metric("certwatcher_read_certificate_errors_total") >= 1
    assert served.metric("certwatcher_read_certificate_total") >= 3


async def test_kubelet_style_symlink_flip_is_picked_up(tmp_path: Path) -> None:
    """A Secret volume: tls.crt -> ..data/tls.crt, ..data -> a timestamped folder, flipped atomically."""
    ca = make_ca(tmp_path)
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(gen: str, cert: bytes, key: bytes) -> None:
        d = mount / gen
        d.mkdir()
        (d / "tls.crt").write_bytes(cert)
        (d / "tls.key").write_bytes(key)
        (mount / "..data_tmp").symlink_to(gen)
        (mount / "..data_tmp").replace(mount / "..data")

    cert1, key1, serial1 = issue(ca)
    publish("..gen1", cert1, key1)
    for name in ("tls.crt", "tls.key"):
        (mount / name).symlink_to(f"..data/{name}")
    watcher = CertWatcher(mount / "tls.crt", mount / "tls.key", poll_interval=0.05)
    watcher.read_certificate()
    assert watcher.serial == serial1
    assert watcher.poll() is False
    cert2, key2, serial2 = issue(ca)
    publish("..gen2", cert2, key2)
    shutil.rmtree(mount / "..gen1")
    assert watcher.poll() is True and watcher.serial == serial2


async def test_graceful_shutdown_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    s = await start_server(tmp_path)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return allowed("done")

    s.server.register("/slow", slow)
    call = asyncio.create_task(s.post("/slow", review("late")))
    await asyncio.wait_for(entered.wait(), 20)
    s.stop.set()
    # Stopped listening while the request is still being answered.
    port = s.server.bound_port
    assert port is not None

    async def refused() -> bool:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return True
        w.close()
        return False

    await wait_for(refused, "the listener to close")
    assert not s.task.done()
    release.set()
    code, body = await asyncio.wait_for(call, 20)
    assert code == 200 and body["response"] == {
        "allowed": True,
        "status": {"code": 200, "message": "done"},
        "uid": "late",
    }
    await asyncio.wait_for(s.task, 20)


async def test_needs_no_leader_election() -> None:
    assert WebhookServer.needs_leader_election is False
    assert CertWatcher.needs_leader_election is False


async def test_client_ca_requires_a_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert, key, _ = issue(ca)
    write_pair(tmp_path, cert, key)
    server = WebhookServer(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(tmp_path), client_ca_name="ca.crt")
    )
    server.register("/v", lambda req: allowed())
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    try:
        async with asyncio.timeout(20):
            await server.wait_started()
        url = f"https://127.0.0.1:{server.bound_port}/v"
        anonymous = ssl.create_default_context(cafile=str(ca.path))
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.post(url, json=review(), ssl=anonymous) as r:
                    await r.read()
        ccert, ckey, _ = issue(ca)
        (tmp_path / "client.crt").write_bytes(ccert)
        (tmp_path / "client.key").write_bytes(ckey)
        authed = ssl.create_default_context(cafile=str(ca.path))
        authed.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        async with aiohttp.ClientSession() as s, s.post(url, json=review(), ssl=authed) as r:
            assert r.status == 200 and (await r.json())["response"]["allowed"] is True
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
