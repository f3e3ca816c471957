"""One fit verdict (kaito.presets.fit): the webhook admits exactly what the controller will plan,
with and without the resource-check bypass annotation."""

from __future__ import annotations

from typing import Any

import pytest

from kaito.api.workspace import Workspace
from kaito.api.workspace.validation import validate_workspace
from kaito.controllers.workspace import inference
from kaito.presets import BYPASS_ANNOTATION, GPUSku, bypass_requested, fit, get_preset, get_sku


def _ws(sku: str, preset: str, count: int | None, annotations: dict[str, str] | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"instanceType": sku, "labelSelector": {"matchLabels": {"apps": "x"}}}
    if count is not None:
        resource["count"] = count
    meta: dict[str, Any] = {"name": "ws", "namespace": "team"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": resource,
        "inference": {"preset": {"name": preset}},
    }


def _planned(obj: dict[str, Any]) -> bool:
    try:
        inference.plan_for(Workspace.from_manifest(obj))
    except inference.PlanError:
        return False
    return True


@pytest.mark.parametrize(
    ("sku", "preset", "count", "bypass", "ok"),
    [
        ("Standard_NC24ads_A100_v4", "phi-4-mini-instruct", None, False, True),
        # too little memory on one V100: refused, unless the annotation waives it (any value)
        ("Standard_NC6s_v3", "phi-4", 1, False, False),
        ("Standard_NC6s_v3", "phi-4", 1, True, True),
        # a GPU the runtime cannot use at all stays refused under the bypass, on both sides
        ("Standard_NC4as_T4_v3", "gpt-oss-20b", 1, True, False),
        ("Standard_NG32ads_V620_v1", "phi-4-mini-instruct", 1, True, False),
    ],
)
def test_webhook_and_controller_share_the_fit_verdict(
    sku: str, preset: str, count: int | None, bypass: bool, ok: bool
) -> None:
    annotations = {BYPASS_ANNOTATION: "true"} if bypass else None
    verdict = fit(get_preset(preset), _sku(sku), count, annotations=annotations)
    assert verdict.ok is ok
    assert verdict.bypassed is (bypass and ok)
    obj = _ws(sku, preset, count, annotations)
    result = validate_workspace(obj)
    fit_errors = [e for e in result.errors if e.field in ("resource.instanceType", "resource.count")]
    assert (not fit_errors) is ok, fit_errors
    assert result.ok is ok, result.errors
    assert _planned(obj) is ok
    assert any("GPU memory check bypassed" in w for w in result.warnings) is verdict.bypassed


def test_the_annotation_counts_by_presence_whatever_its_value() -> None:
    assert bypass_requested({BYPASS_ANNOTATION: "false"}) and bypass_requested({BYPASS_ANNOTATION: ""})
    assert not bypass_requested({}) and not bypass_requested(None)


def _sku(name: str) -> GPUSku:
    found = get_sku(name)
    assert found is not None
    return found
