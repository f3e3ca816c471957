"""``resource.partition`` (upstream v0.12's MIG and accelerator modes): the webhook's rules, the
gates that admit it, the plan and pod it makes, and the BYO backend counting the right resource."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito.api.inferenceset import InferenceSet
from kaito.api.inferenceset.child import child_workspace, template_hash
from kaito.api.inferenceset.validation import validate_inferenceset
from kaito.api.validation import ValidationOptions
from kaito.api.workspace import Workspace
from kaito.api.workspace.validation import validate_workspace
from kaito.controllers.workspace import WorkspaceControllerOptions
from kaito.controllers.workspace.inference.statefulset import PlanError, build_statefulset, plan_for
from kaito.nodes import NodeRequest, node_gpus
from kaito.operator import OperatorOptions
from kaito.operator.featuregates import parse_feature_gates
from kaito.operator.options import ProvisionerOptions
from kaito.operator.wiring import webhook_validation_options
from kaito.presets import get_sku
from kaito.presets.partition import KNOWN_MIG_PROFILES, accelerator_sku, mig_profile_problem, mig_sku
from kaito.provisioners.byo import assess, gpu_node_manifest

Obj = dict[str, Any]
#: The operator with BYO nodes and both gates on.
BYO = ValidationOptions(auto_provisioning=False, mig=True, accelerator=True)
MIG = {"mode": "mig", "profile": "3g.40gb"}
ACCEL = {"mode": "accelerator", "count": 1}


def ws(partition: Obj | None, *, preset: str = "phi-3-mini-4k-instruct", **resource: Any) -> Obj:
    res: Obj = {"labelSelector": {"matchLabels": {"apps": "part"}}, **resource}
    if partition is not None:
        res["partition"] = partition
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "uid": "u-1"},
        "resource": res,
        "inference": {"preset": {"name": preset}},
    }


def errors(obj: Obj, opts: ValidationOptions = BYO, old: Obj | None = None) -> list[str]:
    return [str(e) for e in validate_workspace(obj, old, opts).errors]


# ------------------------------------------------------------------ webhook


@pytest.mark.parametrize("partition", [MIG, ACCEL], ids=["mig", "accelerator"])
def test_each_mode_is_admitted_on_byo_nodes_with_its_gate(partition: Obj) -> None:
    assert errors(ws(partition)) == []
    # a named instance type is a node filter under BYO; the partition is sized on it
    assert errors(ws(partition, instanceType="Standard_NC48ads_A100_v4")) == []


@pytest.mark.parametrize(
    ("partition", "gate"), [(MIG, "enableMIG"), (ACCEL, "enableAccelerator")], ids=["mig", "accelerator"]
)
def test_gate_off_is_refused_naming_the_gate(partition: Obj, gate: str) -> None:
    [err] = errors(ws(partition), ValidationOptions(auto_provisioning=False))
    assert err.startswith("resource.partition.mode:")
    assert f"--feature-gates {gate}=true" in err and f"featureGates.{gate}: true" in err


def test_only_the_named_gate_counts() -> None:
    only_mig = ValidationOptions(auto_provisioning=False, mig=True)
    assert errors(ws(MIG), only_mig) == []
    assert "enableAccelerator" in errors(ws(ACCEL), only_mig)[0]


def test_node_auto_provisioning_refuses_a_partition() -> None:
    opts = ValidationOptions(mig=True, accelerator=True)  # kaito provisions the nodes
    errs = errors(ws(MIG, instanceType="Standard_NC24ads_A100_v4"), opts)
    assert errs == [
        "resource.partition: GPU partitioning needs bring-your-own nodes (kaito controller "
        "--node-provisioner byo, upstream's disableNodeAutoProvisioning); remove "
        "resource.partition or run the Workspace on your own nodes"
    ]


def test_tuning_refuses_a_partition() -> None:
    obj = ws(ACCEL)
    del obj["inference"]
    obj["tuning"] = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/adapter:1", "imagePushSecret": "push"},
    }
    assert "resource.partition: GPU partitioning is not supported for tuning; remove resource.partition" in (
        errors(obj)
    )


@pytest.mark.parametrize(
    ("partition", "field", "fragment"),
    [
        ({"mode": "mig"}, "resource.partition.profile", "is required for mode mig"),
        ({"mode": "mig", "profile": "1g.11gb"}, "resource.partition.profile", "not a MIG profile of any GPU"),
        ({"mode": "mig", "profile": "one-slice"}, "resource.partition.profile", "write <slices>g.<memory>gb"),
        (
            {"mode": "mig", "profile": "3g.40gb", "count": 1},
            "resource.partition.count",
            "only for mode accelerator",
        ),
        ({"mode": "accelerator"}, "resource.partition.count", "is required for mode accelerator"),
        (
            {"mode": "accelerator", "count": 1, "profile": "1g.10gb"},
            "resource.partition.profile",
            "only for mode mig",
        ),
        ({"mode": "slice"}, "resource.partition.mode", "'mig' or 'accelerator'"),
        ({"mode": "accelerator", "count": 0}, "resource.partition.count", "greater than or equal to 1"),
    ],
)
def test_the_shape_of_each_mode(partition: Obj, field: str, fragment: str) -> None:
    errs = errors(ws(partition))
    assert any(e.startswith(f"{field}:") and fragment in e for e in errs), errs


def test_a_slice_is_one_device_on_one_node() -> None:
    errs = errors(ws(MIG, count=2))
    assert any(e.startswith("resource.count:") and "set resource.count to 1" in e for e in errs), errs


def test_the_model_must_fit_the_slice_unless_bypassed() -> None:
    small = ws({"mode": "mig", "profile": "1g.5gb"}, preset="qwen2.5-coder-32b-instruct")
    [err] = errors(small)
    assert err.startswith("resource.partition.profile: qwen2.5-coder-32b-instruct does not fit one 1g.5gb")
    assert "pick a profile with more memory" in err
    small["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "True"}
    result = validate_workspace(small, None, BYO)
    assert result.ok and any(w.startswith("resource.partition:") for w in result.warnings)


def test_accelerator_count_above_the_nodes_gpus_is_refused() -> None:
    errs = errors(ws({"mode": "accelerator", "count": 3}, instanceType="Standard_NC48ads_A100_v4"))
    assert errs == [
        "resource.partition.count: resource.partition.count 3 is more than the 2 GPUs of a "
        "Standard_NC48ads_A100_v4 node; lower it to at most 2"
    ]


def test_partition_is_immutable() -> None:
    old = ws(MIG)
    for new in (ws({"mode": "mig", "profile": "7g.80gb"}), ws(None), ws(ACCEL)):
        errs = errors(new, old=old)
        assert any(e.startswith("resource.partition: is immutable") for e in errs), errs
    assert errors(ws(None), old=ws(None)) == []
    assert errors(ws(MIG), old=old) == []


def test_crd_rules_carry_the_shape() -> None:
    schema = Workspace.model_json_schema(by_alias=True)
    rules = [r["rule"] for r in schema["$defs"]["PartitionSpec"]["x-kubernetes-validations"]]
    assert any("self.mode != 'mig'" in r for r in rules)
    assert any("self.mode != 'accelerator'" in r for r in rules)
    res_rules = [r["rule"] for r in schema["$defs"]["ResourceSpec"]["x-kubernetes-validations"]]
    assert any("oldSelf.partition" in r for r in res_rules)


# ------------------------------------------------------------------ gates and wiring


def test_the_gates_are_accepted_and_off_by_default() -> None:
    gates = parse_feature_gates("")
    assert (gates.mig, gates.accelerator) == (False, False)
    gates = parse_feature_gates("enableMIG=true,enableAccelerator=true")
    assert (gates.mig, gates.accelerator) == (True, True)
    assert parse_feature_gates("enableMIG=false").mig is False


def test_the_gates_and_the_backend_reach_the_webhook() -> None:
    gates = parse_feature_gates("enableMIG=true")
    opts = webhook_validation_options(OperatorOptions(feature_gates=gates))
    assert (opts.mig, opts.accelerator, opts.auto_provisioning) == (True, False, False)  # byo default
    claims = OperatorOptions(provisioner=ProvisionerOptions(name="gpu-provisioner"))
    assert webhook_validation_options(claims).auto_provisioning is True


# ------------------------------------------------------------------ sizing


def test_mig_profiles() -> None:
    assert "1g.10gb" in KNOWN_MIG_PROFILES and "7g.141gb" in KNOWN_MIG_PROFILES
    assert mig_profile_problem("3g.47gb") is None
    sku = mig_sku("3g.47gb", get_sku("Standard_NC40ads_H100_v5"))
    assert (sku.gpu_count, sku.gpu_memory_gib, sku.compute_capability) == (1, 47.0, 9.0)
    assert mig_sku("1g.10gb").compute_capability == 8.0  # every MIG GPU is Ampere or later
    a100x2 = get_sku("Standard_NC48ads_A100_v4")
    assert a100x2 is not None
    one = accelerator_sku(a100x2, 1)
    assert (one.gpu_count, one.gpu_memory_gib) == (1, a100x2.gpu_memory_gib)


# ------------------------------------------------------------------ plan and pod


def build(obj: Obj, node_sku_type: str | None = None) -> tuple[Any, Obj]:
    model = Workspace.model_validate(obj)
    plan = plan_for(model, node_sku=get_sku(node_sku_type) if node_sku_type else None)
    sts = build_statefulset(obj, model, plan, affinity={}, revision=1, options=WorkspaceControllerOptions())
    return plan, sts["spec"]["template"]["spec"]


def test_mig_pod_asks_for_one_slice_and_tolerates_its_taint() -> None:
    plan, pod = build(ws(MIG))
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"nvidia.com/mig-3g.40gb": "1"},
        "limits": {"nvidia.com/mig-3g.40gb": "1"},
    }
    assert {"key": "nvidia.com/mig-3g.40gb", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    cmd = container["command"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    assert (plan.node_count, plan.gpus_per_node, plan.gpu_resource) == (1, 1, "nvidia.com/mig-3g.40gb")


def test_mig_pod_does_not_plan_the_whole_sku() -> None:
    _, pod = build(ws(MIG, instanceType="Standard_NC48ads_A100_v4"))
    cmd = pod["containers"][0]["command"]
    assert "--instance-type" not in cmd and cmd[cmd.index("--tensor-parallel-size") + 1] == "1"


def test_a_model_larger_than_the_slice_fails_the_plan() -> None:
    with pytest.raises(PlanError, match=r"pick a larger MIG profile than 1g\.5gb") as exc:
        plan_for(
            Workspace.model_validate(
                ws({"mode": "mig", "profile": "1g.5gb"}, preset="qwen2.5-coder-32b-instruct")
            )
        )
    assert exc.value.reason == "PresetDoesNotFit"


def test_accelerator_pod_asks_for_count_gpus_of_the_node() -> None:
    # two A100s per node (from the node's labels); the partition takes one
    _, pod = build(ws(ACCEL), node_sku_type="Standard_NC48ads_A100_v4")
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    cmd = container["command"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    assert not any(t["key"].startswith("nvidia.com/mig-") for t in pod["tolerations"])
    # before any node's labels are read, the pod still asks for exactly the partition's GPUs
    _, pod = build(ws({"mode": "accelerator", "count": 2}))
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_accelerator_count_above_the_nodes_gpus_fails_the_plan() -> None:
    with pytest.raises(PlanError, match="at most 2") as exc:
        plan_for(
            Workspace.model_validate(ws({"mode": "accelerator", "count": 4})),
            node_sku=get_sku("Standard_NC48ads_A100_v4"),
        )
    assert exc.value.reason == "InvalidPartition"


def test_no_partition_keeps_the_whole_node() -> None:
    plan, pod = build(ws(None), node_sku_type="Standard_NC48ads_A100_v4")
    assert plan.gpu_resource == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": str(plan.gpus_per_node)}


# ------------------------------------------------------------------ BYO nodes


def request(resource: str, gpus: int = 1) -> NodeRequest:
    return NodeRequest(
        workspace="ws",
        namespace="default",
        uid="u-1",
        instance_type=None,
        count=1,
        label_selector={"matchLabels": {"apps": "part"}},
        gpus_per_node=gpus,
        gpu_resource=resource,
    )


def _ready(node: Obj) -> Obj:
    node = copy.deepcopy(node)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


def test_byo_counts_the_slice_a_mig_node_advertises() -> None:
    mig_node = _ready(
        gpu_node_manifest("mig", "Standard_NC48ads_A100_v4", {"apps": "part"}, mig_profile="3g.40gb")
    )
    whole = _ready(gpu_node_manifest("whole", "Standard_NC48ads_A100_v4", {"apps": "part"}))
    assert mig_node["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] == "4"  # 2 GPUs x 2 slices
    assert mig_node["status"]["allocatable"]["nvidia.com/gpu"] == "0"
    assert node_gpus(mig_node, "nvidia.com/mig-3g.40gb") == 4
    assert assess(request("nvidia.com/mig-3g.40gb"), [mig_node, whole]).nodes == ["mig"]
    status = assess(request("nvidia.com/mig-1g.10gb"), [mig_node, whole])
    assert not status.ready and "fewer than 1 nvidia.com/mig-1g.10gb" in status.message
    # a whole-GPU request does not land on the node whose GPUs are all sliced
    assert assess(request("nvidia.com/gpu"), [mig_node, whole]).nodes == ["whole"]


def test_gfd_count_label_stands_in_for_capacity() -> None:
    node = {"metadata": {"labels": {"nvidia.com/mig-1g.10gb.count": "7"}}, "status": {}}
    assert node_gpus(node, "nvidia.com/mig-1g.10gb") == 7
    assert node_gpus(node) == 0


# ------------------------------------------------------------------ InferenceSet


def inference_set(partition: Obj | None) -> Obj:
    resource: Obj = {} if partition is None else {"partition": partition}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "labelSelector": {"matchLabels": {"apps": "chat"}},
            "template": {"resource": resource, "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}},
        },
    }


def test_inferenceset_copies_the_partition_to_each_child() -> None:
    model = InferenceSet.model_validate(inference_set(MIG))
    assert child_workspace(model, 1)["resource"]["partition"] == MIG
    # a set without one hashes its template as before (no roll of existing children)
    plain = InferenceSet.model_validate(inference_set(None))
    assert "partition" not in child_workspace(plain, 0)["resource"]
    assert template_hash(plain) != template_hash(model)


def test_inferenceset_partition_follows_the_workspace_rules_and_is_immutable() -> None:
    assert validate_inferenceset(inference_set(MIG), None, BYO).errors == []
    [err] = validate_inferenceset(inference_set(MIG), None, ValidationOptions(auto_provisioning=False)).errors
    assert err.field == "spec.template.resource.partition.mode" and "enableMIG=true" in err.message
    changed = validate_inferenceset(inference_set(ACCEL), inference_set(MIG), BYO).errors
    assert [e.field for e in changed] == ["spec.template.resource.partition"]
    assert "is immutable" in changed[0].message
