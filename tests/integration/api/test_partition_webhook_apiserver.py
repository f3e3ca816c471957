"""``resource.partition`` as a kubectl user meets it: the real kube-apiserver calls kaito's webhook,
built from ``OperatorOptions`` through the operator's own wiring, so the test also proves that
``--feature-gates enableMIG=true`` and the node-provisioner backend reach admission."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from workspace_webhooks import serving_webhook, workspace_webhooks

from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.operator.featuregates import parse_feature_gates
from kaito.operator.options import ProvisionerOptions
from kaito.operator.wiring import webhook_validation_options

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]


def mig_workspace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "labelSelector": {"matchLabels": {"apps": "mig"}},
            "partition": {"mode": "mig", "profile": "3g.40gb"},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


@pytest.fixture
async def crds(kube_cluster: Cluster) -> None:
    for f in sorted((ROOT / "config" / "crd").glob("*.yaml")):
        if "kind: CustomResourceDefinition" in f.read_text():
            kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/workspaces.kaito.sh")


@asynccontextmanager
async def hooked(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, operator: OperatorOptions
) -> AsyncIterator[None]:
    """kaito's validating webhook, with the operator's options, registered for ``namespace``."""
    async with serving_webhook(kube_cluster, tmp_path, webhook_validation_options(operator)) as (
        server,
        ca_bundle,
    ):
        name = f"kaito-partition-{namespace}"
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


async def _create(kube_cluster: Cluster, namespace: str, obj: dict[str, Any]) -> Any:
    # The webhook answers in this event loop, so kubectl runs in a thread.
    return await asyncio.to_thread(
        kube_cluster.kubectl, "create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
    )


async def test_mig_needs_its_gate_and_byo_nodes(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, crds: None
) -> None:
    async with hooked(kube_cluster, namespace, tmp_path, OperatorOptions()):  # byo, gates off
        refused = await _create(kube_cluster, namespace, mig_workspace("off"))
    assert refused.returncode != 0
    assert "resource.partition.mode" in refused.stderr and "--feature-gates enableMIG=true" in refused.stderr

    gates = parse_feature_gates("enableMIG=true")
    claims = OperatorOptions(feature_gates=gates, provisioner=ProvisionerOptions(name="gpu-provisioner"))
    async with hooked(kube_cluster, namespace, tmp_path, claims):
        refused = await _create(kube_cluster, namespace, mig_workspace("claims"))
    assert refused.returncode != 0
    assert "GPU partitioning needs bring-your-own nodes" in refused.stderr

    async with hooked(kube_cluster, namespace, tmp_path, OperatorOptions(feature_gates=gates)):
        admitted = await _create(kube_cluster, namespace, mig_workspace("on"))
    assert admitted.returncode == 0, admitted.stderr
