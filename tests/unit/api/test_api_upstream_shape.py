"""Upstream Kaito's API shape: names, status.performance, per-version columns, the version round
trip of the models, and the annotations' effect on what the controller builds.

Facts checked against upstream's api/v1beta1 (workspace_types.go, condition_types.go, labels.go).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import crd, names
from kaito.api.workspace import Workspace, bypass_resource_checks_of, enable_lb_of, runtime_of
from kaito.controllers.workspace import WorkspaceControllerOptions, inference, status
from kaito.controllers.workspace.inference import services
from kaito.nodes import NodeRequest
from kaito.provisioners.byo import BYOProvisioner, assess

SEED = Path(__file__).parent / "seed"
Obj = dict[str, Any]

#: A v1beta1 Workspace as an upstream cluster returns it, status included (field names from
#: upstream's api/v1beta1/workspace_types.go: WorkspaceStatus, Performance, Metric).
UPSTREAM_V1BETA1: Obj = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "workspace-phi-4-mini",
        "namespace": "default",
        "annotations": {"kaito.sh/enablelb": "True", "kaito.sh/runtime": "vllm"},
    },
    "resource": {
        "count": 1,
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
    },
    "inference": {
        "preset": {
            "name": "phi-4-mini-instruct",
            "accessMode": "public",
            "presetOptions": {"modelAccessSecret": "hf-token"},
        },
        "config": "ds-inference-params",
    },
    "status": {
        "workerNodes": ["aks-ws6c1b2d7e-12345678-vmss000000"],
        "state": "Ready",
        "targetNodeCount": 1,
        "conditions": [
            {
                "type": t,
                "status": "True",
                "reason": "Ok",
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
            for t in ("NodeClaimReady", "ResourceReady", "InferenceReady", "WorkspaceSucceeded")
        ],
        "performance": {
            "metrics": {
                "peakTokensPerMinute": {
                    "description": "stress/high-concurrency",
                    "value": "123456",
                    "unit": "tokens/min",
                    "config": {"engine": "vllm", "concurrency": "64"},
                },
                "ttftP50": {"description": "latency/single", "value": "0.21"},
            }
        },
    },
}


def test_upstream_condition_types_states_and_annotations() -> None:
    assert names.UPSTREAM_CONDITION_TYPES == (
        "NodesReady",
        "NodeClaimReady",
        "ResourceReady",
        "InferenceReady",
        "JobStarted",
        "WorkspaceDeleting",
        "WorkspaceSucceeded",
    )
    assert set(names.UPSTREAM_CONDITION_TYPES) < set(names.CONDITION_TYPES)
    assert names.UPSTREAM_STATES == ("Pending", "Ready", "NotReady", "Running", "Succeeded", "Failed")
    assert set(names.UPSTREAM_STATES) <= set(names.STATES)
    assert (
        names.ANNOTATION_ENABLE_LB,
        names.ANNOTATION_RUNTIME,
        names.ANNOTATION_BYPASS_RESOURCE_CHECKS,
        names.ANNOTATION_NODE_IMAGE_FAMILY,
    ) == (
        "kaito.sh/enablelb",
        "kaito.sh/runtime",
        "kaito.sh/bypass-resource-checks",
        "kaito.sh/node-image-family",
    )
    assert names.RUNTIMES == ("vllm", "transformers")
    assert (names.LABEL_WORKSPACE, names.LABEL_WORKSPACE_NAMESPACE) == (
        "kaito.sh/workspace",
        "kaito.sh/workspacenamespace",
    )
    assert names.ANNOTATION_REVISION == "workspace.kaito.io/revision"
    assert names.FINALIZER == "workspace.finalizer.kaito.sh"


def test_annotation_readers_follow_upstream() -> None:
    assert runtime_of(None) == "vllm"
    assert runtime_of({"kaito.sh/runtime": "transformers"}) == "transformers"
    assert runtime_of({"kaito.sh/runtime": "tgi"}) == "vllm"  # upstream falls back to vLLM
    assert enable_lb_of({"kaito.sh/enablelb": "True"}) and enable_lb_of({"kaito.sh/enablelb": "true"})
    assert not enable_lb_of({"kaito.sh/enablelb": "yes"}) and not enable_lb_of(None)
    # Upstream looks at presence only: even an empty value bypasses.
    assert bypass_resource_checks_of({"kaito.sh/bypass-resource-checks": ""})
    assert not bypass_resource_checks_of({})


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_upstream_object_with_performance_round_trips_through_both_versions(version: str) -> None:
    ws = Workspace.from_manifest(copy.deepcopy(UPSTREAM_V1BETA1))
    assert ws.status is not None and ws.status.performance is not None
    metrics = ws.status.performance.metrics or {}
    assert metrics["peakTokensPerMinute"].unit == "tokens/min"
    other = ws.as_version(version)
    assert other.api_version == f"kaito.sh/{version}"
    back = Workspace.from_manifest(other.to_manifest()).as_version("v1beta1")
    assert back.to_manifest() == UPSTREAM_V1BETA1
    assert ws.enable_lb and ws.runtime == "vllm" and not ws.bypass_resource_checks


def test_upstream_v1alpha1_subset_parses() -> None:
    """Upstream's v1alpha1 has no state, targetNodeCount or performance: a subset of ours."""
    raw = yaml.safe_load((SEED / "phi3_inference.yaml").read_text())
    raw["inference"]["preset"]["accessMode"] = "public"  # the schema default, as both apiservers add it
    raw["status"] = {"workerNodes": ["n1"], "conditions": []}
    assert Workspace.from_manifest(raw).as_version("v1beta1").as_version("v1alpha1").to_manifest() == raw


