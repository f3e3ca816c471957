"""The seed's Workspaces parse unchanged; models round-trip to manifests; the CRD is current."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito.api import crd
from kaito.api.nodeclaim import NodeClaim, NodePool
from kaito.api.workspace import Workspace

SEED = Path(__file__).parent / "seed"
SEED_FILES = sorted(SEED.glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[3]


def test_there_are_four_seed_documents() -> None:
    assert len(SEED_FILES) == 4


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name)
def test_seed_workspaces_parse_and_round_trip(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    ws = Workspace.from_manifest(raw)
    assert ws.version == "v1alpha1"
    assert ws.resource.instance_type == "Standard_NC6s_v3"
    manifest = ws.to_manifest()
    # Only schema defaults are added; everything the user wrote comes back as written.
    for key in ("apiVersion", "kind", "metadata", "resource"):
        assert manifest[key] == raw[key]
    assert Workspace.from_manifest(manifest) == ws


def test_seed_adapter_and_tuning_fields() -> None:
    ws = Workspace.from_manifest(yaml.safe_load((SEED / "phi3_adapters_inference.yaml").read_text()))
    assert ws.inference is not None and ws.inference.adapters is not None
    assert ws.inference.adapters[0].source.name == "phi-3-adapter"
    assert ws.inference.adapters[0].strength == "1.0"
    tuning = Workspace.from_manifest(yaml.safe_load((SEED / "phi3_tuning.yaml").read_text())).tuning
    assert tuning is not None
    assert tuning.method == "qlora" and tuning.output.image_push_secret == "ACR_REGISTRY_SECRET_HERE"


def test_version_switch_keeps_the_shape() -> None:
    ws = Workspace.from_manifest(yaml.safe_load((SEED / "phi3_inference.yaml").read_text()))
    beta = ws.as_version("v1beta1")
    assert beta.api_version == "kaito.sh/v1beta1"
    assert {k: v for k, v in beta.to_manifest().items() if k != "apiVersion"} == {
        k: v for k, v in ws.to_manifest().items() if k != "apiVersion"
    }
    with pytest.raises(ValueError, match="unknown Workspace version"):
        ws.as_version("v2")


def test_template_keeps_unknown_fields() -> None:
    tmpl = {"spec": {"containers": [{"name": "x", "image": "y", "futureField": {"a": 1}}]}}
    ws = Workspace.from_manifest(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "t"},
            "resource": {"labelSelector": {"matchLabels": {"a": "b"}}},
            "inference": {"template": tmpl},
        }
    )
    assert ws.to_manifest()["inference"]["template"] == tmpl


def test_karpenter_shapes_round_trip() -> None:
    claim = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": "ws0abc", "labels": {"karpenter.sh/nodepool": "kaito"}},
        "spec": {
            "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC6s_v3"]}
            ],
            "resources": {"requests": {"storage": "120Gi"}},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "someFutureField": True,
        },
        "status": {"providerID": "azure:///x", "nodeName": "n1"},
    }
    assert NodeClaim.from_manifest(claim).to_manifest() == claim
    pool = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "ws"},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {"nodeClassRef": {"group": "g", "kind": "K", "name": "n"}, "requirements": []}
            },
        },
    }
    assert NodePool.from_manifest(pool).to_manifest() == pool


def test_committed_crds_match_a_fresh_generation() -> None:
    stale = crd.stale_files(ROOT / "config" / "crd")
    assert not stale, f"run `python -m kaito.api.crd`: {stale} out of date"


def test_crd_shape() -> None:
    spec = crd.workspace_crd()["spec"]
    assert spec["names"]["shortNames"] == ["wk", "wks"] and spec["names"]["categories"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert versions["v1beta1"]["storage"] and not versions["v1alpha1"]["storage"]
    assert all(v["served"] and v["subresources"] == {"status": {}} for v in versions.values())
    assert spec["conversion"] == {"strategy": "None"}
    cols = versions["v1alpha1"]["additionalPrinterColumns"]
    default = [c["name"].upper() for c in cols if not c.get("priority")]
    wide = [c["name"].upper() for c in cols if c.get("priority")]
    assert default == ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    assert wide == ["JOBSTARTED", "WORKSPACESUCCEEDED", "STATE", "TARGETNODES"]


def test_schema_is_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for bad in ("$ref", "anyOf", "oneOf", "allOf", "title", "const"):
                assert bad not in node, f"{path}: {bad}"
            if "properties" in node or "items" in node:
                assert "type" in node, path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    for maker in (crd.workspace_crd, crd.nodeclaim_crd, crd.nodepool_crd):
        for v in maker()["spec"]["versions"]:
            walk(v["schema"]["openAPIV3Schema"], maker.__name__)
