"""Store: keys, indexes, managedFields stripping, copies, selectors."""

from __future__ import annotations

from typing import Any

import pytest

from kaito.runtime._internal.objects import deep_copy
from kaito.runtime._internal.selectors import match_labels
from kaito.runtime.store import Store, key_of


def cm(name: str, ns: str | None = "default", labels: dict[str, str] | None = None,
       owner: str | None = None, rv: str = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": rv, "uid": f"uid-{name}",
                            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}]}
    if ns:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = labels
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "X", "name": "o", "uid": "not-controller"},
            {"apiVersion": "v1", "kind": "X", "name": "o", "uid": owner, "controller": True},
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def test_keys() -> None:
    assert key_of(cm("a")) == "default/a"
    assert key_of(cm("n", ns=None)) == "n"


def test_strips_managed_fields_by_default_and_opt_out() -> None:
    s = Store()
    s.add(cm("a"))
    assert "managedFields" not in s.get("default/a")["metadata"]  # type: ignore[index]
    keep = Store(strip_managed_fields=False)
    keep.add(cm("a"))
    assert "managedFields" in keep.get("default/a")["metadata"]  # type: ignore[index]


def test_strings_are_shared_between_objects_parsed_apart() -> None:
    """Two objects parsed by separate json.loads calls (as watch events are) end up holding the
    same key and short-value strings; every dict and list keeps its identity, and a long value
    stays the object's own."""
    import json

    long_value = "x" * 65
    doc = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "args": ["--port", "5000"], "image": long_value}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    first, second = json.loads(doc), json.loads(doc)
    second["metadata"]["name"] = "q"
    spec, containers = second["spec"], second["spec"]["containers"]
    store = Store()
    store.update(first)
    store.update(second)
    assert second["spec"] is spec and second["spec"]["containers"] is containers  # in place
    assert list(second) == ["apiVersion", "kind", "metadata", "spec", "status"]  # order kept
    key_a = next(k for k in first["status"]["conditions"][0] if k == "status")
    key_b = next(k for k in second["status"]["conditions"][0] if k == "status")
    assert key_a is key_b
    assert first["status"]["conditions"][0]["status"] is second["status"]["conditions"][0]["status"]
    assert first["spec"]["containers"][0]["args"][1] is second["spec"]["containers"][0]["args"][1]
    assert first["metadata"]["labels"]["app"] is second["metadata"]["labels"]["app"]
    assert first["spec"]["containers"][0]["image"] is not second["spec"]["containers"][0]["image"]
    assert first == json.loads(doc)
    assert store.get("ns/q") == dict(json.loads(doc), metadata=second["metadata"])

    plain = Store(share_strings=False)
    a, b = json.loads(doc), json.loads(doc)
    b["metadata"]["name"] = "q"
    plain.update(a)
    plain.update(b)
    assert a["status"]["conditions"][0]["status"] is not b["status"]["conditions"][0]["status"]
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]  # interned either way


def test_shared_view_vs_copy() -> None:
    s = Store()
    s.add(cm("a"))
    view = s.get("default/a")
    assert view is s.get("default/a")
    copy = s.get("default/a", copy=True)
    assert copy == view and copy is not view
    copy["data"]["k"] = "changed"  # type: ignore[index]
    assert s.get("default/a")["data"]["k"] == "v"  # type: ignore[index]
    assert s.list(copy=True)[0] is not view


def test_update_returns_old_and_delete() -> None:
    s = Store()
    assert s.update(cm("a", rv="1")) is None
    old = s.update(cm("a", rv="2"))
    assert old is not None and old["metadata"]["resourceVersion"] == "1"
    assert len(s) == 1
    assert s.delete(cm("a")) is not None
    assert s.get("default/a") is None
    assert s.delete(cm("a")) is None


def controller_uid(obj: dict[str, Any]) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or () if r.get("controller")]


def test_namespace_and_custom_indexes_follow_updates() -> None:
    s = Store(indexers={"owner": controller_uid})
    s.add(cm("a", ns="n1", owner="o1"))
    s.add(cm("b", ns="n1"))
    s.add(cm("c", ns="n2", owner="o1"))
    assert {o["metadata"]["name"] for o in s.by_index("namespace", "n1")} == {"a", "b"}
    assert {o["metadata"]["name"] for o in s.by_index("owner", "o1")} == {"a", "c"}
    assert s.by_index("owner", "not-controller") == []
    s.update(cm("a", ns="n1", owner="o2"))
    assert {o["metadata"]["name"] for o in s.by_index("owner", "o1")} == {"c"}
    assert [o["metadata"]["name"] for o in s.by_index("owner", "o2")] == ["a"]
    s.delete(cm("c", ns="n2"))
    assert s.by_index("owner", "o1") == []
    assert s.list("n2") == []
    assert {o["metadata"]["name"] for o in s.list("n1")} == {"a", "b"}


def test_custom_indexer_added_late_indexes_existing() -> None:
    s = Store()
    s.add(cm("a", labels={"app": "x"}))
    s.add(cm("b", labels={"app": "y"}))
    s.add_indexer("app", lambda o: [o["metadata"].get("labels", {}).get("app", "")])
    assert [o["metadata"]["name"] for o in s.by_index("app", "x")] == ["a"]
    s.add(cm("c", labels={"app": "x"}))
    assert {o["metadata"]["name"] for o in s.by_index("app", "x")} == {"a", "c"}
    with pytest.raises(KeyError):
        s.by_index("nope", "x")


