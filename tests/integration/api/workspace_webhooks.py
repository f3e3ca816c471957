"""The admission webhook entries a test registers for kaito's Workspace webhook server: one per
served version at its own path (as kubebuilder generates them), limited to the test's namespace
because the session cluster is shared with other tests."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kaito.api.validation import ValidationOptions
from kaito.api.webhook import new_webhook_server
from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.operator.wiring import webhook_validation_options
from kaito.runtime import WebhookServer, WebhookServerOptions


@asynccontextmanager
async def serving_webhook(
    kube_cluster: Cluster, folder: Path, validation: ValidationOptions | None = None
) -> AsyncIterator[tuple[WebhookServer, str]]:
    """kaito's webhook server on loopback with a serving certificate the cluster CA signed;
    yields the started server and the caBundle to register it with, and stops it on exit."""
    cert, key = kube_cluster.serving_cert("kaito-webhook")
    cert_dir = folder / "certs"
    cert_dir.mkdir(exist_ok=True)
    shutil.copyfile(cert, cert_dir / "tls.crt")
    shutil.copyfile(key, cert_dir / "tls.key")
    server = new_webhook_server(
        WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(cert_dir)), validation
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    try:
        async with asyncio.timeout(30):
            await server.wait_started()
        assert kube_cluster.pki is not None
        yield server, base64.b64encode(kube_cluster.pki.ca_cert.read_bytes()).decode()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def workspace_webhooks(
    verb: str, port: int, ca_bundle: str, namespace: str, *, timeout_seconds: int = 10
) -> list[dict[str, Any]]:
    """``verb`` is ``validate`` or ``mutate``; the server listens on 127.0.0.1:``port``."""
    return [
        {
            "name": f"{verb}-{version}.workspace.kaito.sh",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/{verb}-kaito-sh-{version}-workspace",
                "caBundle": ca_bundle,
            },
            "rules": [
                {
                    "apiGroups": ["kaito.sh"],
                    "apiVersions": [version],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["workspaces"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds,
        }
        for version in ("v1alpha1", "v1beta1")
    ]


REPO = Path(__file__).resolve().parents[3]


def install_crds(kube_cluster: Cluster) -> None:
    """kaito's CRDs from config/crd, applied server-side and Established."""
    for f in sorted((REPO / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in f.read_text():
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/workspaces.kaito.sh")


@asynccontextmanager
async def operator_webhook(
    kube_cluster: Cluster, namespace: str, folder: Path, operator: OperatorOptions, name: str
) -> AsyncIterator[None]:
    """kaito's validating webhook, judging by what ``operator``'s options give it through the
    operator's own wiring, registered (as ValidatingWebhookConfiguration ``name``) for
    ``namespace`` only."""
    async with serving_webhook(kube_cluster, folder, webhook_validation_options(operator)) as (
        server,
        ca_bundle,
    ):
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": workspace_webhooks("validate", server.bound_port, ca_bundle, namespace),
        }
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        try:
            yield
        finally:
            kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


async def kubectl_create(kube_cluster: Cluster, namespace: str, obj: dict[str, Any]) -> Any:
    """``kubectl create`` of ``obj``, in a thread: the webhook answers in this event loop."""
    return await asyncio.to_thread(
        kube_cluster.kubectl, "create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
    )
