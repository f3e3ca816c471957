"""InferenceSet admission called by the real kube-apiserver: the webhook validates the Workspace
the template makes and the refusal names the field under ``spec.template``; the CRD's own schema
holds ``replicas >= 0`` without the webhook; both versions are served with the scale subresource.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from workspace_webhooks import serving_webhook

from kaito.envtest import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]


def _hooks(port: int, ca_bundle: str, namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "name": f"validate-{version}.inferenceset.kaito.sh",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/validate-kaito-sh-{version}-inferenceset",
                "caBundle": ca_bundle,
            },
            "rules": [
                {
                    "apiGroups": ["kaito.sh"],
                    "apiVersions": [version],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["inferencesets"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }
        for version in ("v1alpha1", "v1beta1")
    ]


@pytest.fixture
async def webhook(kube_cluster: Cluster, namespace: str, tmp_path: Path) -> AsyncIterator[str]:
    for f in sorted((ROOT / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in f.read_text():
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/inferencesets.kaito.sh")
    async with serving_webhook(kube_cluster, tmp_path) as (server, ca_bundle):
        name = f"kaito-iset-{namespace}"
        config = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": _hooks(server.bound_port, ca_bundle, namespace),
        }
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
        try:
            yield namespace
        finally:
            kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


def _set(version: str, preset: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": f"kaito.sh/{version}",
        "kind": "InferenceSet",
        "metadata": {"name": "hooked"},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": "x"}},
            "template": {
                "resource": {"instanceType": "Standard_NC6s_v3"},
                "inference": {"preset": {"name": preset}},
            },
        },
    }


async def _kubectl(cluster: Cluster, *args: str, body: dict[str, Any] | None = None) -> Any:
    # The webhook answers in this event loop, so kubectl runs in a thread.
    text = json.dumps(body) if body is not None else None
    return await asyncio.to_thread(cluster.kubectl, *args, input=text, check=False)


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
async def test_bad_template_is_refused_naming_spec_template(
    kube_cluster: Cluster, webhook: str, version: str
) -> None:
    ns = webhook
    bad = await _kubectl(kube_cluster, "create", "-n", ns, "-f", "-", body=_set(version, "no-such-model"))
    assert bad.returncode != 0
    assert "spec.template.inference.preset.name: unknown preset 'no-such-model'" in bad.stderr, bad.stderr
    assert "kaito presets list" in bad.stderr  # the validator's fix, so the webhook answered

    good = await _kubectl(
        kube_cluster, "create", "-n", ns, "-f", "-", body=_set(version, "phi-3-mini-4k-instruct")
    )
    assert good.returncode == 0, good.stderr
    # An update to a refused template is refused too; a change of model is not (it rolls).
    upd = await _kubectl(
        kube_cluster,
        "patch",
        "inferenceset",
        "hooked",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"template": {"metadata": {"annotations": {"kaito.sh/runtime": "tgi"}}}}}),
    )
    assert upd.returncode != 0
    assert "spec.template.metadata.annotations[kaito.sh/runtime]: 'tgi' is not a runtime" in upd.stderr
    other = await _kubectl(
        kube_cluster,
        "patch",
        "inferenceset",
        "hooked",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"template": {"inference": {"preset": {"name": "phi-3-mini-128k-instruct"}}}}}),
    )
    assert other.returncode == 0, other.stderr
    await _kubectl(kube_cluster, "delete", "inferenceset", "hooked", "-n", ns)


async def test_negative_replicas_refused_by_the_schema_and_scale_works(
    kube_cluster: Cluster, webhook: str
) -> None:
    ns = webhook
    neg = await _kubectl(
        kube_cluster, "create", "-n", ns, "-f", "-", body=_set("v1beta1", "phi-3-mini-4k-instruct", -1)
    )
    assert neg.returncode != 0 and "spec.replicas" in neg.stderr, neg.stderr
    ok = await _kubectl(
        kube_cluster, "create", "-n", ns, "-f", "-", body=_set("v1alpha1", "phi-3-mini-4k-instruct")
    )
    assert ok.returncode == 0, ok.stderr
    scaled = await _kubectl(kube_cluster, "scale", "-n", ns, "inferenceset/hooked", "--replicas=0")
    assert scaled.returncode == 0, scaled.stderr
    got = await _kubectl(kube_cluster, "get", "isets", "hooked", "-n", ns, "-o", "json")
    assert json.loads(got.stdout)["spec"]["replicas"] == 0
    below = await _kubectl(kube_cluster, "scale", "-n", ns, "inferenceset/hooked", "--replicas=-1")
    assert below.returncode != 0
