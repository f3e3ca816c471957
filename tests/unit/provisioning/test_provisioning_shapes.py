"""The objects kaito's provisioning writes: NodeClaims as upstream Kaito v0.12 shapes them,
per-Workspace NodePools, agent pools, and the nodes the clouds make. Pure functions, no cluster."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kaito.api.nodeclaim import NodeClaim, NodePool
from kaito.nodes import NodeRequest, claim_instance_type, claim_node_labels, claim_taints, node_shape
from kaito.provisioners.cloud.aks import AksCloudProvider, AksOptions, pool_name
from kaito.provisioners.cloud.kwok import KwokCloudProvider
from kaito.provisioners.gpu_provisioner import claim_failure, nodeclaim_manifest, nodeclaim_name
from kaito.provisioners.karpenter import nodepool_manifest, nodepool_name


def request(**kw: Any) -> NodeRequest:
    base: dict[str, Any] = {
        "workspace": "workspace-phi-3-mini",
        "namespace": "default",
        "uid": "u1",
        "instance_type": "Standard_NC6s_v3",
        "count": 1,
        "label_selector": {"matchLabels": {"apps": "phi-3"}},
    }
    base.update(kw)
    return NodeRequest(**base)


def test_nodeclaim_is_shaped_like_upstream_on_azure() -> None:
    claim = nodeclaim_manifest(request(storage_gib=150))
    meta, spec = claim["metadata"], claim["spec"]
    assert re.fullmatch(r"ws[0-9a-f]{9}", meta["name"])
    assert meta["labels"] == {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/workspace": "workspace-phi-3-mini",
        "kaito.sh/workspacenamespace": "default",
        "apps": "phi-3",
    }
    assert meta["annotations"] == {
        "karpenter.sh/do-not-disrupt": "true",
        "kaito.sh/node-image-family": "ubuntu",
    }
    assert spec["nodeClassRef"] == {
        "group": "kaito.sh",
        "kind": "KaitoNodeClass",
        "name": "default",
    }
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert spec["requirements"] == [
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
        {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": ["Standard_NC6s_v3"],
        },
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": ["Standard_NC6s_v3"]},
    ]
    assert spec["resources"] == {"requests": {"ephemeral-storage": "150Gi"}}
    NodeClaim.from_manifest(claim)  # the API model accepts it


def test_nodeclaim_on_aws_and_defaults() -> None:
    claim = nodeclaim_manifest(
        request(
            instance_type="p4d.24xlarge", annotations={"kaito.sh/node-image-family": "AzureLinux"}
        ),
        cloud="aws",
    )
    assert claim["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"
    assert claim["spec"]["requirements"][-1] == {
        "key": "karpenter.k8s.aws/instance-gpu-count",
        "operator": "Gt",
        "values": ["0"],
    }
    assert claim["spec"]["resources"]["requests"]["ephemeral-storage"] == "1024Gi"
    assert claim["metadata"]["annotations"]["kaito.sh/node-image-family"] == "AzureLinux"


def test_nodeclaim_needs_an_instance_type_and_names_differ() -> None:
    with pytest.raises(ValueError, match=r"resource\.instanceType"):
        nodeclaim_manifest(request(instance_type=None))
    assert nodeclaim_name("ns", "a", 1.0) != nodeclaim_name("ns", "a", 2.0)


def test_nodepool_name_fits_63_and_stays_unique() -> None:
    assert nodepool_name("default", "ws") == "default-ws"
    long_a = nodepool_name("n" * 40, "a" * 40)
    long_b = nodepool_name("n" * 40, "a" * 39 + "b")
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b


def test_nodepool_is_static_capacity_with_the_instance_type() -> None:
    pool = nodepool_manifest(request(count=3))
    spec = pool["spec"]
    assert spec["replicas"] == 3
    assert spec["template"]["spec"]["requirements"] == [
        {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": ["Standard_NC6s_v3"],
        }
    ]
    assert spec["template"]["spec"]["taints"] == [
        {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
    ]
    labels = spec["template"]["metadata"]["labels"]
    assert labels["karpenter.kaito.sh/workspace-name"] == "workspace-phi-3-mini"
    assert labels["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert labels["apps"] == "phi-3"
    assert spec["disruption"] == {
        "consolidateAfter": "0s",
        "budgets": [{"nodes": "1", "reasons": ["Drifted"]}],
    }
    NodePool.from_manifest(pool)


def test_claim_helpers_read_what_the_node_needs() -> None:
    claim = nodeclaim_manifest(request())
    claim["metadata"]["name"] = "ws0123456789"
    assert claim_instance_type(claim) == "Standard_NC6s_v3"
    labels = claim_node_labels(claim)
    assert labels["kaito.sh/nodeclaim"] == "ws0123456789"
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC6s_v3"
    assert labels["apps"] == "phi-3"
    assert claim_taints(claim) == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    claim["spec"]["requirements"] = []
    with pytest.raises(ValueError, match="instance type"):
        claim_instance_type(claim)


def test_claim_failure_reports_the_cloud_code() -> None:
    claim: dict[str, Any] = {
        "status": {
            "conditions": [
                {
                    "type": "Launched",
                    "status": "False",
                    "reason": "QuotaExceeded",
                    "message": "over the limit",
                },
            ]
        }
    }
    assert claim_failure(claim) == "QuotaExceeded: over the limit"
    assert claim_failure({"status": {}}) == ""


@pytest.mark.parametrize(
    ("sku", "gpus", "cpu"),
    [("Standard_NC6s_v3", 1, 6), ("Standard_NC96ads_A100_v4", 4, 96), ("unknown-size", 0, 8)],
)
def test_node_shape_from_the_sku_table(sku: str, gpus: int, cpu: int) -> None:
    shape = node_shape(sku)
    assert (shape.gpus, shape.cpu) == (gpus, cpu)
    assert ("nvidia.com/gpu" in shape.capacity()) == bool(gpus)


def test_kwok_node_carries_claim_labels_taints_and_gpus() -> None:
    claim = nodeclaim_manifest(request())
    node = KwokCloudProvider(client=None).node_manifest(claim)  # type: ignore[arg-type]
    name = claim["metadata"]["name"]
    assert node["metadata"]["name"] == name
    assert node["spec"]["providerID"] == f"kwok://{name}"
    assert node["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "1"
    assert node["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-phi-3-mini"


def test_aks_pool_names_follow_aks_rules() -> None:
    assert pool_name("ws0123456ab") == "ws0123456ab"
    hashed = pool_name("default-very-long-claim-name")
    assert re.fullmatch(r"[a-z][a-z0-9]{0,11}", hashed)
    assert hashed == pool_name("default-very-long-claim-name")


async def test_aks_agent_pool_body_from_a_claim() -> None:
    class Token:
        async def get_token(
            self, *scopes: str, **kw: Any
        ) -> Any:  # never called: no request is sent
            raise AssertionError("no request expected")

    aks = AksCloudProvider(
        client=None,  # type: ignore[arg-type]
        settings=AksOptions(subscription_id="s", resource_group="rg", cluster_name="c"),
        credential=Token(),
    )
    claim = nodeclaim_manifest(request())
    body = aks.agent_pool(claim).as_dict()
    props = body["properties"]
    assert props["count"] == 1 and props["vmSize"] == "Standard_NC6s_v3" and props["mode"] == "User"
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["nodeLabels"]["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert not any(
        k.startswith(("kubernetes.io/", "node.kubernetes.io/")) for k in props["nodeLabels"]
    )
    assert props["tags"]["kaito-nodeclaim"] == claim["metadata"]["name"]
    await aks.close()


def test_user_match_labels_never_override_kaito_labels_on_a_claim() -> None:
    """issue 21 hole 1 (provisioner half): a matchLabels entry naming one of kaito's own keys
    (another Workspace, another pool) loses to kaito's value, so the backend, the orphan sweep
    and the node-provisioner still find the claim as this Workspace's."""
    hostile = {
        "matchLabels": {
            "apps": "phi-3",
            "kaito.sh/workspace": "someone-else",
            "kaito.sh/workspacenamespace": "elsewhere",
            "karpenter.sh/nodepool": "not-kaito",
        }
    }
    labels = nodeclaim_manifest(request(label_selector=hostile))["metadata"]["labels"]
    assert labels == {
        "apps": "phi-3",
        "kaito.sh/workspace": "workspace-phi-3-mini",
        "kaito.sh/workspacenamespace": "default",
        "karpenter.sh/nodepool": "kaito",
    }


def test_user_match_labels_never_override_kaito_labels_on_a_nodepool() -> None:
    hostile = {
        "matchLabels": {
            "apps": "phi-3",
            "kaito.sh/workspace": "someone-else",
            "kaito.sh/workspacenamespace": "elsewhere",
            "karpenter.sh/nodepool": "not-this-pool",
            "karpenter.kaito.sh/managed-by": "me",
        }
    }
    pool = nodepool_manifest(request(label_selector=hostile))
    labels = pool["spec"]["template"]["metadata"]["labels"]
    assert labels["apps"] == "phi-3"
    assert labels["kaito.sh/workspace"] == "workspace-phi-3-mini"
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["karpenter.kaito.sh/managed-by"] == "kaito"
    # Karpenter writes karpenter.sh/nodepool (the pool's name, which the pods select on) itself.
    assert "karpenter.sh/nodepool" not in labels
