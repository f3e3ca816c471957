"""How a Workspace or InferenceSet is sorted into upstream's phase words for the inventory gauges."""

from __future__ import annotations

from typing import Any

import pytest

from kaito.operator.inventory import PHASES, inferenceset_phase, preset_name, workspace_phase


def obj(conditions: dict[str, str], deleting: bool = False, **top: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions.items()]},
        **top,
    }


@pytest.mark.parametrize(
    ("conditions", "deleting", "phase"),
    [
        ({}, False, "pending"),
        ({"WorkspaceSucceeded": "Unknown"}, False, "pending"),
        ({"WorkspaceSucceeded": "True"}, False, "succeeded"),
        ({"WorkspaceSucceeded": "False"}, False, "error"),
        ({"WorkspaceSucceeded": "True", "WorkspaceDeleting": "True"}, False, "deleting"),
        # the deletion timestamp counts before the controller has written its condition
        ({"WorkspaceSucceeded": "True"}, True, "deleting"),
        # WorkspaceReady is kaito's own column; upstream's verdict is WorkspaceSucceeded
        ({"WorkspaceReady": "True"}, False, "pending"),
    ],
)
def test_workspace_phase(conditions: dict[str, str], deleting: bool, phase: str) -> None:
    assert workspace_phase(obj(conditions, deleting)) == phase
    assert phase in PHASES


def test_inferenceset_phase() -> None:
    assert inferenceset_phase(obj({})) == "pending"
    assert inferenceset_phase(obj({"InferenceSetReady": "True"})) == "succeeded"
    assert inferenceset_phase(obj({"InferenceSetReady": "False"})) == "error"
    assert inferenceset_phase(obj({"InferenceSetReady": "True"}, deleting=True)) == "deleting"


def test_preset_name_only_for_preset_inference() -> None:
    assert preset_name(obj({}, inference={"preset": {"name": "phi-4"}})) == "phi-4"
    assert preset_name(obj({}, tuning={"preset": {"name": "phi-4"}})) == ""
    assert preset_name(obj({}, inference={"template": {"spec": {}}})) == ""
    assert preset_name({"status": None}) == ""
