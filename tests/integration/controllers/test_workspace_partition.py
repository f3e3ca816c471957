"""``resource.partition`` on the real control plane: a MIG-partitioned Workspace on a kwok node
that advertises ``nvidia.com/mig-3g.40gb`` slices (and no whole GPU) becomes Ready with its pod
asking for one slice, as upstream writes it; the CRD's rules refuse a malformed partition and a
change of it without any webhook."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import yaml
from workspace_helpers import NODE, POD, STS, Running, apply_text, uniq, wait_condition

from kaito.api import names
from kaito.envtest import Cluster, ClusterError
from kaito.provisioners.byo import gpu_node_manifest
from kaito.runtime import Client, NotFoundError

pytestmark = pytest.mark.cluster
SLICE = "nvidia.com/mig-3g.40gb"


def partitioned_yaml(name: str, labels: dict[str, str], partition: dict[str, object]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": name},
            "resource": {"labelSelector": {"matchLabels": labels}, "partition": partition},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
        }
    )


@contextlib.asynccontextmanager
async def mig_node(client: Client, labels: dict[str, str]) -> AsyncIterator[str]:
    """Two A100 80 GB cut into 3g.40gb slices ("mixed" strategy): 4 slices, 0 whole GPUs."""
    name = uniq("mig")
    await client.create(gpu_node_manifest(name, "Standard_NC48ads_A100_v4", labels, mig_profile="3g.40gb"))
    try:
        yield name
    finally:
        with contextlib.suppress(NotFoundError):
            await client.delete(NODE, name)


async def test_mig_workspace_runs_on_a_slice(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("mig")}
    async with mig_node(kclient, labels) as node:
        name = uniq("part")
        apply_text(crds, namespace, partitioned_yaml(name, labels, {"mode": "mig", "profile": "3g.40gb"}))
        ws = await wait_condition(kclient, namespace, name, names.WORKSPACE_READY, "True")
        assert ws["status"]["workerNodes"] == [node]
        sts = await kclient.get(STS, name, namespace, cached=False)
        spec = sts["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["resources"] == {"requests": {SLICE: "1"}, "limits": {SLICE: "1"}}
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert {"key": SLICE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        cmd = container["command"]
        assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
        # the scheduler placed it on the node by the slice it advertises
        [pod] = await kclient.list(POD, namespace, label_selector={names.LABEL_WORKSPACE: name}, cached=False)
        assert pod["spec"]["nodeName"] == node


async def test_an_inferenceset_gives_each_replica_the_slice(
    operator: Running, kclient: Client, crds: Cluster, namespace: str
) -> None:
    labels = {"apps": uniq("miset")}
    async with mig_node(kclient, labels):
        name = uniq("set")
        body = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "labelSelector": {"matchLabels": labels},
                "template": {
                    "resource": {"partition": {"mode": "mig", "profile": "3g.40gb"}},
                    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
                },
            },
        }
        apply_text(crds, namespace, yaml.safe_dump(body))
        try:
            child = f"{name}-0"
            ws = await wait_condition(kclient, namespace, child, names.WORKSPACE_READY, "True")
            assert ws["resource"]["partition"] == {"mode": "mig", "profile": "3g.40gb"}
            sts = await kclient.get(STS, child, namespace, cached=False)
            limits = sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert limits == {SLICE: "1"}
        finally:
            crds.kubectl("delete", "-n", namespace, "inferenceset", name, "--wait=false")


async def test_the_crd_refuses_a_malformed_or_changed_partition(crds: Cluster, namespace: str) -> None:
    labels = {"apps": uniq("crd")}
    bad = partitioned_yaml(uniq("bad"), labels, {"mode": "mig", "profile": "3g.40gb", "count": 1})
    with pytest.raises(ClusterError, match="mode mig needs profile"):
        apply_text(crds, namespace, bad)
    bad = partitioned_yaml(uniq("bad"), labels, {"mode": "mig", "profile": "big"})
    with pytest.raises(ClusterError, match="must be a MIG profile"):
        apply_text(crds, namespace, bad)
    name = uniq("keep")
    apply_text(crds, namespace, partitioned_yaml(name, labels, {"mode": "accelerator", "count": 1}))
    try:
        with pytest.raises(ClusterError, match=r"resource\.partition is immutable"):
            apply_text(crds, namespace, partitioned_yaml(name, labels, {"mode": "accelerator", "count": 2}))
    finally:
        crds.kubectl("delete", "-n", namespace, "workspace", name, "--wait=false")