def test_performance_is_in_both_versions_schema_and_conversion_stays_none() -> None:
    spec = crd.workspace_crd()["spec"]
    assert spec["conversion"] == {"strategy": "None"}
    schemas = [v["schema"]["openAPIV3Schema"] for v in spec["versions"]]
    assert schemas[0] == schemas[1]
    perf = schemas[0]["properties"]["status"]["properties"]["performance"]
    metric = perf["properties"]["metrics"]["additionalProperties"]
    assert metric["required"] == ["description", "value"]
    assert set(metric["properties"]) == {"description", "value", "unit", "config"}


def _columns(version: str) -> tuple[list[str], list[str]]:
    cols = crd.workspace_printer_columns(version)
    default = [c["name"].upper() for c in cols if not c.get("priority")]
    wide = [c["name"].upper() for c in cols]
    return default, wide


def test_printer_columns_per_version() -> None:
    seed_default = ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    alpha_default, alpha_wide = _columns("v1alpha1")
    beta_default, beta_wide = _columns("v1beta1")
    # `kubectl get workspace` prints the preferred version (v1beta1): the seed's table for both.
    assert alpha_default == beta_default == seed_default
    assert alpha_wide == [
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "WORKSPACEREADY",
        "STATE",
        "TARGETNODES",
        "AGE",
    ]
    # v1beta1 -o wide: upstream's columns, names and order, with WorkspaceReady among them.
    upstream = [
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "TARGETNODECOUNT",
        "STATE",
        "AGE",
    ]
    assert [c for c in beta_wide if c != "WORKSPACEREADY"] == upstream
    with pytest.raises(ValueError, match="unknown Workspace version"):
        crd.workspace_printer_columns("v1")


# --- what the annotations change in the objects the controller writes ---------------------


def _seed(name: str = "phi3_inference.yaml", **annotations: str) -> Obj:
    obj: Obj = yaml.safe_load((SEED / name).read_text())
    obj["metadata"].update(namespace="default", uid="uid-1", generation=1)
    if annotations:
        obj["metadata"]["annotations"] = dict(annotations)
    return obj


def _container(obj: Obj) -> Obj:
    container: Obj = _pod(obj)["containers"][0]
    return container


def _pod(obj: Obj) -> Obj:
    model = Workspace.from_manifest(obj)
    plan = inference.plan_for(model)
    request = NodeRequest(
        workspace=obj["metadata"]["name"],
        namespace="default",
        uid="uid-1",
        instance_type=model.resource.instance_type,
        count=plan.node_count,
        label_selector=model.resource.label_selector.to_dict(),
    )
    placement = BYOProvisioner.placement(None, request, assess(request, []))  # type: ignore[arg-type]
    sts = inference.build_statefulset(
        obj,
        model,
        plan,
        affinity=placement.affinity,
        tolerations=placement.tolerations,
        revision=1,
        options=WorkspaceControllerOptions(),
    )
    pod: Obj = sts["spec"]["template"]["spec"]
    return pod


