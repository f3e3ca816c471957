"""The validating webhook served over TLS and called by the real kube-apiserver.

CEL in the CRD covers what needs no catalog; the preset catalog and the GPU-memory check live only
in the webhook. Here the apiserver itself sends the AdmissionReview, so the response format, the
TLS set-up and the message a kubectl user sees are all the real thing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from kaito.api.webhook import create_app
from kaito.runtime.testing import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "inference" / "kaito_workspace_phi_3.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def webhook(kube_cluster: Cluster, namespace: str) -> AsyncIterator[str]:
    for f in sorted((ROOT / "config" / "crd").glob("*.yaml")):
        kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/workspaces.kaito.sh")
    cert, key = kube_cluster.serving_cert("kaito-webhook")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(),
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "webhook server failed to start"
        await asyncio.sleep(0.05)
    assert kube_cluster.pki is not None
    name = f"kaito-validate-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "validate.workspace.kaito.sh",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(kube_cluster.pki.ca_cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["kaito.sh"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["workspaces"],
                    }
                ],
                # Only this test's namespace: the session cluster is shared with other tests.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        yield namespace
    finally:
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _workspace(preset: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "hooked"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": preset}},
    }


async def test_apiserver_calls_webhook_which_rejects_unknown_preset(
    kube_cluster: Cluster, webhook: str
) -> None:
    ns = webhook
    # The webhook answers asynchronously in this event loop, so kubectl runs in a thread.
    bad = await asyncio.to_thread(
        kube_cluster.kubectl,
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(_workspace("no-such-model")),
        check=False,
    )
    assert bad.returncode != 0
    assert "inference.preset.name: unknown preset 'no-such-model'" in bad.stderr
    assert "kaito presets list" in bad.stderr

    # The README's Workspace passes the same webhook unchanged.
    good = await asyncio.to_thread(kube_cluster.kubectl, "apply", "-n", ns, "-f", str(SEED), check=False)
    assert good.returncode == 0, good.stderr
    # An immutable field on update is refused (CEL and the webhook both hold this rule).
    patch = json.dumps({"resource": {"instanceType": "Standard_NC24ads_A100_v4"}})
    upd = await asyncio.to_thread(
        kube_cluster.kubectl,
        "patch",
        "workspace",
        "workspace-phi-3-mini",
        "-n",
        ns,
        "--type=merge",
        "-p",
        patch,
        check=False,
    )
    assert upd.returncode != 0 and "instanceType" in upd.stderr and "immutable" in upd.stderr

    # Proof that the webhook, not CEL, refused the preset: without it the same object is stored.
    kube_cluster.kubectl("delete", "validatingwebhookconfiguration", f"kaito-validate-{ns}")
    unhooked = await asyncio.to_thread(
        kube_cluster.kubectl,
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(_workspace("no-such-model")),
        check=False,
    )
    assert unhooked.returncode == 0, unhooked.stderr
