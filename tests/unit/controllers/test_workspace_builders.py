"""The workspace controller's pure parts: workload, Services, revisions, status, BYO choice."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito.api import names
from kaito.api.workspace import Workspace
from kaito.contract import ADAPTERS_DIR, CONFIG_DIR, DIST_PORT, HEALTH_PATH, INFERENCE_PORT, InferenceCommand
from kaito.controllers.workspace import WorkspaceControllerOptions, inference, revision, status
from kaito.controllers.workspace.inference import configmap, services
from kaito.nodes import NodeRequest
from kaito.provisioners.byo import BYOProvisioner, assess, gpu_node_manifest
from kaito.runtime import manifest_hash, stamp, up_to_date

SEED = Path(__file__).resolve().parents[1] / "api" / "seed"
Obj = dict[str, Any]


def seed(name: str) -> Obj:
    obj: Obj = yaml.safe_load((SEED / name).read_text())
    obj["metadata"].update(namespace="default", uid="uid-1", generation=1, resourceVersion="7")
    return obj


def workload(obj: Obj, revision_number: int = 1) -> tuple[Obj, inference.Plan]:
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
        revision=revision_number,
        options=WorkspaceControllerOptions(),
    )
    return sts, plan


def test_seed_workspace_becomes_upstream_shaped_statefulset() -> None:
    sts, plan = workload(seed("phi3_inference.yaml"))
    assert plan.node_count == 1 and plan.gpus_per_node == 1
    spec = sts["spec"]
    assert sts["metadata"]["name"] == "workspace-phi-3-mini"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "workspace-phi-3-mini-headless"
    assert spec["replicas"] == 1
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert (
        c["command"]
        == InferenceCommand(preset="phi-3-mini-4k-instruct", instance_type="Standard_NC6s_v3").argv()
    )
    assert c["command"][:3] == ["python", "-m", "kaito.inference"]
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert c["ports"][0]["containerPort"] == INFERENCE_PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": HEALTH_PATH, "port": INFERENCE_PORT}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True} in c["volumeMounts"]
    cm_vol = next(v for v in pod["volumes"] if v["name"] == "config")
    assert cm_vol["configMap"]["name"] == configmap.DEFAULT_CONFIG_NAME
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "apps", "operator": "In", "values": ["phi-3"]} in terms[0]["matchExpressions"]
    assert "initContainers" not in pod
    assert spec["template"]["metadata"]["annotations"][names.ANNOTATION_REVISION] == "1"


def test_adapters_get_one_init_container_each_and_strength_env() -> None:
    obj = seed("phi3_adapters_inference.yaml")
    obj["inference"]["adapters"].append(
        {"source": {"name": "second", "image": "reg.example/second:1"}, "strength": "0.5"}
    )
    sts, _ = workload(obj)
    pod = sts["spec"]["template"]["spec"]
    inits = pod["initContainers"]
    assert [i["image"] for i in inits] == [
        "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1",
        "reg.example/second:1",
    ]
    assert f"{ADAPTERS_DIR}/phi-3-adapter" in inits[0]["command"][-1]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["phi-3-adapter"] == "1.0" and env["second"] == "0.5"
    assert {"name": "adapters", "mountPath": ADAPTERS_DIR} in pod["containers"][0]["volumeMounts"]


def test_multi_node_gets_distributed_args_pod_index_and_ports() -> None:
    obj = seed("phi3_inference.yaml")
    obj["resource"]["count"] = 2
    sts, plan = workload(obj)
    assert plan.multi_node and sts["spec"]["replicas"] == 2
    c = sts["spec"]["template"]["spec"]["containers"][0]
    args = c["command"]
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert args[args.index("--node-rank") + 1] == "$(POD_INDEX)"
    assert args[args.index("--master-addr") + 1].startswith(
        "workspace-phi-3-mini-0.workspace-phi-3-mini-headless."
    )
    assert any(e["name"] == "POD_INDEX" for e in c["env"])
    assert "podAntiAffinity" in sts["spec"]["template"]["spec"]["affinity"]
    svc = services.build_service(obj, multi_node=True)
    assert [p["port"] for p in svc["spec"]["ports"]] == [80, DIST_PORT]
    assert svc["spec"]["selector"][services.POD_INDEX_LABEL] == "0"


def test_services_as_upstream() -> None:
    obj = seed("phi3_inference.yaml")
    svc = services.build_service(obj, multi_node=False)
    assert svc["metadata"]["name"] == "workspace-phi-3-mini"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": INFERENCE_PORT, "protocol": "TCP"}
    ]
    headless = services.build_headless_service(obj, multi_node=False)
    assert headless["metadata"]["name"] == "workspace-phi-3-mini-headless"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True


def test_default_config_is_what_the_server_accepts(tmp_path: Path) -> None:
    from kaito.contract import INFERENCE_CONFIG_FILE

    cm = configmap.build_default_config("default")
    assert "ownerReferences" not in cm["metadata"]  # shared by the namespace's Workspaces
    data = yaml.safe_load(cm["data"][INFERENCE_CONFIG_FILE])
    assert set(data) <= {"vllm", "server", "transformers"}


def test_template_workspace_is_deployed_as_given_and_gpu_checked() -> None:
    obj = seed("phi3_inference.yaml")
    del obj["inference"]["preset"]
    obj["inference"]["template"] = {
        "spec": {
            "containers": [
                {"name": "srv", "image": "me/srv:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]
        }
    }
    sts, _ = workload(obj)
    pod = sts["spec"]["template"]["spec"]
    assert pod["containers"] == obj["inference"]["template"]["spec"]["containers"]
    assert sts["spec"]["template"]["metadata"]["labels"][names.LABEL_WORKSPACE] == "workspace-phi-3-mini"
    obj["inference"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    with pytest.raises(inference.PlanError, match="asks for 4 GPUs"):
        workload(obj)


def test_revision_hash_follows_spec_only_and_history_is_bounded() -> None:
    a = seed("phi3_adapters_inference.yaml")
    b = copy.deepcopy(a)
    b["metadata"]["labels"] = {"x": "y"}
    b["status"] = {"state": "Ready"}
    assert revision.spec_hash(a) == revision.spec_hash(b)
    b["inference"]["adapters"][0]["strength"] = "0.5"
    assert revision.spec_hash(a) != revision.spec_hash(b)
    revs = [revision.build_revision(a, f"{i:010x}".ljust(64, "0"), i) for i in range(1, 13)]
    pruned = revision.to_prune(revs, revs[-1]["metadata"]["name"], keep=10)
    assert [r["revision"] for r in pruned] == [1, 2]
    assert revision.next_number(revs) == 13


def test_desired_hash_makes_reapply_a_no_op() -> None:
    desired = stamp(services.build_service(seed("phi3_inference.yaml"), multi_node=False))
    stored = copy.deepcopy(desired)
    stored["spec"]["clusterIP"] = "10.96.0.12"  # defaults the apiserver adds do not matter
    stored["metadata"]["resourceVersion"] = "9"
    assert up_to_date(desired, stored)
    changed = stamp(services.build_service(seed("phi3_inference.yaml"), multi_node=True))
    assert not up_to_date(changed, stored)
    assert manifest_hash({"a": 1}) == manifest_hash({"a": 1})


def _pod(name: str, **status: Any) -> Obj:
    return {
        "metadata": {"name": name, "annotations": {names.ANNOTATION_REVISION: "1"}},
        "spec": {},
        "status": status,
    }


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"])
def test_container_failures_are_reported_with_their_reason(reason: str) -> None:
    pod = _pod(
        "ws-0",
        containerStatuses=[
            {"name": "inference", "state": {"waiting": {"reason": reason, "message": "boom"}}}
        ],
    )
    check = status.pod_failure([pod])
    assert check is not None and check.reason == reason and not check.ok and check.failed
    assert "ws-0" in check.message and "boom" in check.message


def test_unschedulable_pod_carries_the_scheduler_message() -> None:
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    pod = _pod(
        "ws-0",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}],
    )
    check = status.pod_failure([pod])
    assert check is not None and check.reason == "PodUnschedulable" and msg in check.message


def _sts(ready: int, replicas: int = 1) -> Obj:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "currentRevision": "r1",
            "updateRevision": "r1",
        },
    }


def test_inference_ready_needs_every_pod_of_the_current_revision() -> None:
    ready_pod = _pod("ws-0", conditions=[{"type": "Ready", "status": "True"}])
    assert status.inference_check(_sts(1), [ready_pod], "1").ok
    assert not status.inference_check(_sts(1), [ready_pod], "2").ok  # old revision's pod
    waiting = status.inference_check(_sts(0), [], "1")
    assert not waiting.ok and not waiting.failed and waiting.reason == "InferencePending"


def test_inference_ready_from_the_pods_before_the_statefulset_status_catches_up() -> None:
    lagging = _sts(0)  # observed the spec, has not counted the Ready pod yet
    pod = _pod("ws-0", conditions=[{"type": "Ready", "status": "True"}])
    pod["metadata"]["labels"] = {status.REVISION_HASH_LABEL: "r1"}
    assert status.inference_check(lagging, [pod], "1").ok
    pod["metadata"]["labels"] = {status.REVISION_HASH_LABEL: "r0"}  # a pod of the old template
    assert not status.inference_check(lagging, [pod], "1").ok
    lagging["status"]["observedGeneration"] = 0  # the new spec not seen yet
    pod["metadata"]["labels"] = {status.REVISION_HASH_LABEL: "r1"}
    assert not status.inference_check(lagging, [pod], "1").ok


def test_status_is_stable_when_nothing_changes() -> None:
    ws = seed("phi3_inference.yaml")
    out = status.Outcome(
        resource=status.Check(True, "NodesReady", "1 of 1"),
        inference=status.Check(True, "InferenceReady", "1 of 1"),
        worker_nodes=["n1"],
        target_node_count=1,
    )
    first = status.desired_status(ws, out)
    assert first["status"]["state"] == names.STATE_READY
    assert first["status"]["observedGeneration"] == 1
    conds = {c["type"]: c["status"] for c in first["status"]["conditions"]}
    assert conds[names.WORKSPACE_READY] == conds[names.WORKSPACE_SUCCEEDED] == "True"
    second = status.desired_status(first, out)
    assert second["status"] == first["status"]
    assert status.transitions(first, second) == []


def test_byo_counts_ready_matching_gpu_nodes_and_says_what_is_missing() -> None:
    request = NodeRequest(
        workspace="ws",
        namespace="default",
        uid="u",
        instance_type="Standard_NC6s_v3",
        count=2,
        label_selector={"matchLabels": {"apps": "phi-3"}},
        gpus_per_node=1,
    )
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    n1 = gpu_node_manifest("n1", "Standard_NC6s_v3", {"apps": "phi-3"})
    n1["status"].update(ready)
    other = gpu_node_manifest("n2", "Standard_NC6s_v3", {"apps": "other"})
    other["status"].update(ready)
    result = assess(request, [n1, other])
    assert not result.ready and "1 more node(s) needed" in result.message and "apps=phi-3" in result.message
    n3 = gpu_node_manifest("n3", "Standard_NC6s_v3", {"apps": "phi-3"})
    n3["status"].update(ready)
    result = assess(request, [n3, n1, other])
    assert result.ready and result.nodes == ["n1", "n3"]
    preferred = dataclasses.replace(request, preferred_nodes=("n3",))
    assert assess(preferred, [n1, n3]).nodes == ["n3", "n1"]


def test_unschedulable_is_a_failure_only_after_its_grace_period() -> None:
    import time as _time
    from datetime import UTC, datetime

    now = _time.time()

    def refused(seconds_ago: float) -> Obj:
        since = datetime.fromtimestamp(now - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
        return _pod("ws-0", conditions=[{**cond, "lastTransitionTime": since}])

    fresh = refused(5)
    assert status.pod_failure([fresh], now) is None  # the scheduler is still retrying
    wait = status.unschedulable_recheck([fresh], now)
    assert wait is not None and 20 < wait <= status.UNSCHEDULABLE_GRACE_S - 4
    old = refused(status.UNSCHEDULABLE_GRACE_S + 10)
    check = status.pod_failure([old], now)
    assert check is not None and check.reason == "PodUnschedulable" and "0/3 nodes" in check.message
    assert status.unschedulable_recheck([old], now) is None


def test_api_key_secret_reaches_the_pod_as_a_secret_key_ref_only() -> None:
    """Issue 21 (4): the key is read by the kubelet from the Secret; its value is never in the
    StatefulSet (nor in the ControllerRevision, which copies the pod spec)."""
    obj = seed("phi3_inference.yaml")
    obj["metadata"]["annotations"] = {names.ANNOTATION_API_KEY_SECRET: "llm-key/token"}
    sts, _ = workload(obj)
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["KAITO_API_KEY"] == {
        "name": "KAITO_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "token"}},
    }
    obj["metadata"]["annotations"] = {names.ANNOTATION_API_KEY_SECRET: "llm-key"}
    (c,) = workload(obj)[0]["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in c["env"] if e["name"] == "KAITO_API_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "llm-key", "key": names.DEFAULT_API_KEY_SECRET_KEY}
    (c,) = workload(seed("phi3_inference.yaml"))[0]["spec"]["template"]["spec"]["containers"]
    assert all(e["name"] != "KAITO_API_KEY" for e in c.get("env") or ())
    obj["metadata"]["annotations"] = {names.ANNOTATION_API_KEY_SECRET: "Not_A/Secret"}
    with pytest.raises(inference.PlanError, match="not a Secret name") as err:
        workload(obj)
    assert err.value.reason == "InvalidAPIKeySecret"


def test_load_balancer_without_an_api_key_is_flagged_in_status() -> None:
    ws = seed("phi3_inference.yaml")
    ok = status.Check(True, "NodesReady", "ready")
    out = status.Outcome(resource=ok, inference=ok)
    assert status.endpoint_check({}) is None
    assert status.endpoint_check({names.ANNOTATION_ENABLE_LB: "False"}) is None
    open_lb = status.endpoint_check({names.ANNOTATION_ENABLE_LB: "True"})
    assert open_lb is not None and not open_lb.ok and open_lb.reason == "UnauthenticatedLoadBalancer"
    assert names.ANNOTATION_API_KEY_SECRET in open_lb.message
    out.endpoint = open_lb
    new = status.desired_status(ws, out)
    cond = next(c for c in new["status"]["conditions"] if c["type"] == names.INFERENCE_ENDPOINT_SECURED)
    assert cond["status"] == "False" and cond["reason"] == "UnauthenticatedLoadBalancer"
    assert new["status"]["state"] == names.STATE_READY  # a warning: the Workspace still serves
    keyed = status.endpoint_check({names.ANNOTATION_ENABLE_LB: "True", names.ANNOTATION_API_KEY_SECRET: "k"})
    assert keyed is not None and keyed.ok and keyed.reason == "APIKeyRequired"
    out.endpoint = None  # enablelb removed: the condition goes
    gone = status.desired_status(new, out)
    assert all(c["type"] != names.INFERENCE_ENDPOINT_SECURED for c in gone["status"]["conditions"])
