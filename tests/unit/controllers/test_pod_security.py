"""The pods kaito writes (issue 21, hole 7): no ServiceAccount token and a restricted
securityContext on every container; a user's pod template is left as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kaito.api.workspace import Workspace
from kaito.controllers.workspace import WorkspaceControllerOptions, inference
from kaito.controllers.workspace.podsecurity import CONTAINER_SECURITY_CONTEXT, POD_SECURITY_CONTEXT
from kaito.controllers.workspace.tuning import build_tuning_job

SEED = Path(__file__).resolve().parents[1] / "api" / "seed"
Obj = dict[str, Any]


def seed(name: str) -> Obj:
    obj: Obj = yaml.safe_load((SEED / name).read_text())
    obj["metadata"].update(namespace="default", uid="uid-1", generation=1)
    return obj


def pod_template(obj: Obj) -> Obj:
    model = Workspace.from_manifest(obj)
    sts = inference.build_statefulset(
        obj,
        model,
        inference.plan_for(model),
        affinity={},
        revision=1,
        options=WorkspaceControllerOptions(),
    )
    spec: Obj = sts["spec"]["template"]["spec"]
    return spec


def assert_restricted(spec: Obj) -> None:
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}} == POD_SECURITY_CONTEXT
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        assert c["securityContext"] == CONTAINER_SECURITY_CONTEXT, c["name"]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_preset_statefulset_pod_template_is_restricted() -> None:
    assert_restricted(pod_template(seed("phi3_inference.yaml")))
    # Adapter init containers too.
    spec = pod_template(seed("phi3_adapters_inference.yaml"))
    assert spec["initContainers"]
    assert_restricted(spec)


def test_tuning_job_pod_is_restricted() -> None:
    job, _ = build_tuning_job(seed("phi3_tuning.yaml"))
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"] and len(spec["containers"]) == 2
    assert_restricted(spec)


def test_user_template_is_left_as_written() -> None:
    obj = seed("phi3_inference.yaml")
    del obj["inference"]["preset"]
    obj["inference"]["template"] = {"spec": {"containers": [{"name": "srv", "image": "me/srv:1"}]}}
    spec = pod_template(obj)
    assert "automountServiceAccountToken" not in spec and "securityContext" not in spec
    assert spec["containers"] == [{"name": "srv", "image": "me/srv:1"}]
