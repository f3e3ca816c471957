"""Drift detection of owned objects (pure functions; the cluster tests cover the wiring)."""

from __future__ import annotations

import copy
from typing import Any

from kaito.runtime import Accepted, RecentWrites, drift, revert_patch, stamp

SVC: dict[str, Any] = stamp(
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "ws",
            "namespace": "default",
            "labels": {"kaito.sh/workspace": "ws"},
            "ownerReferences": [{"kind": "Workspace", "name": "ws", "uid": "u1", "controller": True}],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"kaito.sh/workspace": "ws"},
            "ports": [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}],
            "template": {"volumes": [{"name": "dshm", "emptyDir": {}}]},
        },
    }
)


def stored() -> dict[str, Any]:
    """What the apiserver gives back: our fields plus defaults, status and others' fields."""
    obj = copy.deepcopy(SVC)
    del obj["apiVersion"], obj["kind"]
    obj["metadata"].update(uid="s1", resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z")
    obj["metadata"]["labels"]["team"] = "someone-else"
    obj["metadata"]["ownerReferences"].append({"kind": "Other", "name": "x", "uid": "u2"})
    obj["spec"].update(clusterIP="10.0.0.7", clusterIPs=["10.0.0.7"], sessionAffinity="None")
    obj["spec"]["template"]["volumes"][0]["emptyDir"] = {"medium": ""}
    obj["status"] = {"loadBalancer": {}}
    return obj


def test_defaults_and_other_fields_are_no_drift() -> None:
    assert not drift(SVC, stored())


def test_a_changed_removed_or_added_field_we_set_is_drift() -> None:
    edited = stored()
    edited["spec"]["ports"][0]["port"] = 8080
    assert drift(SVC, edited)
    edited = stored()
    del edited["spec"]["selector"]
    assert drift(SVC, edited)
    edited = stored()
    edited["spec"]["ports"].append({"name": "extra", "port": 81, "targetPort": 81, "protocol": "TCP"})
    assert drift(SVC, edited)
    edited = stored()
    edited["spec"]["ports"][0]["targetPort"] = "5000"  # same text, another type
    assert drift(SVC, edited)


def test_revert_patch_sets_our_fields_and_leaves_owner_refs_alone() -> None:
    patch = revert_patch(SVC)
    assert "ownerReferences" not in patch["metadata"] and "apiVersion" not in patch
    assert patch["spec"]["ports"] == SVC["spec"]["ports"]
    patch["spec"]["ports"][0]["port"] = 1  # a copy: the desired manifest is untouched
    assert SVC["spec"]["ports"][0]["port"] == 80


def test_accepted_covers_a_value_the_apiserver_rewrites() -> None:
    desired = copy.deepcopy(SVC)
    desired["spec"]["resources"] = {"cpu": 0.5}
    answered = stored()
    answered["spec"]["resources"] = {"cpu": "500m"}  # the apiserver's canonical form
    accepted = Accepted()
    assert not accepted.converged("Service", desired, answered)  # never written by us: drift
    accepted.record("Service", desired, answered)
    assert accepted.converged("Service", desired, answered)
    later = copy.deepcopy(answered)
    later["metadata"]["resourceVersion"] = "9"  # others' changes do not matter
    assert accepted.converged("Service", desired, later)
    later["spec"]["ports"][0]["port"] = 8080  # a hand edit still does
    assert not accepted.converged("Service", desired, later)
    accepted.forget("Service", "default", "ws")
    assert len(accepted) == 0


class _Informer:
    """Just what RecentWrites uses of an informer: its handlers and its store's version."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []
        self.store = type("S", (), {"resource_version": ""})()

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)


class _Cache:
    def __init__(self) -> None:
        self.objs: dict[str, dict[str, Any]] = {}

    def get(self, gvk: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        return self.objs.get(name)


def _obj(name: str, rv: str, uid: str = "u") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": uid}}


def test_recent_writes_are_dropped_by_the_informers_events() -> None:
    """Issue 20, bug 9: an entry goes once the tracked informer shows the write or its deletion,
    without anyone reading it again."""
    inf = _Informer()
    recent = RecentWrites(_Cache())
    recent.track("SVC", inf)
    (h,) = inf.handlers
    recent.remember("SVC", _obj("a", "10"))
    recent.remember("SVC", _obj("b", "12"))
    recent.remember("SVC", _obj("c", "14", uid="c1"))
    h.on_update(_obj("a", "9"), _obj("a", "9"))  # an older state: still needed
    assert len(recent) == 3
    h.on_add(_obj("a", "10"))
    h.on_update(_obj("b", "11"), _obj("b", "13"))
    assert len(recent) == 1
    h.on_delete(_obj("c", "13", uid="c1"))  # found gone by a relist: last known state is older
    assert len(recent) == 0
    recent.remember("SVC", _obj("d", "20", uid="d2"))
    h.on_delete(_obj("d", "19", uid="d1"))  # an earlier object of that name: ours stays
    assert len(recent) == 1
    inf.store.resource_version = "25"  # the event came before our answer: nothing to keep
    recent.remember("SVC", _obj("e", "24"))
    assert len(recent) == 1
