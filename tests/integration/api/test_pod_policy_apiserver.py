"""The Workspace pod policy (issue 21, hole 7) as a kubectl user meets it: the real kube-apiserver
calls kaito's webhook, which refuses a privileged inference template by default, names the field
and the way to allow it, and admits the same Workspace when the operator's policy allows it.

The webhook's options come from ``OperatorOptions`` through the operator's own wiring function, so
the test also proves that ``--allow-privileged-pods`` reaches admission.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from workspace_webhooks import install_crds, kubectl_create, operator_webhook

from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.operator.options import WebhookOptions

pytestmark = pytest.mark.cluster


PRIVILEGED: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "privileged"},
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "x"}}},
    "inference": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "mcr.microsoft.com/aks/kaito/server:0.1",
                        "securityContext": {"privileged": True},
                    }
                ]
            }
        }
    },
}


@pytest.fixture
async def crds(kube_cluster: Cluster) -> None:
    install_crds(kube_cluster)


def hooked(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, operator: OperatorOptions
) -> AbstractAsyncContextManager[None]:
    """kaito's validating webhook, with the operator's options, registered for ``namespace``."""
    return operator_webhook(kube_cluster, namespace, tmp_path, operator, f"kaito-podpolicy-{namespace}")


_create = kubectl_create


async def test_privileged_template_is_refused_by_default_and_admitted_when_allowed(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, crds: None
) -> None:
    async with hooked(kube_cluster, namespace, tmp_path, OperatorOptions()):
        refused = await _create(kube_cluster, namespace, PRIVILEGED)
    assert refused.returncode != 0
    assert "inference.template.spec.containers[0].securityContext.privileged" in refused.stderr
    assert "--allow-privileged-pods" in refused.stderr and "refusePrivilegedPods=false" in refused.stderr

    async with hooked(
        kube_cluster,
        namespace,
        tmp_path,
        OperatorOptions(webhook=WebhookOptions(refuse_privileged_pods=False)),
    ):
        admitted = await _create(kube_cluster, namespace, PRIVILEGED)
    assert admitted.returncode == 0, admitted.stderr
    stored = json.loads(
        kube_cluster.kubectl("get", "workspace", "privileged", "-n", namespace, "-o", "json").stdout
    )
    # Gone before the namespace is: no later test's operator should find (and finalize) it.
    kube_cluster.kubectl("delete", "workspace", "privileged", "-n", namespace, "--wait=true")
    container = stored["inference"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": True}
