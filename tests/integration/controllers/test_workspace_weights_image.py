"""``kaito.sh/weights-image`` on the real control plane: the StatefulSet the apiserver accepts, the
claim kube-controller-manager makes from its template, and a Workspace that serves (kwok runs the
init container and the server as fakes; the pull itself is the real-node test's and the
registry tests' business)."""

from __future__ import annotations

from typing import Any

import pytest
from workspace_helpers import POD, STS, Running, apply_text, gpu_nodes, uniq, wait_condition, wait_for

from kaito.api import names
from kaito.contract.weights import WEIGHTS_DIR
from kaito.controllers.workspace.inference.weights import INIT_CONTAINER, VOLUME
from kaito.envtest import Cluster
from kaito.runtime import GVK, Client

pytestmark = pytest.mark.cluster
PVC = GVK("", "v1", "PersistentVolumeClaim")
IMAGE = "registry.example.com/weights/phi-3-mini:v1"


def _yaml(name: str, labels: dict[str, str], instance_type: str) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "annotations": {names.ANNOTATION_WEIGHTS_IMAGE: IMAGE}},
            "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": labels}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
        }
    )


async def test_weights_image_with_an_empty_dir_serves(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    label = {"apps": uniq("weights")}
    async with gpu_nodes(kclient, 1, label):
        apply_text(crds, namespace, _yaml("weights-ed", label, "Standard_NC6s_v3"))
        await wait_condition(kclient, namespace, "weights-ed", names.WORKSPACE_READY, "True")
        sts = await kclient.get(STS, "weights-ed", namespace, cached=False)
        spec = sts["spec"]["template"]["spec"]
        assert spec["initContainers"][0]["name"] == INIT_CONTAINER
        assert {"name": VOLUME, "emptyDir": {}} in spec["volumes"]
        cmd = spec["containers"][0]["command"]
        assert cmd[cmd.index("--model") + 1] == WEIGHTS_DIR
        pods = await kclient.list(
            POD, namespace, label_selector={names.LABEL_WORKSPACE: "weights-ed"}, cached=False
        )
        assert pods and pods[0]["spec"]["initContainers"][0]["name"] == INIT_CONTAINER


async def test_nvme_sku_gets_a_claim_per_pod_from_the_template(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    label = {"apps": uniq("nvme")}
    async with gpu_nodes(kclient, 1, label, instance_type="Standard_NC24ads_A100_v4"):
        apply_text(crds, namespace, _yaml("weights-nvme", label, "Standard_NC24ads_A100_v4"))

        async def claim() -> dict[str, Any] | None:
            for pvc in await kclient.list(PVC, namespace, cached=False):
                if pvc["metadata"]["name"] == f"{VOLUME}-weights-nvme-0":
                    return pvc
            return None

        pvc = await wait_for(claim, "the StatefulSet controller's claim for pod 0")
        assert pvc["spec"]["storageClassName"] == "kaito-local-nvme-disk"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        sts = await kclient.get(STS, "weights-nvme", namespace, cached=False)
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == VOLUME