def test_enablelb_makes_the_service_a_load_balancer() -> None:
    assert services.build_service(_seed(), multi_node=False)["spec"]["type"] == "ClusterIP"
    lb = services.build_service(_seed(**{names.ANNOTATION_ENABLE_LB: "True"}), multi_node=False)
    assert lb["spec"]["type"] == "LoadBalancer"
    # The headless Service stays headless whatever the annotation says.
    lb_seed = _seed(**{names.ANNOTATION_ENABLE_LB: "True"})
    headless = services.build_headless_service(lb_seed, multi_node=False)
    assert headless["spec"]["clusterIP"] == "None" and "type" not in headless["spec"]


def test_runtime_annotation_selects_the_server_runtime() -> None:
    plain = _container(_seed())["command"]
    assert "--runtime" not in plain  # no annotation: pod spec (and revision) as before
    cmd = _container(_seed(**{names.ANNOTATION_RUNTIME: "transformers"}))["command"]
    assert cmd[cmd.index("--runtime") + 1] == "transformers"
    explicit = _container(_seed(**{names.ANNOTATION_RUNTIME: "vllm"}))["command"]
    assert explicit[explicit.index("--runtime") + 1] == "vllm"
    # The server's own parser takes the flag the controller wrote.
    from kaito.inference.config import build_parser

    ns, _ = build_parser().parse_known_args(cmd[3:])
    assert ns.runtime == "transformers"


def test_transformers_runtime_refuses_a_multi_node_plan() -> None:
    obj = _seed(**{names.ANNOTATION_RUNTIME: "transformers"})
    obj["resource"]["count"] = 2
    with pytest.raises(inference.PlanError, match="transformers runtime"):
        inference.plan_for(Workspace.from_manifest(obj))


def test_bypass_resource_checks_lets_a_too_small_sku_through() -> None:
    obj = _seed()
    obj["inference"]["preset"]["name"] = "llama-3.3-70b-instruct"
    obj["resource"]["count"] = 1
    with pytest.raises(inference.PlanError, match="does not fit") as err:
        inference.plan_for(Workspace.from_manifest(obj))
    assert err.value.reason == "PresetDoesNotFit"
    obj["metadata"]["annotations"] = {names.ANNOTATION_BYPASS_RESOURCE_CHECKS: "true"}
    plan = inference.plan_for(Workspace.from_manifest(obj))
    assert plan.node_count == 1 and plan.gpus_per_node == 1


def _outcome(ok: bool) -> status.Outcome:
    return status.Outcome(
        resource=status.Check(True, "NodesReady", "1 node"),
        inference=status.Check(ok, "InferenceReady" if ok else "InferencePending", "pods"),
    )


def test_state_not_ready_after_ready_and_pending_before() -> None:
    ws = _seed()
    first = status.desired_status(ws, _outcome(False))
    assert first["status"]["state"] == names.STATE_RUNNING  # never served yet: not NotReady
    ready = status.desired_status(first, _outcome(True))
    assert ready["status"]["state"] == names.STATE_READY
    lost = status.desired_status(ready, _outcome(False))
    assert lost["status"]["state"] == names.STATE_NOT_READY
    assert status.desired_status(lost, _outcome(False))["status"]["state"] == names.STATE_NOT_READY
    assert status.desired_status(lost, _outcome(True))["status"]["state"] == names.STATE_READY


def test_deleting_sets_workspace_deleting() -> None:
    gone = status.deleting_status(_seed(), "deleting the inference workload")
    conds = {c["type"]: c for c in gone["status"]["conditions"]}
    assert conds[names.WORKSPACE_DELETING]["status"] == "True"
    assert conds[names.WORKSPACE_READY]["status"] == "False"
    assert gone["status"]["state"] == names.STATE_DELETING
    out = _outcome(True)
    out.deleting = status.Check(False, "Deleting", "removing children")
    conds = {c["type"]: c for c in status.desired_status(_seed(), out)["status"]["conditions"]}
    assert conds[names.WORKSPACE_DELETING]["status"] == "True"
    assert conds[names.WORKSPACE_DELETING]["reason"] == "Deleting"


