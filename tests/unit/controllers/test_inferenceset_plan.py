"""The InferenceSet controller's pure parts: which Workspaces to create, delete and roll next,
the status aggregated from them, and the controller's own unseen writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito.api.inferenceset import ANNOTATION_TEMPLATE_HASH, CONDITION_READY, InferenceSet
from kaito.api.inferenceset.child import child_workspace, template_hash
from kaito.controllers.inferenceset.pending import Pending
from kaito.controllers.inferenceset.plan import Child, child_of, plan, replace_reason, workspace_ready
from kaito.controllers.inferenceset.status import desired_status


def make_set(replicas: int = 3, preset: str = "phi-3-mini-4k-instruct", **spec: Any) -> InferenceSet:
    return InferenceSet.model_validate(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "InferenceSet",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "generation": 4},
            "spec": {
                "replicas": replicas,
                "labelSelector": {"matchLabels": {"apps": "x"}},
                "template": {
                    "resource": {"instanceType": "standard_nc6s_v3"},
                    "inference": {"preset": {"name": preset}},
                },
                **spec,
            },
        }
    )


def ws(
    model: InferenceSet, index: int, *, ready: bool = True, current: bool = True, gen: int = 1
) -> dict[str, Any]:
    obj = child_workspace(model, index, uid="u1")
    if not current:
        obj["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] = "old"
    obj["metadata"].update(uid=f"w{index}", generation=gen, resourceVersion="10")
    obj["status"] = {
        "observedGeneration": gen,
        "conditions": [
            {"type": "WorkspaceReady", "status": "True" if ready else "False", "reason": "R", "message": "m"}
        ],
    }
    return obj


def kids(model: InferenceSet, objs: list[dict[str, Any]]) -> list[Child]:
    return [child_of("s", o) for o in objs]


def every(model: InferenceSet) -> dict[int, dict[str, Any]]:
    return {i: child_workspace(model, i, uid="u1") for i in range(model.spec.replicas)}


def test_child_is_the_template_with_the_sets_labels_owner_and_canonical_sku() -> None:
    model = make_set()
    child = child_workspace(model, 2, uid="u1")
    assert child["metadata"]["name"] == "s-2"
    assert child["metadata"]["labels"] == {
        "inferenceset.kaito.sh/created-by": "s",
        "inferenceset.kaito.sh/index": "2",
    }
    assert child["metadata"]["ownerReferences"][0]["controller"] is True
    assert child["resource"] == {
        "labelSelector": {"matchLabels": {"apps": "x"}},
        "instanceType": "Standard_NC6s_v3",
    }
    assert child["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] == template_hash(model)
    # Replicas are not part of the template: scaling never rolls.
    assert template_hash(make_set(replicas=7)) == template_hash(model)
    assert template_hash(make_set(preset="phi-3-mini-128k-instruct")) != template_hash(model)


def test_scale_up_creates_the_missing_indexes() -> None:
    model = make_set(3)
    step = plan(model, kids(model, [ws(model, 1)]), template_hash(model), every(model))
    assert step.create == [0, 2] and not step.delete and not step.roll


def test_scale_down_deletes_highest_first_and_strays() -> None:
    model = make_set(1)
    objs = [ws(model, i) for i in range(4)]
    stray = ws(model, 0)
    stray["metadata"]["name"] = "s-abcde"
    step = plan(model, kids(model, [*objs, stray]), template_hash(model), every(model))
    assert step.delete == ["s-3", "s-2", "s-1", "s-abcde"]
    assert not step.create and not step.roll


def test_roll_takes_one_ready_workspace_at_a_time_highest_first() -> None:
    old, new = make_set(3), make_set(3, preset="phi-3-mini-128k-instruct")
    objs = [ws(old, i) for i in range(3)]
    want = template_hash(new)
    desired = {i: child_workspace(new, i, uid="u1") for i in range(3)}
    step = plan(new, kids(new, objs), want, desired)
    assert [(r.name, r.kind) for r in step.roll] == [("s-2", "replace")]
    assert step.roll[0].reason == "inference.preset changed"
    assert step.waiting == ["s-1", "s-0"] and "maxUnavailable 1" in step.wait_reason
    # While s-2 is being replaced (deleting, then missing, then not ready), nothing else rolls.
    deleting = copy.deepcopy(objs)
    deleting[2]["metadata"]["deletionTimestamp"] = "now"
    assert not plan(new, kids(new, deleting), want, desired).roll
    assert not plan(new, kids(new, objs[:2]), want, desired).roll
    fresh = [*objs[:2], ws(new, 2, ready=False)]
    assert not plan(new, kids(new, fresh), want, desired).roll
    # Once it is ready the next one goes.
    done = [*objs[:2], ws(new, 2)]
    assert [r.name for r in plan(new, kids(new, done), want, desired).roll] == ["s-1"]


def test_unready_outdated_workspaces_roll_at_once_and_max_unavailable_widens() -> None:
    old = make_set(3)
    new = make_set(
        3, preset="phi-3-mini-128k-instruct", updateStrategy={"rollingUpdate": {"maxUnavailable": 2}}
    )
    desired = {i: child_workspace(new, i, uid="u1") for i in range(3)}
    objs = [ws(old, 0, ready=False), ws(old, 1), ws(old, 2)]
    step = plan(new, kids(new, objs), template_hash(new), desired)
    assert [r.name for r in step.roll] == ["s-0", "s-2"]  # the broken one is free; one more fits


def test_on_delete_never_rolls() -> None:
    old = make_set(2)
    new = make_set(2, preset="phi-3-mini-128k-instruct", updateStrategy={"type": "OnDelete"})
    step = plan(new, kids(new, [ws(old, 0), ws(old, 1)]), template_hash(new), every(new))
    assert not step.roll and not step.waiting


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"inference": {"preset": {"name": "phi-3-mini-128k-instruct"}}}, "inference.preset changed"),
        ({"resource": {"instanceType": "Standard_NC24ads_A100_v4"}}, "resource.instanceType changed"),
        ({"resource": {"instanceType": "STANDARD_NC6S_V3"}}, ""),  # same SKU, other spelling
        ({"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "c"}}, ""),
        ({"inference": {"template": {"spec": {}}}}, "inference.preset changed"),
    ],
)
def test_replace_only_when_a_frozen_workspace_field_changes(change: dict[str, Any], reason: str) -> None:
    current = child_workspace(make_set(), 0)
    desired = copy.deepcopy(current)
    for key, value in change.items():
        desired[key] = {**desired[key], **value} if key == "resource" else value
    assert replace_reason(current, desired) == reason


def test_ready_means_ready_for_the_current_generation() -> None:
    model = make_set()
    obj = ws(model, 0)
    assert workspace_ready(obj) == (True, "")
    obj["metadata"]["generation"] = 2  # spec updated in place; its controller has not looked yet
    assert workspace_ready(obj)[0] is False
    obj["status"]["observedGeneration"] = 2
    obj["status"]["conditions"][0]["observedGeneration"] = 1
    assert workspace_ready(obj) == (False, "its WorkspaceReady condition describes an older spec")


def test_status_counts_and_condition() -> None:
    model = make_set(2)
    set_obj = model.to_manifest()
    want = template_hash(model)
    ready = kids(model, [ws(model, 0), ws(model, 1)])
    st = desired_status(set_obj, model, ready, want, plan(model, ready, want, every(model)))["status"]
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"], st["observedGeneration"]) == (
        2,
        2,
        2,
        4,
    )
    assert st["selector"] == "inferenceset.kaito.sh/created-by=s"
    cond = st["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == (CONDITION_READY, "True", "InferenceSetReady")

    one = kids(model, [ws(model, 0), ws(model, 1, ready=False)])
    cond = desired_status(set_obj, model, one, want, plan(model, one, want, every(model)))["status"][
        "conditions"
    ][0]
    assert (cond["status"], cond["reason"]) == ("False", "WorkspacesNotReady")
    assert cond["message"] == "1 of 2 Workspaces ready; s-1: R: m"

    up = kids(model, [ws(model, 0)])
    cond = desired_status(set_obj, model, up, want, plan(model, up, want, every(model)))["status"][
        "conditions"
    ][0]
    assert cond["reason"] == "ScalingUp"

    stale = kids(model, [ws(model, 0), ws(model, 1, current=False)])
    cond = desired_status(set_obj, model, stale, want, plan(model, stale, want, every(model)))["status"][
        "conditions"
    ][0]
    assert (
        cond["reason"] == "RollingUpdate"
        and "1 Workspace(s) still on the previous template" in cond["message"]
    )

    zero = make_set(0)
    st = desired_status(zero.to_manifest(), zero, [], want, plan(zero, [], want, every(zero)))["status"]
    assert st["replicas"] == 0 and st["conditions"][0]["status"] == "True"


def test_pending_writes_stand_in_until_the_cache_shows_them() -> None:
    clock = [0.0]
    pending = Pending(ttl=10, clock=lambda: clock[0])
    model = make_set()
    cached = {"s-0": ws(model, 0)}
    written = copy.deepcopy(cached["s-0"])
    written["metadata"]["resourceVersion"] = "12"
    written["metadata"]["generation"] = 2
    pending.applied("ns", written)
    assert pending.view("ns", cached)["s-0"] is written
    assert pending.view("other", cached)["s-0"] is cached["s-0"]
    caught_up = {"s-0": {**written, "metadata": {**written["metadata"], "resourceVersion": "13"}}}
    assert pending.view("ns", caught_up)["s-0"] is caught_up["s-0"] and len(pending) == 0

    pending.deleted("ns", "s-0", "w0")
    view = pending.view("ns", cached)
    assert view["s-0"]["metadata"]["deletionTimestamp"] and child_of("s", view["s-0"]).deleting
    assert "deletionTimestamp" not in cached["s-0"]["metadata"]  # the cache's object is untouched
    clock[0] = 11.0
    assert "deletionTimestamp" not in pending.view("ns", cached)["s-0"]["metadata"] and len(pending) == 0
