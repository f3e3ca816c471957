"""Workspace admission served by the runtime's webhook server and called by the real kube-apiserver.

CEL in the CRD covers what needs no catalog; the preset catalog and the GPU-memory check live only
in the webhook. Here the apiserver itself sends the AdmissionReview (to the kubebuilder-style path
of the object's version), so the response format, the JSONPatch of the defaulter, the TLS set-up
and the message a kubectl user sees are all the real thing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from workspace_webhooks import workspace_webhooks

from kaito.api.webhook import new_webhook_server
from kaito.envtest import Cluster
from kaito.runtime import WebhookServerOptions

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "inference" / "kaito_workspace_phi_3.yaml"


@pytest.fixture
async def webhook(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> AsyncIterator[str]:
    for f in sorted((ROOT / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in f.read_text():  # not the folder's kustomization.yaml
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/workspaces.kaito.sh")
    cert, key = kube_cluster.serving_cert("kaito-webhook")
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copyfile(cert, cert_dir / "tls.crt")
    shutil.copyfile(key, cert_dir / "tls.key")
    server = new_webhook_server(WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=str(cert_dir)))
    stop = asyncio.Event()
    task = asyncio.create_task(server.start(stop))
    async with asyncio.timeout(30):
        await server.wait_started()
    port = server.bound_port
    assert kube_cluster.pki is not None
    ca_bundle = base64.b64encode(kube_cluster.pki.ca_cert.read_bytes()).decode()

    def hooks(verb: str) -> list[dict[str, Any]]:
        return workspace_webhooks(verb, port, ca_bundle, namespace)

    name = f"kaito-validate-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": hooks("validate"),
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"kaito-mutate-{namespace}"},
        "webhooks": hooks("mutate"),
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(mutating))
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        yield namespace
    finally:
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")
        kube_cluster.kubectl(
            "delete", "mutatingwebhookconfiguration", f"kaito-mutate-{namespace}", "--ignore-not-found"
        )
        stop.set()
        await asyncio.wait_for(task, 30)


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


async def test_apiserver_applies_the_defaulting_patch_for_both_versions(
    kube_cluster: Cluster, webhook: str
) -> None:
    ns = webhook
    for version in ("v1alpha1", "v1beta1"):
        ws = _workspace("phi-3-mini-4k-instruct")
        ws["apiVersion"] = f"kaito.sh/{version}"
        ws["metadata"]["name"] = f"lower-{version}"
        ws["resource"]["instanceType"] = "standard_nc6s_v3"
        made = await asyncio.to_thread(
            kube_cluster.kubectl,
            "create",
            "-n",
            ns,
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(ws),
            check=False,
        )
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["resource"]["instanceType"] == "Standard_NC6s_v3"
        bad = _workspace("no-such-model")
        bad["apiVersion"] = f"kaito.sh/{version}"
        bad["metadata"]["name"] = f"bad-{version}"
        refused = await asyncio.to_thread(
            kube_cluster.kubectl, "create", "-n", ns, "-f", "-", input=json.dumps(bad), check=False
        )
        assert refused.returncode != 0 and "unknown preset 'no-such-model'" in refused.stderr
