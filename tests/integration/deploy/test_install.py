"""config/default installed into a real, audited cluster; ``kaito controller`` run as its
ServiceAccount (a TokenRequest token, nothing else); the seed Workspace to Ready and deleted; then
the audit log proves least privilege: not one 403, and every granted verb used or documented.

The webhook is served by that same process with certificates it made itself: the apiserver calls
it through the generated configurations (``clientConfig.service`` swapped for the loopback URL,
the one change an out-of-cluster run needs), a bad Workspace is refused with the validator's
message, and the serving certificate rotates (forced 60 s lifetime) under a steady stream of
admission calls, none of which fails.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from deploy_helpers import (
    DOCS,
    NAMESPACE,
    REPO,
    SA,
    SA_USER,
    WEBHOOK_KINDS,
    ControllerProcess,
    documented_grants,
    free_port,
    grants_for,
    helm_install_objects,
    install,
    kubectl_binary,
    kustomize,
    read_audit,
    service_account_kubeconfig,
)

from kaito.api.workspace.validation import validate_workspace
from kaito.envtest import Cluster
from kaito.envtest.helm import ensure_helm
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import GVK, Client, InvalidError, NotFoundError

WORKSPACE = GVK("kaito.sh", "v1beta1", "Workspace")
WS_ALPHA = GVK("kaito.sh", "v1alpha1", "Workspace")
NODE = GVK("", "v1", "Node")
STS = GVK("apps", "v1", "StatefulSet")
SEED = REPO / "tests" / "unit" / "api" / "seed" / "phi3_inference.yaml"
CERT_LIFETIME = 60  # seconds: rotation is due after 40


async def wait_for(check: Any, what: str, timeout: float = 240.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def served_serial(port: int) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return int(x509.load_pem_x509_certificate(pem.encode()).serial_number)


def ws_manifest(name: str, ns: str, instance_type: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns},
        "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": labels}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def ready(ws: dict[str, Any] | None) -> bool:
    conds = ((ws or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "WorkspaceReady" and c["status"] == "True" for c in conds)


@pytest.mark.parametrize("source", ["kustomize", "helm"])
async def test_install_runs_least_privilege_and_serves_its_webhook(
    audited_cluster: Cluster, tmp_path: Path, source: str
) -> None:
    cluster = audited_cluster
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    ns = f"seed-{source}"
    if source == "kustomize":
        objects = kustomize(REPO / "config" / "default", kubectl_binary(cluster))
    else:
        objects = helm_install_objects(str(ensure_helm()))
    port = free_port()
    deployment = install(cluster, objects, port)

    # The hardened Deployment is admissible as it stands in a namespace enforcing the
    # "restricted" Pod Security level (server-side dry run: no warning, no refusal).
    dry = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment), check=False
    )
    assert dry.returncode == 0 and "PodSecurity" not in dry.stderr, dry.stderr

    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "sa.kubeconfig", NAMESPACE, SA)
    assert "client-certificate" not in kubeconfig.read_text()
    ctrl = ControllerProcess(
        kubeconfig,
        tmp_path,
        "controller",
        [
            "--leader-elect",
            f"--leader-election-namespace={NAMESPACE}",
            "--node-provisioner=byo",
            "--feature-gates=vLLM=true",
            "--log-level=info",
            "--webhook",
            f"--webhook-port={port}",
            f"--webhook-cert-dir={tmp_path / 'certs'}",
            f"--webhook-namespace={NAMESPACE}",
            "--webhook-host=127.0.0.1",
            f"--webhook-cert-validity={CERT_LIFETIME}",
        ],
    )
    figures: dict[str, Any] = {}
    async with Client(cluster.client_configuration(), user_agent="kaito-install-test") as admin:
        ctrl.start()
        try:
            await wait_for(ctrl.ready, "the controller ready")
            await wait_for(lambda: ctrl.metric("leader_election_master_status") == 1, "leadership")

            async def bundles_patched() -> bool:
                for kind in WEBHOOK_KINDS:
                    name = (
                        "kaito-"
                        + ("validating" if kind.startswith("V") else "mutating")
                        + "-webhook-configuration"
                    )
                    cfg = await admin.get(GVK("admissionregistration.k8s.io", "v1", kind), name, cached=False)
                    if not all(h["clientConfig"].get("caBundle") for h in cfg["webhooks"]):
                        return False
                return True

            await wait_for(bundles_patched, "caBundle in both webhook configurations")
            secret = await admin.get(
                GVK("", "v1", "Secret"), "kaito-webhook-server-cert", NAMESPACE, cached=False
            )
            assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}

            await admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

            # A bad Workspace is refused by the apiserver with the validator's own message.
            bad = ws_manifest("bad", ns, "Standard_NC6s_v3", {"apps": "x"})
            bad["inference"]["preset"]["name"] = "no-such-model"
            expected = validate_workspace(bad).message()
            assert expected
            refused = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(bad), check=False)
            assert refused.returncode != 0 and expected in refused.stderr, refused.stderr
            with pytest.raises(InvalidError) as denied:
                await admin.create(bad)
            assert (
                'admission webhook "vworkspace-v1alpha1.kaito.sh" denied the request' in denied.value.message
            )
            assert expected in denied.value.message
            # The webhook reads the inference ConfigMap with the operator's least-privilege client
            # (a list: its role has no get on ConfigMaps); a 403 would show as "could not read".
            configured = ws_manifest("configured", ns, "Standard_NC6s_v3", {"apps": "x"})
            configured["inference"]["config"] = "no-such-config"
            missing = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(configured), check=False)
            assert missing.returncode != 0, missing.stderr
            assert f"ConfigMap 'no-such-config' not found in namespace '{ns}'" in missing.stderr

            # Admission calls all along, through the rotation: each must be defaulted (the
            # mutating webhook answered) and admitted (the validating one did).
            calls: Counter[str] = Counter()
            failures: list[str] = []
            serials: list[int] = []
            calls_at_rotation: list[int] = []
            latencies: list[float] = []
            stop = asyncio.Event()

            async def probe() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    body = ws_manifest(f"probe-{i}", ns, "standard_nc6s_v3", {"apps": "probe"})
                    t0 = time.monotonic()
                    try:
                        got = await admin.create(body, dry_run=True)
                        latencies.append(time.monotonic() - t0)
                        if got["resource"]["instanceType"] != "Standard_NC6s_v3":
                            failures.append(f"not defaulted: {got['resource']}")
                        calls["ok"] += 1
                    except Exception as exc:  # every failure is the finding
                        failures.append(f"{type(exc).__name__}: {exc}")
                    try:
                        serial = await asyncio.to_thread(served_serial, port)
                    except (OSError, ssl.SSLError) as exc:  # a handshake that fails is a finding
                        failures.append(f"TLS handshake: {type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.5)
                        continue
                    if not serials or serials[-1] != serial:
                        serials.append(serial)
                        calls_at_rotation.append(calls["ok"])
                    await asyncio.sleep(0.5)

            prober = asyncio.create_task(probe())

            # The seed's flow: a BYO kwok GPU node, the seed Workspace, WORKSPACEREADY True.
            await admin.create(gpu_node_manifest("gpu-seed", "Standard_NC6s_v3", {"apps": "phi-3"}))
            cluster.kubectl("apply", "-n", ns, "-f", str(SEED))

            async def seed_ready() -> bool:
                assert "403 Forbidden" not in ctrl.log_tail(200), "the controller was refused a request"
                return ready(await admin.get(WS_ALPHA, "workspace-phi-3-mini", ns, cached=False))

            started = time.monotonic()
            await wait_for(seed_ready, "the seed Workspace WorkspaceReady=True")
            figures["seconds_to_ready"] = round(time.monotonic() - started, 1)
            row = cluster.kubectl("get", "workspace", "-n", ns, "--no-headers").stdout.split()
            assert row[:2] == ["workspace-phi-3-mini", "Standard_NC6s_v3"] and row[4] == "True", row

            # Delete: the controller removes what it made, then its finalizer.
            cluster.kubectl("delete", "workspace", "workspace-phi-3-mini", "-n", ns, "--wait=false")

            async def gone() -> bool:
                try:
                    await admin.get(WS_ALPHA, "workspace-phi-3-mini", ns, cached=False)
                    return False
                except NotFoundError:
                    return not await admin.list(STS, ns, cached=False)

            await wait_for(gone, "the Workspace and its StatefulSet gone")

            # Keep calling until the serving certificate has rotated and calls went on after it.
            await wait_for(
                lambda: len(serials) >= 2 and calls["ok"] >= calls_at_rotation[1] + 5,
                "a rotated serving certificate and admission calls after it",
                timeout=4 * CERT_LIFETIME,
            )
            stop.set()
            await prober
            assert not failures, failures[:5]
            assert calls_at_rotation[1] >= 3, calls_at_rotation  # calls before the rotation too
            figures["admission_latency_max_s"] = round(max(latencies), 2)
            figures["admission_calls_during_rotation"] = calls["ok"]
            figures["serving_certificates_seen"] = len(serials)
        finally:
            t0 = time.monotonic()
            code = ctrl.stop(signal.SIGTERM, timeout=60)
            figures["shutdown_s"] = round(time.monotonic() - t0, 1)
            for kind in WEBHOOK_KINDS:  # leave the cluster usable for the next test
                cluster.kubectl("delete", kind.lower(), "--all", check=False)
            # ... and fresh for the next install: its own CA Secret and Lease to create.
            cluster.kubectl(
                "delete", "secret", "kaito-webhook-server-cert", "-n", NAMESPACE, "--ignore-not-found"
            )
            cluster.kubectl("delete", "lease", "--all", "-n", NAMESPACE, "--ignore-not-found")
            cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
            with_node = await admin.list(NODE, cached=False)
            for node in with_node:
                await admin.delete(NODE, node["metadata"]["name"], ignore_not_found=True)
    assert code == 0, ctrl.log_tail()
    # Graceful: well inside the Deployment's terminationGracePeriodSeconds.
    assert figures["shutdown_s"] < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    # ---- the audit log
    events, requests = read_audit(cluster.audit_log, SA_USER, since)
    assert requests, "no audit events for the controller's ServiceAccount"
    forbidden = [
        f"{e['verb']} {e['requestURI']}" for e in events if (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert not forbidden, forbidden
    grants = grants_for(objects, NAMESPACE, SA)
    used = {g for g in grants if any(r.allowed_by(g) for r in requests)}
    unused = [g for g in grants if g not in used]
    documented = documented_grants(DOCS.read_text())
    missing_rows = sorted({g.label() for g in grants if (g.group, g.resource, g.verb) not in documented})
    assert not missing_rows, f"grants missing from the permissions table in {DOCS}: {missing_rows}"
    undocumented = sorted(
        g.label() for g in unused if not documented[(g.group, g.resource, g.verb)].strip("- ")
    )
    assert not undocumented, f"granted, never used in the flow, and no reason in {DOCS}: {undocumented}"
    figures.update(
        requests=len(requests),
        forbidden=len(forbidden),
        grants=len(grants),
        grants_used=len(used),
        grants_unused_documented=sorted(g.label() for g in unused),
        by_verb=dict(Counter(r.verb for r in requests)),
    )
    print(f"AUDIT {source} " + json.dumps(figures, sort_keys=True))