def test_bypassed_plan_starts_in_the_pod_too() -> None:
    """The server re-plans the preset from --instance-type; with the bypass flag it must accept
    the plan the controller accepted, and without it refuse as before."""
    from kaito.contract.pod import InferenceCommand
    from kaito.inference.config import ConfigError, build_parser, preset_engine_args

    preset, sku = "llama-3.3-70b-instruct", "Standard_NC12s_v3"
    with pytest.raises(ConfigError, match="does not fit"):
        preset_engine_args(preset, sku)
    args = preset_engine_args(preset, sku, bypass_resource_checks=True)
    assert args["tensor_parallel_size"] >= 1 and args["max_model_len"] > 0

    plain = InferenceCommand(preset=preset, instance_type=sku).argv()
    assert "--bypass-resource-checks" not in plain  # other Workspaces' pod specs do not change
    bypassed = InferenceCommand(preset=preset, instance_type=sku, bypass_resource_checks=True).argv()
    ns, _ = build_parser().parse_known_args(bypassed[3:])
    assert ns.bypass_resource_checks is True
    assert build_parser().parse_known_args(plain[3:])[0].bypass_resource_checks is False


def test_the_controller_tells_the_pod_about_the_bypass() -> None:
    """End to end through the pod spec: the controller's command for a bypassed Workspace is
    one the in-pod server accepts; the seed's own command carries no bypass flag."""
    from kaito.inference.config import parse_settings

    obj = _seed()
    obj["inference"]["preset"]["name"] = "llama-3.3-70b-instruct"
    obj["resource"]["count"] = 1
    obj["metadata"]["annotations"] = {names.ANNOTATION_BYPASS_RESOURCE_CHECKS: "true"}
    assert inference.plan_for(Workspace.from_manifest(obj)).bypassed
    cmd = _container(obj)["command"]
    assert "--bypass-resource-checks" in cmd
    argv = cmd[3:]
    at = argv.index("--config")  # the ConfigMap's file exists only in the pod
    settings = parse_settings(argv[:at] + argv[at + 2 :])
    assert settings.preset == "llama-3.3-70b-instruct"
    assert "--bypass-resource-checks" not in _container(_seed())["command"]


def test_adapter_from_a_volume_is_mounted_in_place() -> None:
    """An adapter whose source is a volume is mounted read-only where the server looks for
    adapters, with its strength; only image adapters get a copying init container."""
    obj = _seed("phi3_adapters_inference.yaml")
    image_adapter = obj["inference"]["adapters"][0]
    pvc = {"persistentVolumeClaim": {"claimName": "team-adapter"}}
    obj["inference"]["adapters"].append(
        {"source": {"name": "from-pvc", "volumeSource": pvc}, "strength": "0.5"}
    )
    pod = _pod(obj)
    assert [c["name"] for c in pod["initContainers"]] == [f"adapter-{image_adapter['source']['name']}"]
    assert {"name": "adapter-volume-from-pvc", **pvc} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": "adapter-volume-from-pvc",
        "mountPath": "/mnt/adapter/from-pvc",
        "readOnly": True,
    } in mounts
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["from-pvc"] == "0.5"
    # volume adapters alone: no init container and no emptyDir to copy into
    obj["inference"]["adapters"] = obj["inference"]["adapters"][1:]
    pod = _pod(obj)
    assert not pod.get("initContainers")
    assert all(v["name"] != "adapters" for v in pod["volumes"])


def test_performance_mode_goes_to_vllm_only_when_set() -> None:
    cmd = _container(_seed(**{names.ANNOTATION_PERFORMANCE_MODE: "interactivity"}))["command"]
    assert cmd[cmd.index("--performance-mode") + 1] == "interactivity"
    assert "--performance-mode" not in _container(_seed())["command"]  # no revision change for others
    transformers = _seed(
        **{names.ANNOTATION_PERFORMANCE_MODE: "throughput", names.ANNOTATION_RUNTIME: "transformers"}
    )
    assert "--performance-mode" not in _container(transformers)["command"]
