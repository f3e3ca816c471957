"""The InferenceSet API: the generated CRD (scale subresource, versions, columns) and the
validation the webhook runs (the Workspace rules on the template, named under spec.template)."""

from __future__ import annotations

import copy
from typing import Any

from kaito.api.crd import inferenceset_crd
from kaito.api.inferenceset import child_index
from kaito.api.inferenceset.validation import set_field, validate_inferenceset
from kaito.api.webhook import validate_request

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "InferenceSet",
    "metadata": {"name": "chat", "namespace": "ns"},
    "spec": {
        "replicas": 2,
        "labelSelector": {"matchLabels": {"apps": "chat"}},
        "template": {
            "resource": {"instanceType": "Standard_NC6s_v3"},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
        },
    },
}


def with_(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = obj
        *head, last = path.split("__")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return obj


def test_crd_has_the_scale_subresource_both_versions_and_upstreams_columns() -> None:
    crd = inferenceset_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "inferencesets.kaito.sh"
    assert spec["names"]["shortNames"] == ["is", "isets"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, False),
        ("v1beta1", True, True),
    ]
    for version in spec["versions"]:
        assert version["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        default_columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
        assert default_columns == ["Replicas", "ReadyReplicas", "Age"]
        props = version["schema"]["openAPIV3Schema"]["properties"]
        assert props["spec"]["properties"]["replicas"]["minimum"] == 0
        assert props["spec"]["properties"]["replicas"]["default"] == 1
        assert set(props["status"]["properties"]) >= {
            "replicas",
            "readyReplicas",
            "selector",
            "conditions",
            "observedGeneration",
        }
        # The template's preset may change (the set rolls it); the Workspace's freezes it.
        rules = props["spec"]["properties"]["template"]["properties"]["inference"]["x-kubernetes-validations"]
        assert not any("oldSelf" in r["rule"] for r in rules)


def test_a_good_set_passes() -> None:
    result = validate_inferenceset(BASE)
    assert result.ok, result.errors


def test_template_is_judged_by_the_workspace_rules_named_under_spec_template() -> None:
    result = validate_inferenceset(with_(spec__template__inference={"preset": {"name": "no-such-model"}}))
    assert [e.field for e in result.errors] == ["spec.template.inference.preset.name"]
    assert "unknown preset 'no-such-model'" in result.errors[0].message
    result = validate_inferenceset(with_(spec__template__resource={"instanceType": "Standard_Nope"}))
    assert [e.field for e in result.errors] == ["spec.template.resource.instanceType"]
    result = validate_inferenceset(with_(spec__labelSelector={"matchLabels": {"kaito.sh/workspace": "x"}}))
    assert result.errors and all(e.field.startswith("spec.labelSelector") for e in result.errors)


def test_replicas_name_labels_and_unknown_fields() -> None:
    result = validate_inferenceset(with_(spec__replicas=-1))
    assert [str(e) for e in result.errors] == ["spec.replicas: must be 0 or more (got -1)"]
    result = validate_inferenceset(with_(metadata={"name": "x" * 59, "namespace": "ns"}))
    assert [e.field for e in result.errors] == ["metadata.name"]
    result = validate_inferenceset(
        with_(spec__template__metadata={"labels": {"inferenceset.kaito.sh/index": "1"}})
    )
    assert [e.field for e in result.errors] == [
        'spec.template.metadata.labels["inferenceset.kaito.sh/index"]'
    ]
    result = validate_inferenceset(with_(spec__template__resource={"count": 2}))
    assert result.errors[0].field == "spec.template.resource.count"
    assert "is not an InferenceSet field" in result.errors[0].message
    assert validate_inferenceset(with_(spec__nodeCountLimit=4)).warnings


def test_update_may_change_the_model_but_not_to_a_bad_one() -> None:
    other = with_(spec__template__inference={"preset": {"name": "phi-3-mini-128k-instruct"}})
    assert validate_inferenceset(other, BASE).ok
    bad = with_(spec__template__metadata={"annotations": {"kaito.sh/runtime": "tgi"}})
    errors = validate_inferenceset(bad, BASE).errors
    assert [e.field for e in errors] == ["spec.template.metadata.annotations[kaito.sh/runtime]"]
    # A fault the stored object already had is not refused again.
    assert validate_inferenceset(bad, bad).ok


def test_admission_request_denies_with_causes() -> None:
    request = {"uid": "1", "operation": "CREATE", "namespace": "ns", "object": with_(spec__replicas=-3)}
    response = validate_request(request, validator=validate_inferenceset)
    assert response["allowed"] is False
    assert response["status"]["details"]["causes"][0]["field"] == "spec.replicas"


def test_names_and_fields() -> None:
    assert child_index("chat", "chat-12") == 12
    assert child_index("chat", "chat-012") is None and child_index("chat", "chat-x") is None
    assert child_index("chat", "other-1") is None
    assert set_field("resource.labelSelector.matchLabels") == "spec.labelSelector.matchLabels"
    assert set_field("inference.adapters[0].strength") == "spec.template.inference.adapters[0].strength"
    assert set_field("<root>") == "spec.template"
