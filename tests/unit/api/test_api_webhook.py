"""The AdmissionReview handler, called directly and over HTTP, and fuzzed for crashes."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaito.api.webhook import (
    INFERENCESET_VALIDATE_PATHS,
    MUTATE_PATHS,
    VALIDATE_PATHS,
    default_request,
    new_webhook_server,
    review,
    validate_request,
)
from kaito.api.workspace.validation import validate_workspace
from kaito.runtime import WebhookServerOptions

SEED = Path(__file__).parent / "seed"
VALID = yaml.safe_load((SEED / "phi3_inference.yaml").read_text())
TUNING = yaml.safe_load((SEED / "phi3_tuning.yaml").read_text())


def admission(obj: Any, operation: str = "CREATE", old: Any = None, uid: str = "u-1") -> dict[str, Any]:
    req: dict[str, Any] = {"uid": uid, "operation": operation, "object": obj}
    if old is not None:
        req["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def test_valid_create_is_allowed() -> None:
    out = review(admission(VALID))
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"] == {"uid": "u-1", "allowed": True}


def test_invalid_create_is_denied_with_field_causes() -> None:
    bad = copy.deepcopy(VALID)
    bad["resource"]["instanceType"] = "Standard_XYZ"
    resp = review(admission(bad))["response"]
    assert resp["allowed"] is False and resp["uid"] == "u-1"
    assert resp["status"]["code"] == 422 and resp["status"]["reason"] == "Invalid"
    assert resp["status"]["message"].startswith(
        "resource.instanceType: 'Standard_XYZ' is not a known GPU SKU for azure"
    )
    assert resp["status"]["details"]["causes"][0]["field"] == "resource.instanceType"


def test_update_rules_and_delete_passthrough() -> None:
    resp = review(admission(TUNING, "UPDATE", old=VALID))["response"]
    assert resp["allowed"] is False and "immutable" in resp["status"]["message"]
    assert review(admission(None, "DELETE", old=VALID))["response"]["allowed"] is True
    deleting = copy.deepcopy(TUNING)
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert review(admission(deleting, "UPDATE", old=VALID))["response"]["allowed"] is True


def test_warnings_are_returned() -> None:
    open_model = copy.deepcopy(VALID)
    open_model["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    resp = review(admission(open_model))["response"]
    assert resp["allowed"] and "modelAccessSecret" in resp["warnings"][0]
    assert "is not gated" in resp["warnings"][0]


def test_mutate_canonicalises_the_sku_name() -> None:
    obj = copy.deepcopy(VALID)
    obj["resource"]["instanceType"] = "standard_nc6s_v3"
    resp = review(admission(obj), mode="mutate")["response"]
    assert resp["allowed"] and resp["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(resp["patch"]))
    assert patch == [{"op": "replace", "path": "/resource/instanceType", "value": "Standard_NC6s_v3"}]
    assert "patch" not in review(admission(VALID), mode="mutate")["response"]


def test_malformed_reviews_are_denied_not_crashed() -> None:
    bodies: list[Any] = [None, [], {}, {"request": "x"}, {"request": {"uid": 5, "operation": "CREATE"}}]
    for body in bodies:
        resp = review(body)["response"]
        assert resp["allowed"] is False and resp["status"]["message"]


def test_handlers_are_mounted_for_both_versions() -> None:
    server = new_webhook_server(WebhookServerOptions(port=0))
    assert server.paths == sorted([*VALIDATE_PATHS, *MUTATE_PATHS, *INFERENCESET_VALIDATE_PATHS])
    assert "/validate-kaito-sh-v1beta1-workspace" in server.paths
    assert "/validate-kaito-sh-v1alpha1-inferenceset" in server.paths
    assert "/mutate-kaito-sh-v1alpha1-workspace" in server.paths
    assert server.needs_leader_election is False


def test_handlers_take_the_request_and_leave_the_envelope_to_the_server() -> None:
    req = admission(VALID)["request"]
    assert validate_request(req) == {"allowed": True}
    bad = copy.deepcopy(VALID)
    del bad["inference"]
    resp = validate_request({**req, "object": bad})
    assert resp["allowed"] is False and "exactly one of inference or tuning" in resp["status"]["message"]
    assert "uid" not in resp and "apiVersion" not in resp
    lower = copy.deepcopy(VALID)
    lower["resource"]["instanceType"] = "standard_nc6s_v3"
    patch = json.loads(base64.b64decode(default_request({**req, "object": lower})["patch"]))
    assert patch == [{"op": "replace", "path": "/resource/instanceType", "value": "Standard_NC6s_v3"}]
    assert validate_request("garbage")["allowed"] is False
    assert default_request(None)["allowed"] is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "resource",
        "inference",
        "tuning",
        "status",
        "metadata",
        "instanceType",
        "labelSelector",
        "count",
        "preset",
        "name",
        "adapters",
        "template",
        "input",
        "output",
        "urls",
        "image",
        "method",
        "strength",
        "source",
        "matchLabels",
        "volumeSource",
        "imagePushSecret",
        "annotations",
    ]
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_workspaces(draw: st.DrawFn) -> Any:
    """A valid seed Workspace with a few random values planted at real or invented paths."""
    obj = copy.deepcopy(draw(st.sampled_from([VALID, TUNING])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(obj)))
        value = draw(json_values)
        if not path:
            continue
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(FIELD_NAMES)] = value
        else:
            parent[path[-1]] = value
    return obj


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=mutated_workspaces(), old=st.none() | mutated_workspaces())
def test_validator_never_crashes(obj: Any, old: Any) -> None:
    result = validate_workspace(obj, old)
    for e in result.errors:
        assert e.field and e.message
        assert "internal validation error" not in e.message, e


@settings(max_examples=150, deadline=None)
@given(body=json_values, obj=mutated_workspaces(), op=st.sampled_from(["CREATE", "UPDATE", "DELETE", "X"]))
def test_webhook_never_crashes(body: Any, obj: Any, op: str) -> None:
    for candidate in (body, admission(obj, op, old=VALID), admission(body, op, old=body)):
        modes: tuple[Literal["validate", "mutate"], ...] = ("validate", "mutate")
        for mode in modes:
            out = review(candidate, mode=mode)
            resp = out["response"]
            assert isinstance(resp["allowed"], bool)
            json.dumps(out)