def test_an_index_function_that_raises_skips_that_object_only() -> None:
    """Issue 8, bug 4: a raising index function used to fail ``update`` (and so the informer's
    event, forever), leaving the store stale. Now the object is stored and left out of that index."""

    def picky(obj: dict[str, Any]) -> list[str]:
        if obj["metadata"]["name"] == "bad":
            raise KeyError("app")
        return [obj["metadata"]["labels"]["app"]]

    s = Store(indexers={"app": picky})
    s.add(cm("good", labels={"app": "x"}))
    s.add(cm("bad"))  # must not raise
    s.add(cm("later", labels={"app": "x"}))
    assert s.get("default/bad") is not None
    assert sorted(o["metadata"]["name"] for o in s.by_index("app", "x")) == ["good", "later"]
    assert s.delete(cm("bad")) is not None
    s.add_indexer("late", picky)  # a late index over existing objects tolerates it too
    assert len(s.by_index("late", "x")) == 2


def test_removal_uses_the_index_values_stored_with_the_key() -> None:
    """Issue 8, bug 4: a cached object mutated in place (shared views are easy to mutate by
    mistake) must not leave its key behind in the index it was filed under."""
    s = Store(indexers={"app": lambda o: [o["metadata"].get("labels", {}).get("app", "")]})
    s.add(cm("a", labels={"app": "x"}))
    s.get("default/a")["metadata"]["labels"]["app"] = "mutated"  # type: ignore[index]
    s.update(cm("a", labels={"app": "y"}, rv="2"))
    assert s.by_index("app", "x") == []
    assert [o["metadata"]["name"] for o in s.by_index("app", "y")] == ["a"]
    s.get("default/a")["metadata"]["labels"]["app"] = "again"  # type: ignore[index]
    s.delete_key("default/a")
    assert s.by_index("app", "y") == []


def test_list_with_label_selector() -> None:
    s = Store()
    s.add(cm("a", labels={"app": "x", "tier": "web"}))
    s.add(cm("b", labels={"app": "y"}))
    s.add(cm("c"))
    names = lambda sel: sorted(o["metadata"]["name"] for o in s.list(label_selector=sel))  # noqa: E731
    assert names("app=x") == ["a"]
    assert names({"app": "y"}) == ["b"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x, y)") == ["a", "b"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("app=x,tier=web") == ["a"]


def test_match_labels_edge() -> None:
    assert match_labels(None, None)
    assert not match_labels(None, "a=b")
    assert match_labels({"a": "b"}, "a==b")


def test_deep_copy() -> None:
    o = {"a": [1, {"b": [2]}], "c": {"d": "e"}}
    c = deep_copy(o)
    assert c == o
    c["a"][1]["b"].append(3)
    assert o["a"][1]["b"] == [2]


# Pure helpers the cache and client share: kind identity, URL paths, error typing.


def test_gvk_and_paths() -> None:
    from kaito.runtime.resources import GVK, ResourceInfo

    assert GVK.from_api_version("apps/v1", "Deployment") == GVK("apps", "v1", "Deployment")
    assert GVK.from_api_version("v1", "Pod").group == ""
    assert GVK.of({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace"}).api_version == "kaito.sh/v1beta1"
    with pytest.raises(ValueError):
        GVK.of({"kind": "X"})
    pods = ResourceInfo(GVK("", "v1", "Pod"), "pods", True)
    assert pods.path() == "/api/v1/pods"
    assert pods.path("ns") == "/api/v1/namespaces/ns/pods"
    assert pods.path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    nodes = ResourceInfo(GVK("", "v1", "Node"), "nodes", False)
    assert nodes.path("ignored", "n1") == "/api/v1/nodes/n1"
    ws = ResourceInfo(GVK("kaito.sh", "v1beta1", "Workspace"), "workspaces", True)
    assert ws.path("a b", "c/d") == "/apis/kaito.sh/v1beta1/namespaces/a%20b/workspaces/c%2Fd"
    with pytest.raises(ValueError):
        pods.path("ns", subresource="status")


def test_error_typing() -> None:
    from kaito.runtime import errors as e

    assert isinstance(e.api_error_from_response(404, {"reason": "NotFound"}), e.NotFoundError)
    assert isinstance(e.api_error_from_response(409, {"reason": "Conflict"}), e.ConflictError)
    assert isinstance(e.api_error_from_response(409, {"reason": "AlreadyExists"}), e.AlreadyExistsError)
    assert isinstance(e.api_error_from_response(410, {"reason": "Expired"}), e.GoneError)
    assert isinstance(e.api_error_from_response(403, None), e.ForbiddenError)
    assert isinstance(e.api_error_from_response(422, {}), e.InvalidError)
    assert isinstance(e.api_error_from_response(429, {}), e.TooManyRequestsError)
    err = e.api_error_from_response(500, {"reason": "InternalError", "message": "boom"})
    assert type(err) is e.ApiError and err.status == 500 and err.message == "boom"
