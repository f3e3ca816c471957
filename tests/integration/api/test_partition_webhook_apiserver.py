"""``resource.partition`` as a kubectl user meets it: the real kube-apiserver calls kaito's webhook,
built from ``OperatorOptions`` through the operator's own wiring, so the test also proves that
``--feature-gates enableMIG=true`` and the node-provisioner backend reach admission."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from workspace_webhooks import install_crds, kubectl_create, operator_webhook

from kaito.envtest import Cluster
from kaito.operator import OperatorOptions
from kaito.operator.featuregates import parse_feature_gates
from kaito.operator.options import ProvisionerOptions

pytestmark = pytest.mark.cluster


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
    install_crds(kube_cluster)


def hooked(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, operator: OperatorOptions
) -> AbstractAsyncContextManager[None]:
    """kaito's validating webhook, with the operator's options, registered for ``namespace``."""
    return operator_webhook(kube_cluster, namespace, tmp_path, operator, f"kaito-partition-{namespace}")


_create = kubectl_create


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
