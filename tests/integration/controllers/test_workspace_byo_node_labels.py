"""A bring-your-own Workspace that names no instance type is sized from the GPU Feature Discovery
labels of the node its selector matches (nvidia.com/gpu.product, .count, .memory), as upstream
does: on the real control plane, with a kwok node carrying an AKS A100 node's labels."""

from __future__ import annotations

import pytest
import yaml
from workspace_helpers import STS, Running, apply_text, gpu_nodes, uniq, wait_condition

from kaito.api import names
from kaito.envtest import Cluster
from kaito.runtime import Client

pytestmark = pytest.mark.cluster


def byo_yaml(name: str, labels: dict[str, str], preset: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": name},
            "resource": {"labelSelector": {"matchLabels": labels}},  # no instanceType
            "inference": {"preset": {"name": preset}},
        }
    )


async def test_no_instance_type_is_sized_from_the_node_labels(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("gfd")}
    # two A100 80 GB per node: the 32B model needs both (tensor parallel 2), which only the
    # node's labels can tell the controller
    async with gpu_nodes(kclient, 1, labels, instance_type="Standard_NC48ads_A100_v4"):
        name = uniq("byo")
        apply_text(crds, namespace, byo_yaml(name, labels, "qwen2.5-coder-32b-instruct"))
        ws = await wait_condition(kclient, namespace, name, names.WORKSPACE_READY, "True")
        assert ws["status"]["workerNodes"]
        sts = await kclient.get(STS, name, namespace, cached=False)
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        cmd = container["command"]
        assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
        assert "--instance-type" not in cmd  # the server cannot plan it; the split is explicit
