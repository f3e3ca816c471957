"""``--karpenter-node-classes`` and ``kaito.sh/node-class-name`` without a cluster: the flag's
parsing (each mistake named by entry and field), how it relates to ``--karpenter-node-class``,
the NodePool's ``nodeClassRef`` per Workspace, and the webhook's rule. The classes' creation on a
real control plane is tests/integration/provisioning/test_provisioning_karpenter.py's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller_backend import backend_of
from kaito.api.names import ANNOTATION_NODE_CLASS_NAME
from kaito.api.validation import ValidationOptions
from kaito.api.workspace.validation import validate_workspace
from kaito.cli.main import app
from kaito.nodes import NodeRequest
from kaito.operator import OperatorOptions
from kaito.operator.options import ProvisionerOptions
from kaito.operator.wiring import webhook_validation_options
from kaito.provisioners.karpenter import KarpenterProvisioner, NodeClassSetup, _covers, nodepool_manifest
from kaito.provisioners.options import (
    NODE_CLASS_APIS,
    KarpenterOptions,
    NodeClassAPI,
    NodeClassEntry,
    NodeClassRef,
    parse_node_classes,
)
from kaito.runtime import Manager, RestConfig

AZURE = [
    {"name": "image-family-ubuntu", "default": True, "spec": {"imageFamily": "Ubuntu2204"}},
    {"name": "image-family-azure-linux", "spec": {"imageFamily": "AzureLinux"}},
]


def test_parse_sorts_by_name_and_keeps_the_spec_as_given() -> None:
    entries = parse_node_classes(json.dumps(AZURE))
    assert [e.name for e in entries] == ["image-family-azure-linux", "image-family-ubuntu"]
    assert entries[1] == NodeClassEntry("image-family-ubuntu", True, {"imageFamily": "Ubuntu2204"})
    adopt = parse_node_classes('[{"name": "default", "default": true}]')
    assert adopt == (NodeClassEntry("default", True, None),)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "--karpenter-node-classes is not JSON"),
        ("[]", "non-empty JSON array"),
        ('{"name": "a"}', "non-empty JSON array"),
        ('["a"]', "--karpenter-node-classes[0] must be an object"),
        ('[{"default": true}]', "--karpenter-node-classes[0].name is required"),
        ('[{"name": "Ubuntu", "default": true}]', "[0] (Ubuntu).name 'Ubuntu' is not a valid object name"),
        ('[{"name": "a", "default": "yes"}]', "[0] (a).default must be true or false"),
        ('[{"name": "a", "default": true, "spec": []}]', "[0] (a).spec must be an object"),
        ('[{"name": "a", "default": true, "specs": {}}]', "[0] (a): unknown field 'specs'"),
        ('[{"name": "a", "default": true}, {"name": "a"}]', "[1] (a).name 'a' is declared twice"),
        ('[{"name": "a"}, {"name": "b"}]', 'exactly one entry must have "default": true, found 0'),
        (
            '[{"name": "a", "default": true}, {"name": "b", "default": true}]',
            "found 2 (a, b)",
        ),
    ],
)
def test_each_mistake_is_named_by_entry_and_field(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_node_classes(text)
    assert says in str(info.value)


def test_node_class_api_presets_and_explicit_form() -> None:
    assert NodeClassAPI.parse("azure") == NodeClassAPI("karpenter.azure.com", "v1beta1", "AKSNodeClass")
    assert NodeClassAPI.parse("AWS") == NodeClassAPI("karpenter.k8s.aws", "v1", "EC2NodeClass")
    assert NodeClassAPI.parse("example.com/v2/FooClass").api_version == "example.com/v2"
    with pytest.raises(ValueError, match="neither a provider"):
        NodeClassAPI.parse("AKSNodeClass")


def test_single_reference_and_node_classes_relate() -> None:
    """The single reference is a one-class allowlist of a class kaito does not manage; the list
    is kaito's classes; neither is kwok's default; both is refused."""
    kwok = KarpenterOptions()
    assert kwok.ref() == {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
    assert kwok.class_names == ("default",)
    single = KarpenterOptions(node_class=NodeClassRef.parse("karpenter.azure.com/AKSNodeClass/gpu"))
    assert single.class_names == ("gpu",) and single.ref()["kind"] == "AKSNodeClass"
    managed = KarpenterOptions(
        node_classes=parse_node_classes(json.dumps(AZURE)), node_class_api=NODE_CLASS_APIS["azure"]
    )
    assert managed.default_class == "image-family-ubuntu"
    assert managed.ref("image-family-azure-linux") == {
        "group": "karpenter.azure.com",
        "kind": "AKSNodeClass",
        "name": "image-family-azure-linux",
    }
    with pytest.raises(ValueError, match="exclusive"):
        KarpenterOptions(node_class=single.node_class, node_classes=managed.node_classes)


def test_flags_reach_the_backend_and_bad_ones_exit_2() -> None:
    backend = backend_of(
        [
            "--node-provisioner",
            "karpenter",
            "--karpenter-node-class-api",
            "azure",
            "--karpenter-node-classes",
            json.dumps(AZURE),
        ],
        {},
    )
    assert backend["node_class"] == {
        "group": "karpenter.azure.com",
        "kind": "AKSNodeClass",
        "name": "image-family-ubuntu",
    }
    assert backend["node_classes"] == ["image-family-azure-linux", "image-family-ubuntu"]
    runner = CliRunner()
    bad = runner.invoke(app, ["controller", "--dry-run", "--karpenter-node-classes", '[{"name": "a"}]'])
    assert bad.exit_code == 2 and 'exactly one entry must have "default": true' in bad.output
    lone_api = runner.invoke(app, ["controller", "--dry-run", "--karpenter-node-class-api", "aws"])
    assert lone_api.exit_code == 2 and "means nothing without it" in lone_api.output


def _backend(options: KarpenterOptions) -> KarpenterProvisioner:
    return KarpenterProvisioner(
        Manager(RestConfig(host="https://127.0.0.1:1"), handle_signals=False), options
    )


def _request(annotations: dict[str, str]) -> NodeRequest:
    return NodeRequest(
        workspace="ws",
        namespace="ns",
        uid="u",
        instance_type="Standard_NC24ads_A100_v4",
        count=1,
        annotations=annotations,
    )


async def test_the_annotation_picks_the_nodepools_class() -> None:
    backend = _backend(
        KarpenterOptions(
            node_classes=parse_node_classes(json.dumps(AZURE)), node_class_api=NODE_CLASS_APIS["azure"]
        )
    )
    plain = nodepool_manifest(_request({}), backend.class_ref(_request({})))
    assert plain["spec"]["template"]["spec"]["nodeClassRef"]["name"] == "image-family-ubuntu"
    chosen = _request({ANNOTATION_NODE_CLASS_NAME: "image-family-azure-linux"})
    ref = backend.class_ref(chosen)
    assert ref == {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "image-family-azure-linux"}
    unknown = _request({ANNOTATION_NODE_CLASS_NAME: "gpu-special"})
    with pytest.raises(ValueError, match="choose one of: image-family-azure-linux, image-family-ubuntu"):
        backend.class_ref(unknown)
    # Admitted without the webhook: no pool, and the reason reaches the Workspace's status
    # (neither call touches the API: the manager points at an address nothing listens on).
    await backend.provision_nodes(unknown)
    status = await backend.ensure_nodes_ready(unknown)
    assert not status.ready and status.reason == "NodeClassNotAllowed"
    assert "'gpu-special' names no node class of this operator" in status.message


def test_node_class_manifest_carries_upstreams_labels() -> None:
    options = KarpenterOptions(
        node_classes=parse_node_classes(json.dumps(AZURE)), node_class_api=NODE_CLASS_APIS["azure"]
    )
    setup = NodeClassSetup(Manager(RestConfig(host="https://127.0.0.1:1"), handle_signals=False), options)
    default, other = (setup.manifest(e) for e in reversed(options.node_classes))
    assert default["apiVersion"] == "karpenter.azure.com/v1beta1" and default["kind"] == "AKSNodeClass"
    assert default["metadata"]["labels"] == {
        "karpenter.kaito.sh/managed-by": "kaito",
        "karpenter.kaito.sh/default": "true",
    }
    assert other["metadata"]["labels"] == {"karpenter.kaito.sh/managed-by": "kaito"}
    assert other["spec"] == {"imageFamily": "AzureLinux"}


def test_provider_defaults_are_not_drift() -> None:
    assert _covers({"imageFamily": "Ubuntu2204"}, {"imageFamily": "Ubuntu2204", "osDiskSizeGB": 128})
    assert not _covers({"imageFamily": "Ubuntu2204"}, {"imageFamily": "AzureLinux"})
    assert not _covers({"tags": {"a": "1"}}, {"tags": {}})


def _ws(annotation: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "ws"}
    if annotation is not None:
        meta["annotations"] = {ANNOTATION_NODE_CLASS_NAME: annotation}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"a": "b"}},
        },
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def test_webhook_refuses_an_unknown_class_only_when_karpenter_provisions() -> None:
    karpenter = OperatorOptions(
        provisioner=ProvisionerOptions(
            name="karpenter",
            karpenter=KarpenterOptions(
                node_classes=parse_node_classes(json.dumps(AZURE)), node_class_api=NODE_CLASS_APIS["azure"]
            ),
        )
    )
    opts = webhook_validation_options(karpenter)
    assert opts.node_class_names == ("image-family-azure-linux", "image-family-ubuntu")
    assert validate_workspace(_ws("image-family-azure-linux"), options=opts).ok
    refused = validate_workspace(_ws("gpu-special"), options=opts)
    (error,) = refused.errors
    assert error.field == f"metadata.annotations[{ANNOTATION_NODE_CLASS_NAME}]"
    assert "'gpu-special' is not a node class of this operator" in error.message
    assert "image-family-azure-linux, image-family-ubuntu" in error.message
    # Another backend: inert, and said so rather than refused.
    byo = webhook_validation_options(OperatorOptions())
    assert byo.node_class_names is None
    inert = validate_workspace(_ws("gpu-special"), options=byo)
    assert inert.ok and any("read only by the karpenter node provisioner" in w for w in inert.warnings)
    # An unknown name already stored does not wedge updates of other fields.
    stored = _ws("gpu-special")
    edited = _ws("gpu-special")
    edited["metadata"]["labels"] = {"team": "a"}
    assert validate_workspace(edited, stored, ValidationOptions(node_class_names=("x",))).ok


def test_the_charts_providers_pass_the_flags_parsing() -> None:
    """What the chart renders into --karpenter-node-class-api / --karpenter-node-classes for each
    provider parses, with upstream's names: Azure's two AKSNodeClasses (Ubuntu the default),
    AWS's EC2NodeClass ``default`` (adopted: its selectors are the cluster's)."""
    values = yaml.safe_load((Path(__file__).resolve().parents[3] / "charts/kaito/values.yaml").read_text())
    assert values["karpenterProvider"] == ""
    parsed = {
        name: (NodeClassAPI.parse(p["nodeClassAPI"]), parse_node_classes(json.dumps(p["nodeClasses"])))
        for name, p in values["karpenterProviders"].items()
    }
    for name, (api, _) in parsed.items():
        assert api == NODE_CLASS_APIS[name]
    azure = parsed["azure"][1]
    assert [(e.name, e.default) for e in azure] == [
        ("image-family-azure-linux", False),
        ("image-family-ubuntu", True),
    ]
    assert parsed["aws"][1] == (NodeClassEntry("default", True, None),)
