"""The runtime's webhook server called by the real kube-apiserver over TLS, run by a Manager that
is not the leader, and a certificate rotated on disk while the apiserver keeps calling.

Generic on purpose (ConfigMaps, no kaito types): the runtime is a library for any operator. The
certificates come from the cluster CA (``Cluster.serving_cert``), which is the configurations'
``caBundle``, so the apiserver verifies the served chain exactly as in a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import shutil
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from kaito.envtest import Cluster
from kaito.runtime import (
    ApiError,
    Client,
    LeaderElectionOptions,
    Manager,
    WebhookServer,
    WebhookServerOptions,
    allowed,
    denied,
    patch_response,
)
from kaito.runtime.certwatcher import certificate_serial

pytestmark = pytest.mark.cluster

LABEL = "webhook.kaito.sh/defaulted"


async def wait_for(cond: Callable[[], Awaitable[bool] | bool], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def validate(req: dict[str, Any]) -> dict[str, Any]:
    data = (req.get("object") or {}).get("data") or {}
    if "forbidden" in data:
        return denied("data key 'forbidden' is not allowed; remove it")
    return allowed()


async def mutate(req: dict[str, Any]) -> dict[str, Any]:
    # A little time in the handler so concurrent calls overlap and need connections of their own.
    await asyncio.sleep(0.02)
    obj = req["object"]
    labels = dict((obj.get("metadata") or {}).get("labels") or {})
    labels[LABEL] = "true"
    return patch_response(obj, {**obj, "metadata": {**obj["metadata"], "labels": labels}})


@dataclass
class Hooked:
    ns: str
    server: WebhookServer
    manager: Manager
    cert_dir: Path
    cert_name: str
    handshakes: list[int] = field(default_factory=list)


def _install(cluster: Cluster, ns: str, port: int) -> None:
    assert cluster.pki is not None
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()

    def hook(name: str, path: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }

    for kind, name, path in (
        ("MutatingWebhookConfiguration", "mutate.runtime.kaito.sh", "/mutate-configmap"),
        ("ValidatingWebhookConfiguration", "validate.runtime.kaito.sh", "/validate-configmap"),
    ):
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": f"{ns}-{kind.lower()[:8]}"},
            "webhooks": [hook(name, path)],
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(config))


def _publish(cluster: Cluster, name: str, cert_dir: Path) -> int:
    """Issue a new pair from the cluster CA and write it over the served files (cert, then key:
    in between, the files on disk do not match, as during any real rotation)."""
    cert, key = cluster.serving_cert(name)
    shutil.copyfile(cert, cert_dir / "tls.crt")
    shutil.copyfile(key, cert_dir / "tls.key")
    return int(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number)


@pytest.fixture
async def hooked(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> AsyncIterator[Hooked]:
    cert_dir = tmp_path / "serving-certs"
    cert_dir.mkdir()
    cert_name = f"rt-webhook-{namespace}"
    _publish(kube_cluster, cert_name, cert_dir)
    # Someone else holds the lease for an hour: this manager never leads, yet must serve admission.
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "webhook-test", "namespace": namespace},
        "spec": {
            "holderIdentity": "someone-else",
            "leaseDurationSeconds": 3600,
            "renewTime": now,
            "acquireTime": now,
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(lease))
    mgr = Manager(
        kube_cluster.client_configuration(),
        leader_election=LeaderElectionOptions(name="webhook-test", namespace=namespace, retry_period=0.5),
        health_probe_bind_address="127.0.0.1:0",
        metrics_bind_address="0",
        handle_signals=False,
    )
    server = WebhookServer(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(cert_dir), cert_poll_interval=0.2),
        metrics=mgr.metrics,
    )
    server.register("/validate-configmap", validate)
    server.register("/mutate-configmap", mutate)
    mgr.add(server)
    mgr.add_readyz_check("webhook", server.started_checker())
    task = asyncio.create_task(mgr.start())
    try:
        async with asyncio.timeout(60):
            await server.wait_started()
        assert server.bound_port is not None
        _install(kube_cluster, namespace, server.bound_port)
        yield Hooked(namespace, server, mgr, cert_dir, cert_name)
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kube_cluster.kubectl("delete", kind, f"{namespace}-{kind[:8]}", "--ignore-not-found")
        mgr.stop()
        await asyncio.wait_for(task, 60)


def _configmap(ns: str, name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data or {},
    }


async def test_apiserver_calls_the_runtime_webhook_on_a_non_leader(
    kube_cluster: Cluster, hooked: Hooked
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{hooked.manager.health_port}/readyz/webhook") as r,
    ):
        assert r.status == 200, await r.text()
    assert not hooked.manager.is_leader
    async with Client(kube_cluster.client_configuration(), max_throttle_retries=0) as client:
        made = await client.create(_configmap(hooked.ns, "plain", {"a": "b"}))
        assert made["metadata"]["labels"] == {LABEL: "true"}  # the JSONPatch, applied by the apiserver
        with pytest.raises(ApiError) as refused:
            await client.create(_configmap(hooked.ns, "nope", {"forbidden": "x"}))
        assert refused.value.status == 403
        assert "data key 'forbidden' is not allowed; remove it" in refused.value.message
    reg = hooked.manager.metrics.registry.get_sample_value
    # A denial is an answered call (HTTP 200); both objects went through both webhooks.
    for path in ("/validate-configmap", "/mutate-configmap"):
        assert reg("controller_runtime_webhook_requests_total", {"webhook": path, "code": "200"}) == 2
    assert not hooked.manager.is_leader


async def test_certificate_rotation_under_load_fails_no_admission_call(
    kube_cluster: Cluster, hooked: Hooked
) -> None:
    server, watcher = hooked.server, hooked.server.cert_watcher
    port = server.bound_port
    assert port is not None and kube_cluster.pki is not None
    first = watcher.serial
    # Record which certificate every TLS handshake is handed (the apiserver's included).
    base = watcher.server_context()
    pick = base.sni_callback
    assert pick is not None

    def spy(conn: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        pick(conn, name, ctx)
        assert watcher.serial is not None
        hooked.handshakes.append(watcher.serial)

    base.sni_callback = spy
    ok, failures, stop = [0], [], asyncio.Event()

    async def load(client: Client, worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            name = f"w{worker}-{i}-{uuid.uuid4().hex[:4]}"
            forbidden = i % 5 == 0
            try:
                made = await client.create(
                    _configmap(hooked.ns, name, {"forbidden": "1"} if forbidden else None)
                )
            except ApiError as exc:
                if forbidden and exc.status == 403 and "is not allowed" in exc.message:
                    ok[0] += 1
                else:
                    failures.append(f"{name}: {exc}")
                continue
            except Exception as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if forbidden or (made["metadata"].get("labels") or {}).get(LABEL) != "true":
                failures.append(f"{name}: admitted wrongly: {made['metadata']}")
            else:
                ok[0] += 1

    async with Client(kube_cluster.client_configuration(), max_throttle_retries=0) as client:
        workers = [asyncio.create_task(load(client, w)) for w in range(3)]
        try:
            await wait_for(lambda: ok[0] >= 30, "calls before the rotation")
            second = _publish(kube_cluster, hooked.cert_name, hooked.cert_dir)
            assert second != first
            await wait_for(lambda: watcher.serial == second, "the rotated certificate to load")
            calls_at_rotation = ok[0]
            # More concurrent calls than open connections: the apiserver must dial new ones.
            workers += [asyncio.create_task(load(client, w)) for w in range(3, 12)]
            await wait_for(lambda: second in hooked.handshakes, "an apiserver handshake with the new cert")
            await wait_for(lambda: ok[0] >= calls_at_rotation + 60, "calls after the rotation")
        finally:
            stop.set()
            await asyncio.gather(*workers)
    assert failures == []
    assert ok[0] >= 90
    # A fresh client is served the new certificate, verified against the unchanged CA bundle.
    ctx = ssl.create_default_context(cafile=str(kube_cluster.pki.ca_cert))
    _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        assert certificate_serial(w.get_extra_info("ssl_object").getpeercert(binary_form=True)) == second
    finally:
        w.close()
        await w.wait_closed()
    assert hooked.handshakes[0] == first  # handshakes before the rotation got the old one
